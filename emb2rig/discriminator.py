"""Multiscale PatchGAN discriminator with hinge losses (the optional GAN term of stage 3b).

    disc = MultiScalePatchGAN(scales=2, channels=32, layers=3)
    logits = disc(images01)                         # list of (B, 1, h_s, w_s), one per scale
    d_loss = hinge_d_loss(disc(real), disc(fake.detach()))
    g_term = hinge_g_loss(disc(fake))               # inside compute_losses, scaled by weight_gan

"Real" images are the frozen renderer's outputs at known avatar rigs and "fake" ones its
outputs at decoded rigs, so renderer artefacts appear on both sides and the discriminator can
only judge whether a rig looks like one the avatar really takes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PatchGAN(nn.Module):
    """One scale: strided 4x4 convs with LeakyReLU -> a 1-channel map of patch logits.

    Args:
        channels: width of the first conv (doubles per layer, capped at 8x).
        layers: number of strided convs.
    """

    def __init__(self, channels: int = 32, layers: int = 3):
        super().__init__()
        mods, c_in = [], 3
        for i in range(layers):
            c_out = channels * min(2 ** i, 8)
            mods += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1),
                     nn.GroupNorm(1, c_out) if i > 0 else nn.Identity(), nn.LeakyReLU(0.2)]
            c_in = c_out
        mods.append(nn.Conv2d(c_in, 1, 3, padding=1))
        self.net = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, 1, H / 2^layers, W / 2^layers)
        return self.net(x)


class MultiScalePatchGAN(nn.Module):
    """PatchGANs on the image and on 2x, 4x, ... average-pooled copies.

    Args:
        scales: number of scales.
        channels / layers: per-scale PatchGAN size.
    """

    def __init__(self, scales: int = 2, channels: int = 32, layers: int = 3):
        super().__init__()
        self.nets = nn.ModuleList(PatchGAN(channels, layers) for _ in range(scales))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = x * 2 - 1  # [0, 1] images -> [-1, 1]
        out = []
        for i, net in enumerate(self.nets):
            out.append(net(x))
            if i + 1 < len(self.nets):
                x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
        return out


def hinge_d_loss(real: list[torch.Tensor], fake: list[torch.Tensor]) -> torch.Tensor:
    """Discriminator hinge loss, averaged over scales: relu(1 - D(real)) + relu(1 + D(fake))."""
    return sum(F.relu(1 - r).mean() + F.relu(1 + f).mean() for r, f in zip(real, fake)) / len(real)


def hinge_g_loss(fake: list[torch.Tensor]) -> torch.Tensor:
    """Generator hinge loss, averaged over scales: -D(fake)."""
    return sum(-f.mean() for f in fake) / len(fake)
