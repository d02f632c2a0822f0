"""Neural renderers: rig vector -> avatar image, DCGAN-style transposed-conv generators.

Two modes, one call signature `model(rig, mask, avatar) -> (B, 3, H, W)` in [0, 1]:
- `per_avatar` (the paper code): one generator per avatar, input its own rig (n_a, 1, 1).
- `shared` (the paper's figure): one generator for all avatars; input = zero-padded rig, its
  mask and a learned identity embedding e_id (one table row per avatar), joined along channels.

The number of x2 upsampling stages follows from the output size: 4 -> 8 -> ... -> image_size.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from common.config import check_choice

MODES = ("per_avatar", "shared")


@dataclass
class GeneratorConfig:
    """Renderer hyper-parameters.

    Args:
        mode: 'per_avatar' (one generator per avatar) or 'shared' (one for all, identity injection).
        image_size: output side, a power of two >= 8 (256 for real avatars).
        base_channels: channels before the last upsampling stage (DCGAN `ngf`); each earlier stage
            doubles them, capped at `max_channels`.
        max_channels: channel cap of the first (4x4) feature map.
        id_dim: size of the identity embedding in 'shared' mode.
    """
    mode: str = "per_avatar"
    image_size: int = 256
    base_channels: int = 64
    max_channels: int = 512
    id_dim: int = 16

    def __post_init__(self):
        check_choice("model.mode", self.mode, MODES)
        if self.image_size < 8 or self.image_size & (self.image_size - 1):
            raise ValueError(f"'model.image_size' must be a power of two >= 8, got {self.image_size}")


PRESETS = {
    "paper": dict(image_size=256, base_channels=64, max_channels=512),
    "demo": dict(image_size=64, base_channels=32, max_channels=256),
    "tiny": dict(image_size=16, base_channels=4, max_channels=16, id_dim=4),
}


def preset(name: str, **overrides) -> GeneratorConfig:
    """A named GeneratorConfig ('paper', 'demo', 'tiny') with field overrides."""
    check_choice("preset", name, list(PRESETS))
    return GeneratorConfig(**{**PRESETS[name], **overrides})


class RigGenerator(nn.Module):
    """DCGAN generator: (B, n_in, 1, 1) -> (B, 3, S, S) sigmoid image.

    ConvT(4, stride 1) to 4x4, then log2(S / 4) stages of ConvT(4, stride 2, pad 1) + BatchNorm +
    ReLU, the last one to 3 channels + sigmoid.

    Args:
        n_in: input channels (rig size, or padded rig + mask + e_id in 'shared' mode).
        cfg: GeneratorConfig (image_size, base_channels, max_channels).
    """

    def __init__(self, n_in: int, cfg: GeneratorConfig):
        super().__init__()
        n_up = int(math.log2(cfg.image_size // 4))
        ch = [min(cfg.max_channels, cfg.base_channels * 2 ** (n_up - 1 - i)) for i in range(n_up)]  # 4x4 ... S/2
        layers = [nn.ConvTranspose2d(n_in, ch[0], 4, 1, 0, bias=False), nn.BatchNorm2d(ch[0]), nn.ReLU(True)]
        for c_in, c_out in zip(ch[:-1], ch[1:]):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(ch[-1], 3, 4, 2, 1), nn.Sigmoid()]
        self.net = nn.Sequential(*layers)
        self.n_in = n_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.view(x.shape[0], self.n_in, 1, 1)  # (B, n_in) -> (B, n_in, 1, 1) for the transposed convs
        return self.net(x)  # (B, 3, S, S)


class PerAvatarRenderer(nn.Module):
    """One RigGenerator per avatar (the paper code); a mixed batch is split by avatar.

    Args:
        n_controls: rig size of each avatar, in avatar-index order.
        cfg: GeneratorConfig.
    """

    def __init__(self, n_controls: list[int], cfg: GeneratorConfig):
        super().__init__()
        self.n_controls, self.cfg = list(n_controls), cfg
        self.gens = nn.ModuleList(RigGenerator(n, cfg) for n in self.n_controls)

    def forward(self, rig: torch.Tensor, mask: torch.Tensor, avatar: torch.Tensor,
                e_id: torch.Tensor | None = None) -> torch.Tensor:
        """rig, mask: (B, max_n) zero-padded; avatar: (B,) long -> (B, 3, S, S).

        `e_id` must be None: per-avatar generators have no identity input.
        """
        if e_id is not None:
            raise ValueError("an external identity embedding needs a 'shared' renderer; this one is 'per_avatar'")
        if avatar.numel() and bool((avatar == avatar[0]).all()):  # one avatar: no scatter needed
            k = int(avatar[0])
            return self.gens[k](rig[:, :self.n_controls[k]])
        out = rig.new_empty(rig.shape[0], 3, self.cfg.image_size, self.cfg.image_size)
        for k in avatar.unique().tolist():
            sel = avatar == k
            out[sel] = self.gens[k](rig[sel, :self.n_controls[k]]).to(out.dtype)
        return out


class SharedRenderer(nn.Module):
    """One RigGenerator for all avatars with identity injection (the paper's figure).

    Input channels: padded rig (max_n) + mask (max_n) + e_id (id_dim).

    Args:
        n_controls: rig size of each avatar, in avatar-index order.
        cfg: GeneratorConfig (id_dim sets the embedding size).
    """

    def __init__(self, n_controls: list[int], cfg: GeneratorConfig):
        super().__init__()
        self.n_controls, self.cfg = list(n_controls), cfg
        self.max_controls = max(self.n_controls)
        self.id_embed = nn.Embedding(len(self.n_controls), cfg.id_dim)
        nn.init.normal_(self.id_embed.weight, std=1.0)
        self.gen = RigGenerator(2 * self.max_controls + cfg.id_dim, cfg)

    def forward(self, rig: torch.Tensor, mask: torch.Tensor, avatar: torch.Tensor,
                e_id: torch.Tensor | None = None) -> torch.Tensor:
        """rig, mask: (B, max_n); avatar: (B,) long; e_id: optional (B, id_dim) replacing the table row."""
        if e_id is None:
            e_id = self.id_embed(avatar)  # (B, id_dim)
        x = torch.cat([rig * mask, mask, e_id.to(rig.dtype)], dim=1)  # (B, 2 * max_n + id_dim)
        return self.gen(x)


def build_renderer(n_controls: list[int], cfg: GeneratorConfig) -> nn.Module:
    """The network for `cfg.mode`."""
    return (SharedRenderer if cfg.mode == "shared" else PerAvatarRenderer)(n_controls, cfg)
