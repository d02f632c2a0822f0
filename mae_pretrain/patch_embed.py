"""Patch embeddings of the ViT: images (N, C, H, W) -> tokens (N, L, D) on a `grid_size` grid.

`PatchEmbed` is the official linear projection (one strided conv); `ConvPatchEmbed` is the demo's
small convolutional stem. `models_mae.make_patch_embed` picks one from an `MAEConfig`.
"""

from __future__ import annotations

import torch
from torch import nn


class _PatchGrid(nn.Module):
    """The token grid both embeddings share: `img_size`, `patch_size`, `grid_size`, `num_patches`."""

    def __init__(self, img_size: int, patch_size: int):
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} is not a multiple of patch_size {patch_size}")
        self.img_size, self.patch_size = (img_size, img_size), (patch_size, patch_size)
        self.grid_size = (img_size // patch_size, img_size // patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]

    def check(self, x: torch.Tensor) -> None:
        if tuple(x.shape[-2:]) != self.img_size:
            raise ValueError(f"expected {self.img_size} images, got {tuple(x.shape[-2:])}")


class PatchEmbed(_PatchGrid):
    """Image -> non-overlapping patch tokens by a strided convolution (name ``proj`` as timm)."""

    def __init__(self, img_size: int, patch_size: int, in_chans: int, embed_dim: int):
        super().__init__(img_size, patch_size)
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check(x)
        x = self.proj(x)  # (N, C, H, W) -> (N, D, H/p, W/p)
        return x.flatten(2).transpose(1, 2)  # -> (N, L, D)


class ConvPatchEmbed(_PatchGrid):
    """Image -> patch tokens by a small CNN over the whole image (a convolutional stem).

    (3x3 stride-2 conv, BN, ReLU, 3x3 conv, BN, ReLU) per halving, channels `width`, 2 `width`, ...,
    until the stride is `patch_size / 2`; then `proj`, a 2x2 stride-2 conv, gives one `embed_dim`
    token per `patch_size` cell, in the same grid and order as `PatchEmbed`. Unlike the linear
    projection, a token also sees a few pixels of its neighbouring patches; MAE therefore zeroes the
    masked patches before the stem (`MaskedAutoencoderViT.forward_encoder`). Same interface as
    `PatchEmbed`.
    """

    def __init__(self, img_size: int, patch_size: int, in_chans: int, embed_dim: int, width: int = 32):
        super().__init__(img_size, patch_size)
        if patch_size < 4 or patch_size & (patch_size - 1):
            raise ValueError(f"a conv stem needs a power-of-two patch_size >= 4, got {patch_size}")
        layers, c, stride = [], in_chans, 1
        while stride < patch_size // 2:
            for s in (2, 1):
                layers += [nn.Conv2d(c, width, 3, s, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
                c = width
            stride, width = stride * 2, width * 2
        self.stem = nn.Sequential(*layers).to(memory_format=torch.channels_last)  # the fast oneDNN / cuDNN layout
        self.proj = nn.Conv2d(c, embed_dim, kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check(x)
        x = self.proj(self.stem(x.contiguous(memory_format=torch.channels_last)))  # (N, D, h, w)
        return x.flatten(2).transpose(1, 2)  # -> (N, L, D)
