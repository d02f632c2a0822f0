"""The stage-3b networks: the dynamic identity encoder and the multi-avatar rig decoder.

    ids = IdentityEncoder(ref_feats)              # ref_feats: (A, D) frozen encoder features of reference images
    dec = RigDecoder(feat_dim=D, id_dim=64, max_controls=26)
    model = Emb2Rig(ids, dec, n_controls=[12, 18, 26])
    rig = model(f_E, avatar)                      # (B, D), (B,) -> (B, 26) in [0, 1], 0 past the avatar's size

Identity injection ("dynamic"): an avatar is known to the decoder only through its reference
image. `e_id = MLP(f^E(reference))`, where f^E is the frozen expression encoder's pooled feature
of the avatar's reference render (the frozen renderer's output at the avatar's median training rig,
a stand-in for its neutral face; see `emb2rig.frozen.reference_images`). A new avatar therefore
needs only a reference image and a renderer: `model.add_avatar(ref_feat, n_controls)`.
The frozen renderer is conditioned by its own identity code for the avatar (a 'shared' stage-3a
renderer's learned e_id row, selected by avatar name): its weights were trained with that code,
so feeding it this decoder's e_id would render off-distribution images.

Output head: one shared trunk and one max-size linear head; each avatar reads the first
`n_controls` outputs. The padded outputs are multiplied by the avatar's control mask, so no loss
ever sees (or pushes) them.

Trunk (`DecoderConfig.block`): 'official' is the official decoder's (`models/CascadeNet.py` FCModel /
ResidualBlock of FreeAvatar): stem Linear-Norm-ReLU-Dropout, blocks `x + Drop(ReLU(Norm(W2 Drop(ReLU(Norm(W1 x))))))`
with nothing after the add, Xavier-uniform Linear weights and zero biases; 'ours' uses GELU, no dropout after
the second Linear, a GELU after the add and PyTorch's default init.
Both name their layers alike (`stem.0/1`, `blocks.i.body.0/1/4/5`, `head`); `emb2rig.official` maps an
official state dict onto them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from common.checkpoint import clean_state_dict, load_checkpoint


@dataclass
class DecoderConfig:
    """Decoder hyper-parameters (paper: 512 wide, 2 residual blocks, BatchNorm, dropout 0.1).

    Args:
        width: hidden width of the residual MLP.
        blocks: number of residual blocks.
        dropout: dropout inside each block.
        norm: 'batch' (paper) or 'layer' (for batch size 1 / per-sample inference in training mode).
        block: 'official' (ReLU, dropout after each Linear, `out = x + y`) or 'ours' (GELU, activation after the add).
        id_dim: size of the identity embedding e_id.
        id_hidden: hidden width of the identity MLP.
        mean_prior: add each avatar's mean training rig (as a logit, a fixed buffer) before the
            sigmoid, so an untrained decoder outputs the mean rig and learns deviations from it.
    """
    width: int = 512
    blocks: int = 2
    dropout: float = 0.1
    norm: str = "batch"
    block: str = "ours"
    id_dim: int = 64
    id_hidden: int = 256
    mean_prior: bool = True

    def __post_init__(self):
        if self.norm not in ("batch", "layer"):
            raise ValueError(f"'model.norm' must be 'batch' or 'layer', got '{self.norm}'")
        if self.block not in ("ours", "official"):
            raise ValueError(f"'model.block' must be 'ours' or 'official', got '{self.block}'")


def _norm(kind: str, width: int) -> nn.Module:
    return nn.BatchNorm1d(width) if kind == "batch" else nn.LayerNorm(width)


class ResBlock(nn.Module):
    """x + Dropout(Linear(act(Norm(Linear(x)))))-style residual block.

    Args:
        width: feature width (in = out).
        dropout: dropout probability.
        norm: 'batch' or 'layer'.
    """

    def __init__(self, width: int, dropout: float, norm: str):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(width, width), _norm(norm, width), nn.GELU(), nn.Dropout(dropout),
                                  nn.Linear(width, width), _norm(norm, width))
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, W) -> (B, W)
        return self.act(x + self.body(x))


class OfficialResBlock(nn.Module):
    """The official decoder's block: y = Drop(ReLU(Norm(Linear(x)))) twice, out = x + y (no activation after the add).

    Args:
        width: feature width (in = out).
        dropout: dropout probability (after each ReLU).
        norm: 'batch' (official) or 'layer'.
    """

    def __init__(self, width: int, dropout: float, norm: str):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(width, width), _norm(norm, width), nn.ReLU(), nn.Dropout(dropout),
                                  nn.Linear(width, width), _norm(norm, width), nn.ReLU(), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, W) -> (B, W)
        return x + self.body(x)


class RigDecoder(nn.Module):
    """[f^E, e_id] -> residual MLP -> sigmoid -> padded rig (the official decoder puts e_id first).

    Args:
        feat_dim: size of the encoder's pooled feature f^E (768 for ViT-B, 192 for the demo ViT).
        max_controls: the largest avatar's rig size (the head's output size).
        cfg: DecoderConfig.
    """

    def __init__(self, feat_dim: int, max_controls: int, cfg: DecoderConfig):
        super().__init__()
        stem = [nn.Linear(feat_dim + cfg.id_dim, cfg.width), _norm(cfg.norm, cfg.width)]
        stem += [nn.ReLU(), nn.Dropout(cfg.dropout)] if cfg.block == "official" else [nn.GELU()]
        self.stem = nn.Sequential(*stem)
        block = OfficialResBlock if cfg.block == "official" else ResBlock
        self.blocks = nn.Sequential(*[block(cfg.width, cfg.dropout, cfg.norm) for _ in range(cfg.blocks)])
        self.head = nn.Linear(cfg.width, max_controls)
        if cfg.block == "official":  # the official init (train_emb2rig_multichar.py L363, utils/common.py init_weights)
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    nn.init.xavier_uniform_(m.weight)
                    nn.init.zeros_(m.bias)

    def forward(self, feat: torch.Tensor, e_id: torch.Tensor, offset: torch.Tensor | None = None) -> torch.Tensor:
        """(B, D) features, (B, id_dim) identities, optional (B, max_controls) logit offsets -> (B, max_controls)."""
        x = torch.cat([feat, e_id], dim=1)  # (B, D) + (B, id_dim) -> (B, D + id_dim)
        logits = self.head(self.blocks(self.stem(x)))  # (B, max_controls)
        return torch.sigmoid(logits if offset is None else logits + offset)


class IdentityEncoder(nn.Module):
    """e_id from a reference image's frozen encoder feature through a small trainable MLP.

    Args:
        ref_feats: (A, D) pooled encoder features of each avatar's reference image (a buffer, saved
            in the checkpoint, so inference needs neither the reference images nor a re-encode).
        cfg: DecoderConfig (id_hidden, id_dim).
    """

    def __init__(self, ref_feats: torch.Tensor, cfg: DecoderConfig):
        super().__init__()
        self.register_buffer("ref_feats", ref_feats.detach().float().clone())  # (A, D)
        self.mlp = nn.Sequential(nn.LayerNorm(ref_feats.shape[1]), nn.Linear(ref_feats.shape[1], cfg.id_hidden),
                                 nn.GELU(), nn.Linear(cfg.id_hidden, cfg.id_dim))

    def forward(self, avatar: torch.Tensor) -> torch.Tensor:  # (B,) long -> (B, id_dim)
        return self.mlp(self.ref_feats[avatar])


class Emb2Rig(nn.Module):
    """The trainable part of stage 3b: identity encoder + rig decoder + per-avatar output masks.

    Args:
        ids: IdentityEncoder over the avatars' reference features.
        decoder: RigDecoder with `max_controls >= max(n_controls)`.
        n_controls: rig size of each avatar, in avatar-index order.
        prior: optional (A, max_controls) mean rigs in [0, 1]; stored as logits, added before the sigmoid.
    """

    def __init__(self, ids: IdentityEncoder, decoder: RigDecoder, n_controls: list[int],
                 prior: torch.Tensor | None = None):
        super().__init__()
        self.ids, self.decoder = ids, decoder
        self.max_controls = decoder.head.out_features
        if max(n_controls) > self.max_controls:
            raise ValueError(f"an avatar has {max(n_controls)} controls, the decoder head only {self.max_controls}")
        self.register_buffer("n_controls", torch.tensor(n_controls, dtype=torch.long))  # (A,)
        prior_logit = torch.zeros(len(n_controls), self.max_controls) if prior is None else \
            torch.logit(prior.float().clamp(0.02, 0.98))
        self.register_buffer("prior_logit", prior_logit)  # (A, max_controls); 0 = no prior (0.5)

    def control_mask(self, avatar: torch.Tensor) -> torch.Tensor:
        """(B,) avatar indices -> (B, max_controls) float mask of each avatar's real controls."""
        return (torch.arange(self.max_controls, device=avatar.device)[None] < self.n_controls[avatar][:, None]).float()

    def forward(self, feat: torch.Tensor, avatar: torch.Tensor) -> torch.Tensor:
        """(B, D) encoder features, (B,) avatar indices -> (B, max_controls) rigs, zero past each avatar's size."""
        rig = self.decoder(feat, self.ids(avatar), self.prior_logit[avatar])
        return rig * self.control_mask(avatar)

    @torch.no_grad()
    def add_avatar(self, ref_feat: torch.Tensor, n_controls: int, prior: torch.Tensor | None = None) -> int:
        """Register a new avatar from its reference feature (D,) (and optionally its mean rig
        (n_controls,)); returns its index. No training needed."""
        self.ids.ref_feats = torch.cat([self.ids.ref_feats, ref_feat.reshape(1, -1).to(self.ids.ref_feats)])
        self.n_controls = torch.cat([self.n_controls, self.n_controls.new_tensor([n_controls])])
        row = torch.zeros(1, self.max_controls, device=self.prior_logit.device)
        if prior is not None:
            row[0, :n_controls] = torch.logit(prior.float().clamp(0.02, 0.98))
        self.prior_logit = torch.cat([self.prior_logit, row])
        return len(self.n_controls) - 1


