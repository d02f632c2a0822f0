"""The expression encoder: the stage-1 ViT encoder, mean-pooled, projected to a 16-d unit vector.

    model = build_expression_vit("mae_vit_tiny_patch8_64", emb_dim=16, drop_path=0.1)
    report = load_pretrained(model, "outputs/demo/mae/checkpoint-last.pth")
    feat, emb = model(imgs)        # (N, D) pooled feature, (N, 16) L2-normalised embedding

Parameter names are the official MAE / timm ViT names (`cls_token`, `pos_embed`, `patch_embed.*`,
`blocks.N.*`), so stage-1 and public MAE / MAE-Face files load directly. As in MAE fine-tuning with
mean pooling, `fc_norm` replaces the final `norm`: a checkpoint's `norm.*` (and decoder) tensors are
expected to be unused, and `fc_norm.*` / `head.*` are new.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from common.checkpoint import clean_state_dict, load_checkpoint
from mae_pretrain.models_mae import MAE_PRESETS, Block, MAEConfig, make_patch_embed
from mae_pretrain.pos_embed import get_2d_sincos_pos_embed, interpolate_pos_embed

NEW_KEYS = ("fc_norm.", "head.")  # trained from scratch in stage 2
UNUSED_KEYS = ("norm.", "decoder_", "mask_token")  # stage-1 tensors that mean pooling does not use


class ExpressionViT(nn.Module):
    """ViT encoder -> mean of patch tokens -> `fc_norm` -> Linear -> L2 normalise.

    Args:
        cfg: the stage-1 architecture (`MAEConfig`; decoder fields are ignored).
        emb_dim: embedding size (16 in the paper).
        drop_path: stochastic-depth rate of the last block (linearly increasing from 0).
    """

    def __init__(self, cfg: MAEConfig, emb_dim: int = 16, drop_path: float = 0.0):
        super().__init__()
        self.cfg, D = cfg, cfg.embed_dim
        self.feature_dim, self.emb_dim, self.image_size = D, emb_dim, cfg.img_size
        self.patch_embed = make_patch_embed(cfg)
        L = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        self.pos_embed = nn.Parameter(torch.zeros(1, L + 1, D))  # sin-cos init; trainable as in MAE fine-tuning
        rates = torch.linspace(0, drop_path, cfg.depth).tolist()
        self.blocks = nn.ModuleList(Block(D, cfg.num_heads, cfg.mlp_ratio, drop_path=r) for r in rates)
        self.fc_norm = nn.LayerNorm(D, eps=1e-6)
        self.head = nn.Linear(D, emb_dim)
        self._init_weights()

    def _init_weights(self) -> None:
        table = get_2d_sincos_pos_embed(self.pos_embed.shape[-1], self.patch_embed.grid_size[0], cls_token=True)
        self.pos_embed.data.copy_(torch.from_numpy(table).float().unsqueeze(0))
        w = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_features(self, imgs: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) normalised images -> (N, D) pooled feature (after `fc_norm`)."""
        x = self.patch_embed(imgs) + self.pos_embed[:, 1:, :]  # (N, L, D)
        cls = (self.cls_token + self.pos_embed[:, :1, :]).expand(x.shape[0], -1, -1)  # (N, 1, D)
        x = torch.cat([cls, x], dim=1)  # (N, 1 + L, D)
        for blk in self.blocks:
            x = blk(x)
        return self.fc_norm(x[:, 1:, :].mean(dim=1))  # mean over patch tokens: (N, 1 + L, D) -> (N, D)

    def embed(self, feat: torch.Tensor) -> torch.Tensor:
        """(N, D) pooled feature -> (N, emb_dim) unit vectors, in fp32 even under bf16/fp16 autocast
        (image-to-image differences of the projection are small next to its mean at the start)."""
        with torch.autocast(feat.device.type, enabled=False):
            return F.normalize(self.head(feat.float()), dim=-1)

    def forward(self, imgs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat = self.forward_features(imgs)
        return feat, self.embed(feat)


def build_expression_vit(name: str, emb_dim: int = 16, drop_path: float = 0.0, **overrides) -> ExpressionViT:
    """An `ExpressionViT` from a stage-1 preset name (`mae_pretrain.MAE_PRESETS`) plus `MAEConfig` overrides."""
    if name not in MAE_PRESETS:
        raise ValueError(f"unknown model '{name}'; valid names: {', '.join(sorted(MAE_PRESETS))}")
    return ExpressionViT(replace(MAE_PRESETS[name], **overrides), emb_dim=emb_dim, drop_path=drop_path)


def load_pretrained(model: ExpressionViT, path: str | Path) -> dict[str, list[str]]:
    """Initialise the encoder from a stage-1 checkpoint (ours, or an official MAE / MAE-Face file).

    Wrappers (`{'model': ...}`) and `module.` prefixes are handled, the position embedding is resized
    to the model's patch grid. Returns the key report
    `{'missing_encoder': [...], 'new': [...], 'unused': [...], 'unexpected': [...]}`; a correct file
    leaves `missing_encoder` and `unexpected` empty.

    Raises:
        ValueError: no encoder key matched, or shapes disagree (wrong `model` preset for this file).
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"pretrained checkpoint '{path}' does not exist: run stage 1 first (demo: python "
                                "pretrain_mae.py configs/demo/mae_pretrain.yaml) or set pretrained=null")
    sd = clean_state_dict(load_checkpoint(path))
    own = model.state_dict()
    if not any(k in sd for k in own if not k.startswith(NEW_KEYS)):
        raise ValueError(f"{path}: no ViT encoder key (cls_token, blocks.0.attn.qkv.weight, ...) found; "
                         f"keys look like {list(sd)[:4]}. Is this a stage-1 / MAE checkpoint?")
    interpolate_pos_embed(model, sd, keys=("pos_embed",))
    bad = [f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
           for k, v in sd.items() if k in own and v.shape != own[k].shape]
    if bad:
        raise ValueError(f"{path}: shapes differ from the model (set `model` to the preset the file was "
                         f"trained with): " + "; ".join(bad[:3]))
    result = model.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=False)
    report = {"missing_encoder": [k for k in result.missing_keys if not k.startswith(NEW_KEYS)],
              "new": [k for k in result.missing_keys if k.startswith(NEW_KEYS)],
              "unused": [k for k in sd if k not in own and k.startswith(UNUSED_KEYS)],
              "unexpected": [k for k in sd if k not in own and not k.startswith(UNUSED_KEYS)]}
    print(f"[encoder] init from {path}: {len(own) - len(result.missing_keys)}/{len(own)} tensors loaded; "
          f"missing encoder keys: {len(report['missing_encoder'])} {report['missing_encoder'][:4]}; "
          f"new (fc_norm, head): {len(report['new'])}; unused as expected (final norm replaced by fc_norm, "
          f"decoder): {len(report['unused'])}; unexpected: {len(report['unexpected'])} {report['unexpected'][:4]}")
    return report
