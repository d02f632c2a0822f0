"""Neural renderers: rig vector -> avatar image, DCGAN-style transposed-conv generators.

Two modes, one call signature `model(rig, mask, avatar) -> (B, 3, H, W)` in [0, 1]:
- `per_avatar` (the paper code): one generator per avatar, input its own rig (n_a, 1, 1).
- `shared` (the paper's figure): one generator for all avatars; input = zero-padded rig, its
  mask and a learned identity embedding e_id (one table row per avatar), joined along channels.

The number of x2 upsampling stages follows from the output size: 4 -> 8 -> ... -> image_size.

Optional region decoders (`region_patch` > 0, 'per_avatar' only): each eye and mouth box of an avatar
gets a small generator of its own that paints a patch (RGB + alpha) from the same rig; the patch is
resized to the box and blended over the full render by its alpha. The boxes, where the expression
detail is, then get capacity of their own instead of sharing the full generator's.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from common.config import check_choice
from data.avatars import box_pixels

MODES = ("per_avatar", "shared")


@dataclass
class GeneratorConfig:
    """Renderer hyper-parameters.

    Args:
        mode: 'per_avatar' (one generator per avatar) or 'shared' (one for all, identity injection).
        image_size: output side, a power of two >= 8 (256 for real avatars).
        base_channels: channels before the last upsampling stage (DCGAN `ngf`); each earlier stage
            doubles them, capped at `max_channels`. Unused when `widths` is given.
        max_channels: channel cap of the first (4x4) feature map. Unused when `widths` is given.
        widths: explicit channels of the feature maps 4x4, 8x8, ..., S/2 x S/2 (log2(S / 4) numbers);
            empty: derived from base_channels / max_channels. The official generator is
            [1024, 512, 256, 128, 128, 128] (models/DCGAN.py Generator with ngf 128), which doubling
            from `base_channels` cannot express.
        out_bias: whether the last transposed conv (to RGB) has a bias; the official one has none.
        id_dim: size of the identity embedding in 'shared' mode.
        region_patch: side of each eye/mouth box's own decoder output (a power of two >= 8), resized to the
            box and alpha-blended over the render; 0: none (the paper's network). 'per_avatar' mode only.
        region_channels: channels of the region decoders' first (4x4) feature map; each later one halves
            them (at least 8).
    """
    mode: str = "per_avatar"
    image_size: int = 256
    base_channels: int = 64
    max_channels: int = 512
    widths: list[int] = field(default_factory=list)
    out_bias: bool = True
    id_dim: int = 16
    region_patch: int = 0
    region_channels: int = 128

    def __post_init__(self):
        check_choice("model.mode", self.mode, MODES)
        if self.image_size < 8 or self.image_size & (self.image_size - 1):
            raise ValueError(f"'model.image_size' must be a power of two >= 8, got {self.image_size}")
        if self.region_patch and (self.region_patch < 8 or self.region_patch & (self.region_patch - 1)):
            raise ValueError(f"'model.region_patch' must be 0 (off) or a power of two >= 8, got {self.region_patch}")
        if self.region_patch and self.region_channels < 8:
            raise ValueError(f"'model.region_channels' must be >= 8, got {self.region_channels}")
        if self.region_patch and self.mode != "per_avatar":
            raise ValueError("'model.region_patch' (region decoders) is implemented for mode 'per_avatar' only; "
                             "set model.region_patch=0 for a 'shared' renderer")
        n_up = self.n_stages()
        if self.widths and (len(self.widths) != n_up or min(self.widths) < 1):
            raise ValueError(f"'model.widths' must list {n_up} positive channel counts for image_size "
                             f"{self.image_size} (4x4 ... {self.image_size // 2}x{self.image_size // 2}), "
                             f"got {list(self.widths)}; use [] to derive them from base_channels")

    def n_stages(self) -> int:
        """Feature maps before the RGB layer: 4x4, 8x8, ..., S/2 x S/2."""
        return int(math.log2(self.image_size // 4))

    def channels(self) -> list[int]:
        """Channels of each feature map, 4x4 first."""
        if self.widths:
            return [int(c) for c in self.widths]
        n_up = self.n_stages()
        return [min(self.max_channels, self.base_channels * 2 ** (n_up - 1 - i)) for i in range(n_up)]

    def region_config(self) -> GeneratorConfig:
        """The GeneratorConfig of one region decoder (a `region_patch`-sized generator)."""
        n_up = int(math.log2(self.region_patch // 4))
        widths = [max(8, self.region_channels >> i) for i in range(n_up)]
        return GeneratorConfig(image_size=self.region_patch, widths=widths, out_bias=True)


PRESETS = {
    # the official renderer (models/DCGAN.py Generator L89-182, ngf 128 from train_rig2img.py L127)
    "official": dict(image_size=256, widths=[1024, 512, 256, 128, 128, 128], out_bias=False),
    # 'paper' is an earlier stand-in of similar size (widths 512-512-512-256-128-64), kept because
    # scripts/bench_test_mode.py times it; use 'official' for the paper's network
    "paper": dict(image_size=256, base_channels=64, max_channels=512),
    "demo": dict(image_size=64, base_channels=32, max_channels=256),
    "tiny": dict(image_size=16, base_channels=4, max_channels=16, id_dim=4),
}


def preset(name: str, **overrides) -> GeneratorConfig:
    """A named GeneratorConfig ('official', 'paper', 'demo', 'tiny') with field overrides."""
    check_choice("preset", name, list(PRESETS))
    return GeneratorConfig(**{**PRESETS[name], **overrides})


class RigGenerator(nn.Module):
    """DCGAN generator: (B, n_in, 1, 1) -> (B, out_channels, S, S) sigmoid image.

    ConvT(4, stride 1) + BatchNorm + ReLU to 4x4, then ConvT(4, stride 2, pad 1) + BatchNorm + ReLU
    up to S/2, then ConvT(4, stride 2, pad 1) to `out_channels` + sigmoid. Only that last conv may have
    a bias (`cfg.out_bias`). The official generator is the same network with other module names
    (tconv1..6, bn1..6, tconv8); `rig2img.official` maps them.

    Args:
        n_in: input channels (rig size, or padded rig + mask + e_id in 'shared' mode).
        cfg: GeneratorConfig (image_size, channels, out_bias).
        out_channels: 3 (RGB), or 4 for a region decoder (RGB + alpha).
    """

    def __init__(self, n_in: int, cfg: GeneratorConfig, out_channels: int = 3):
        super().__init__()
        ch = cfg.channels()  # 4x4 ... S/2
        layers = [nn.ConvTranspose2d(n_in, ch[0], 4, 1, 0, bias=False), nn.BatchNorm2d(ch[0]), nn.ReLU(True)]
        for c_in, c_out in zip(ch[:-1], ch[1:]):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(ch[-1], out_channels, 4, 2, 1, bias=cfg.out_bias), nn.Sigmoid()]
        self.net = nn.Sequential(*layers)
        self.n_in = n_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.view(x.shape[0], self.n_in, 1, 1)  # (B, n_in) -> (B, n_in, 1, 1) for the transposed convs
        return self.net(x)  # (B, out_channels, S, S)


class RegionDecoders(nn.Module):
    """One small generator per eye / mouth box of an avatar, painted over the full render.

    Each decoder maps the rig to a (4, P, P) patch; it is resized (antialiased bilinear) to its box and
    blended: out = (1 - alpha) * render + alpha * rgb inside the box, so the decoder chooses where it
    takes over and the box edges need no seam.

    Args:
        n_in: rig size of the avatar.
        boxes: the avatar's normalised [x0, y0, x1, y1] boxes (eyes, then mouth).
        cfg: the renderer's GeneratorConfig (image_size, region_patch, region_channels).
    """

    def __init__(self, n_in: int, boxes: list[list[float]], cfg: GeneratorConfig):
        super().__init__()
        self.pixels = [box_pixels(b, cfg.image_size) for b in boxes]
        self.decoders = nn.ModuleList(RigGenerator(n_in, cfg.region_config(), out_channels=4) for _ in boxes)

    def forward(self, image: torch.Tensor, rig: torch.Tensor) -> torch.Tensor:
        """image (B, 3, S, S) full render, rig (B, n_in) -> (B, 3, S, S) with the boxes repainted."""
        size = image.shape[-1]
        for gen, (y0, y1, x0, x1) in zip(self.decoders, self.pixels):
            # (B, 4, P, P) -> (B, 4, h, w); in fp32: CPU's antialiased resize has no bf16 / fp16 kernel
            patch = nn.functional.interpolate(gen(rig).float(), size=(y1 - y0, x1 - x0), mode="bilinear",
                                              align_corners=False, antialias=True)
            patch = nn.functional.pad(patch, (x0, size - x1, y0, size - y1))  # (B, 4, S, S), alpha 0 outside the box
            image = torch.lerp(image, patch[:, :3].to(image.dtype), patch[:, 3:].to(image.dtype))
        return image


class PerAvatarRenderer(nn.Module):
    """One RigGenerator per avatar (the paper code); a mixed batch is split by avatar.

    Args:
        n_controls: rig size of each avatar, in avatar-index order.
        cfg: GeneratorConfig.
        boxes: each avatar's eye and mouth boxes (normalised); needed when `cfg.region_patch` > 0.
    """

    def __init__(self, n_controls: list[int], cfg: GeneratorConfig, boxes: list[list[list[float]]] | None = None):
        super().__init__()
        self.n_controls, self.cfg = list(n_controls), cfg
        self.gens = nn.ModuleList(RigGenerator(n, cfg) for n in self.n_controls)
        self.region_decoders = None
        if cfg.region_patch:
            if boxes is None or len(boxes) != len(self.n_controls):
                raise ValueError(f"region decoders (model.region_patch={cfg.region_patch}) need the eye and mouth "
                                 f"boxes of each of the {len(self.n_controls)} avatars")
            self.region_decoders = nn.ModuleList(RegionDecoders(n, b, cfg) for n, b in zip(self.n_controls, boxes))

    def _render(self, k: int, rig: torch.Tensor) -> torch.Tensor:
        """Avatar k's generator (and region decoders): rig (B, n_k) -> (B, 3, S, S)."""
        image = self.gens[k](rig)
        return image if self.region_decoders is None else self.region_decoders[k](image, rig)

    def forward(self, rig: torch.Tensor, mask: torch.Tensor, avatar: torch.Tensor,
                e_id: torch.Tensor | None = None) -> torch.Tensor:
        """rig, mask: (B, max_n) zero-padded; avatar: (B,) long -> (B, 3, S, S).

        `e_id` must be None: per-avatar generators have no identity input.
        """
        if e_id is not None:
            raise ValueError("an external identity embedding needs a 'shared' renderer; this one is 'per_avatar'")
        if avatar.numel() and bool((avatar == avatar[0]).all()):  # one avatar: no scatter needed
            k = int(avatar[0])
            return self._render(k, rig[:, :self.n_controls[k]])
        out = rig.new_empty(rig.shape[0], 3, self.cfg.image_size, self.cfg.image_size)
        for k in avatar.unique().tolist():
            sel = avatar == k
            out[sel] = self._render(k, rig[sel, :self.n_controls[k]]).to(out.dtype)
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


def build_renderer(n_controls: list[int], cfg: GeneratorConfig,
                   boxes: list[list[list[float]]] | None = None) -> nn.Module:
    """The network for `cfg.mode`; `boxes` (each avatar's eye and mouth boxes) feed the region decoders."""
    if cfg.mode == "shared":
        return SharedRenderer(n_controls, cfg)
    return PerAvatarRenderer(n_controls, cfg, boxes)
