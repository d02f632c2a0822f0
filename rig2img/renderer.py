"""The public face of stage 3a: a frozen, differentiable renderer loaded from a checkpoint.

    from rig2img import load_renderer
    r = load_renderer("outputs/demo/rig2img/checkpoint-best.pth")
    img = r(rig, "cat")                  # rig (B, 18) -> (B, 3, H, W) in [0, 1]; grads flow to rig
    img = r.render_padded(rigs, avatar)  # mixed avatars: rigs (B, max_controls) zero-padded, avatar (B,)

Identity injection for stage 3b ('shared' mode): `identity_embedding(avatar)` gives the learned
e_id row(s) of shape (id_dim,) / (B, id_dim); `forward(..., e_id=...)` renders with an external
e_id of that size instead of the table row. A 'per_avatar' renderer has `id_dim == 0` and refuses e_id.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from common.checkpoint import load_checkpoint
from rig2img.models import GeneratorConfig, build_renderer


def renderer_meta(cfg: GeneratorConfig, avatars: list) -> dict:
    """What a checkpoint stores so `load_renderer` needs only the path (weights_only-loadable)."""
    return {"model": {k: getattr(cfg, k) for k in GeneratorConfig.__dataclass_fields__},
            "avatars": [a.name for a in avatars], "controls": {a.name: list(a.controls) for a in avatars},
            "boxes": {a.name: [list(map(float, b)) for b in a.boxes] for a in avatars}}


class Renderer(nn.Module):
    """A trained rig -> image network with the avatar list; frozen and always in eval mode.

    Args:
        net: PerAvatarRenderer or SharedRenderer.
        avatar_names: avatar names in index order.
        controls: avatar name -> control names (rig order).
        cfg: the network's GeneratorConfig.
    """

    def __init__(self, net: nn.Module, avatar_names: list[str], controls: dict[str, list[str]], cfg: GeneratorConfig):
        super().__init__()
        self.net, self.cfg = net, cfg
        self.avatar_names = list(avatar_names)
        self.controls = {n: list(controls[n]) for n in self.avatar_names}
        self.image_size, self.mode = cfg.image_size, cfg.mode
        self.id_dim = cfg.id_dim if cfg.mode == "shared" else 0
        self.max_controls = max(len(c) for c in self.controls.values())
        self.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True) -> Renderer:
        """Stays in eval mode (BatchNorm uses its running statistics) even inside a training model."""
        return super().train(False)

    def index(self, avatar: str | int) -> int:
        """Avatar index from a name or an index; unknown avatars raise a KeyError listing the known ones."""
        if isinstance(avatar, str):
            if avatar not in self.avatar_names:
                raise KeyError(f"unknown avatar '{avatar}'; this renderer knows {self.avatar_names}")
            return self.avatar_names.index(avatar)
        if not 0 <= int(avatar) < len(self.avatar_names):
            raise KeyError(f"avatar index {avatar} out of range; this renderer knows {self.avatar_names}")
        return int(avatar)

    def identity_embedding(self, avatar: str | int | torch.Tensor) -> torch.Tensor:
        """Learned e_id: (id_dim,) for one avatar, (B, id_dim) for a (B,) index tensor ('shared' only)."""
        if self.mode != "shared":
            raise ValueError("identity_embedding needs a 'shared' renderer; this one is 'per_avatar'")
        if isinstance(avatar, torch.Tensor):
            return self.net.id_embed(avatar.long())
        return self.net.id_embed.weight[self.index(avatar)]

    def forward(self, rig: torch.Tensor, avatar: str | int, e_id: torch.Tensor | None = None) -> torch.Tensor:
        """Render one avatar.

        Args:
            rig: (B, n_controls) or (n_controls,) with values in [0, 1] (the avatar's own rig size).
            avatar: avatar name or index.
            e_id: optional (id_dim,) or (B, id_dim) identity embedding ('shared' mode only).
        Returns:
            (B, 3, image_size, image_size) in [0, 1], differentiable w.r.t. `rig` (and `e_id`).
        """
        k = self.index(avatar)
        name, n = self.avatar_names[k], len(self.controls[self.avatar_names[k]])
        rig = rig.unsqueeze(0) if rig.dim() == 1 else rig
        if rig.dim() != 2 or rig.shape[1] != n:
            raise ValueError(f"avatar '{name}' expects a rig of length {n} (its controls), "
                             f"got a tensor of shape {tuple(rig.shape)} (length {rig.shape[-1]})")
        padded = nn.functional.pad(rig, (0, self.max_controls - n))  # (B, n) -> (B, max_n)
        avatar_idx = torch.full((rig.shape[0],), k, dtype=torch.long, device=rig.device)
        return self.render_padded(padded, avatar_idx, e_id)

    def render(self, rig: torch.Tensor, avatar: str | int, e_id: torch.Tensor | None = None) -> torch.Tensor:
        """Same as calling the renderer: (B, n_controls) rig of `avatar` -> (B, 3, H, W) in [0, 1]."""
        return self(rig, avatar, e_id)

    def render_padded(self, rig: torch.Tensor, avatar: torch.Tensor, e_id: torch.Tensor | None = None) -> torch.Tensor:
        """Render a mixed batch: rig (B, max_controls) zero-padded after each avatar's own controls,
        avatar (B,) long indices, optional e_id (B, id_dim) -> (B, 3, H, W) in [0, 1]."""
        if rig.dim() != 2 or rig.shape[1] != self.max_controls:
            raise ValueError(f"render_padded expects rigs of shape (B, {self.max_controls}), got {tuple(rig.shape)}")
        n_ctrl = torch.tensor([len(self.controls[a]) for a in self.avatar_names], device=rig.device)
        mask = (torch.arange(self.max_controls, device=rig.device)[None] < n_ctrl[avatar][:, None]).to(rig.dtype)
        if e_id is not None:
            if self.mode != "shared":
                raise ValueError("an external identity embedding needs a 'shared' renderer; this one is 'per_avatar'")
            e_id = e_id.expand(rig.shape[0], -1) if e_id.dim() == 1 else e_id
            if e_id.shape[-1] != self.id_dim:
                raise ValueError(f"e_id must have {self.id_dim} values per sample, got shape {tuple(e_id.shape)}")
        return self.net(rig * mask, mask, avatar, e_id)


def load_renderer(path: str | Path, device: str | torch.device = "cpu") -> Renderer:
    """A frozen Renderer from a stage-3a checkpoint (`checkpoint-best.pth` / `checkpoint-last.pth`).

    Parameters have requires_grad=False and the module stays in eval mode, but the output is
    differentiable with respect to the rig (stage 3b trains its decoder through it).
    """
    ckpt = load_checkpoint(path)
    meta = ckpt.get("renderer")
    if meta is None:
        raise ValueError(f"'{path}' is not a rig2img checkpoint (no 'renderer' entry); "
                         f"pass a checkpoint written by train_rig2img.py")
    cfg = GeneratorConfig(**meta["model"])
    n_controls = [len(meta["controls"][n]) for n in meta["avatars"]]
    boxes = [meta["boxes"][n] for n in meta["avatars"]] if "boxes" in meta else None  # older checkpoints: none
    net = build_renderer(n_controls, cfg, boxes)
    net.load_state_dict(ckpt["model"])
    return Renderer(net, meta["avatars"], meta["controls"], cfg).to(device)
