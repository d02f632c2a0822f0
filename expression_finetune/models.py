"""The expression encoder: the stage-1 ViT encoder, mean-pooled, projected to a 16-d unit vector.

    model = build_expression_vit("mae_vit_tiny_patch8_64", emb_dim=16, drop_path=0.1)
    report = load_pretrained(model, "outputs/demo/mae/checkpoint-last.pth")
    feat, emb = model(imgs)        # (N, D) pooled feature, (N, 16) L2-normalised embedding

Parameter names are the official MAE / timm ViT names (`cls_token`, `pos_embed`, `patch_embed.*`,
`blocks.N.*`), so stage-1 and public MAE / MAE-Face files load directly. As in MAE fine-tuning with
mean pooling, `fc_norm` replaces the final `norm`: a checkpoint's `norm.*` (and decoder) tensors are
expected to be unused, and `fc_norm.*` / `head.*` are new.

The official stage-2 checkpoint (`epoch_90_acc_0.8736.pth`) is the raw state dict of the official
`exp_emb_code/model/mae_pipeline.py` `Pipeline`: its timm ViT sits under `main.` (`module.main.` when
saved from DataParallel), with the same names as ours, `fc_norm` and a 16-d `head`, and no `norm`:

    model, report = load_official_stage2("epoch_90_acc_0.8736.pth")   # report: exact missing / unexpected keys
    python train.py configs/mae_train_expemb.yaml mode=eval pretrained=epoch_90_acc_0.8736.pth test_csv=...
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from common.checkpoint import clean_state_dict, load_checkpoint
from mae_pretrain.models_mae import MAE_PRESETS, Block, MAEConfig, make_patch_embed
from mae_pretrain.pos_embed import get_2d_sincos_pos_embed, interpolate_pos_embed

NEW_KEYS = ("fc_norm.", "head.")  # trained from scratch in stage 2
OFFICIAL_STAGE2_PREFIX = "main."  # the official Pipeline's ViT attribute (DataParallel's module. is stripped first)
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


def official_stage2_keys(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """The key map of an official stage-2 state dict (`main.X` / `module.main.X` -> `X`); None when
    `sd` is not one (not every key under `main.`)."""
    sd = clean_state_dict(sd)  # strips module. (DataParallel / DDP) and _orig_mod.
    if not sd or not all(k.startswith(OFFICIAL_STAGE2_PREFIX) for k in sd):
        return None
    return {k[len(OFFICIAL_STAGE2_PREFIX):]: v for k, v in sd.items()}


def load_pretrained(model: ExpressionViT, source: str | Path | Mapping,
                    name: str | None = None) -> dict[str, list[str]]:
    """Initialise the model from a checkpoint file or state dict: stage 1 (ours, or an official MAE /
    MAE-Face file) or stage 2 (ours, or an official `epoch_*_acc_*.pth`, see the module docstring).

    Wrappers (`{'model': ...}`), `module.` and the official stage-2 `main.` prefixes are handled, the
    position embedding is resized to the model's patch grid. Returns the key report
    `{'missing_encoder': [...], 'new': [...], 'unused': [...], 'unexpected': [...]}`; a correct file
    leaves `missing_encoder` and `unexpected` empty (and a stage-2 file leaves `new` empty too).

    `name` names the source in messages (default: its path, or 'state dict').

    Raises:
        ValueError: no encoder key matched, or shapes disagree (wrong `model` preset for this file).
    """
    path = name or ("state dict" if isinstance(source, Mapping) else str(source))
    if not isinstance(source, Mapping) and not Path(source).is_file():
        raise FileNotFoundError(f"pretrained checkpoint '{source}' does not exist: run stage 1 first (demo: python "
                                "pretrain_mae.py configs/demo/mae_pretrain.yaml) or set pretrained=null")
    raw = source if isinstance(source, Mapping) else load_checkpoint(source)
    sd = official_stage2_keys(raw) or clean_state_dict(raw)
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


def load_official_stage2(source: str | Path | Mapping,
                         name: str = "mae_vit_base_patch16") -> tuple[ExpressionViT, dict[str, list[str]]]:
    """An `ExpressionViT` (preset `name`, embedding size from the file's head) holding an official
    stage-2 checkpoint (see the module docstring).

    Returns (model in eval mode, `{'missing': [...], 'unexpected': [...]}`): the exact keys of the model
    that the file lacks and of the file that the model lacks (both empty for the official ViT-B file).

    Raises:
        ValueError: not an official stage-2 state dict (keys not under `main.`), or shapes disagree.
    """
    raw = source if isinstance(source, Mapping) else load_checkpoint(source)
    sd = official_stage2_keys(raw)
    if sd is None or "head.weight" not in sd:
        raise ValueError(f"{'state dict' if isinstance(source, Mapping) else source}: not an official stage-2 "
                         f"checkpoint (every key under 'main.' or 'module.main.', with main.head.weight); keys look "
                         f"like {list(raw)[:4]}. For our own run folders use load_encoder / pretrained=")
    model = build_expression_vit(name, emb_dim=sd["head.weight"].shape[0])
    rep = load_pretrained(model, sd)
    return model.eval(), {"missing": rep["missing_encoder"] + rep["new"],
                          "unexpected": rep["unused"] + rep["unexpected"]}