def build_model(ref_feats: torch.Tensor, n_controls: list[int], cfg: DecoderConfig,
                mean_rigs: list[torch.Tensor] | None = None) -> Emb2Rig:
    """Emb2Rig for avatars with reference features (A, D), rig sizes `n_controls` and, when
    `cfg.mean_prior`, their mean training rigs (each (n_a,))."""
    dec = RigDecoder(ref_feats.shape[1], max(n_controls), cfg)
    prior = None
    if cfg.mean_prior and mean_rigs is not None:
        prior = torch.full((len(n_controls), max(n_controls)), 0.5)
        for a, m in enumerate(mean_rigs):
            prior[a, :len(m)] = torch.as_tensor(m)
    return Emb2Rig(IdentityEncoder(ref_feats, cfg), dec, n_controls, prior)


def load_decoder(path: str | Path, device: str | torch.device = "cpu") -> tuple[Emb2Rig, dict]:
    """A trained stage-3b model (eval mode) and its metadata: 'avatars' (names), 'controls' (lists),
    'face_boxes' (each avatar's face box or None), 'crop_margin' (the face-crop margin it was trained
    with), 'encoder' / 'renderer' (the frozen checkpoints it was trained through, as configured) and
    'references' ({'rigs', 'images'} of each avatar's reference pose; None in checkpoints that predate it) and
    'avatars_root' (the avatar folders it was trained on, as configured)."""
    ck = load_checkpoint(path, map_location=device)
    if "avatars" not in ck or "config" not in ck:
        raise ValueError(f"'{path}' is not a stage-3b (emb2rig) checkpoint; use the run's checkpoint-best.pth")
    sd = clean_state_dict(ck)
    model = build_model(sd["ids.ref_feats"], sd["n_controls"].tolist(), DecoderConfig(**ck["config"]["model"]))
    model.load_state_dict(sd)
    names, cfg = list(ck["avatars"]), ck["config"]
    return model.to(device).eval(), {"avatars": names, "controls": [list(c) for c in ck["controls"]],
                                     "face_boxes": list(ck.get("face_boxes") or [None] * len(names)),
                                     "crop_margin": float(cfg.get("crop_margin", 0.3)),
                                     "encoder": cfg.get("encoder", ""), "renderer": cfg.get("renderer", ""),
                                     "references": ck.get("references"),
                                     "avatars_root": str(Path(cfg.get("data_root", "")) / cfg.get("avatars_root", ""))}
