"""Stage-2 preprocessing: the paper's training augmentation and the shared deterministic eval transform."""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torchvision import transforms as T

from data.images import FACE_MEAN, FACE_STD, eval_transform, normalize

__all__ = ["train_transform", "eval_transform", "preprocess_tensor"]


def train_transform(size: int, crop_scale=(0.08, 1.0), rand_ops: int = 2, rand_magnitude: int = 9,
                    reprob: float = 0.25, hflip: float = 0.0, crop_ratio=(3 / 4, 4 / 3)) -> Callable:
    """RandomResizedCrop -> [flip] -> RandAugment(n, m) -> tensor -> normalise -> random erasing.

    Args:
        size: output side in pixels (the model's image size).
        crop_scale: area range of RandomResizedCrop ((0.08, 1) in the paper's recipe).
        crop_ratio: its aspect-ratio range (torchvision's default (3/4, 4/3) in the paper's recipe).
        rand_ops, rand_magnitude: RandAugment ops per image and magnitude (0 ops = off).
        reprob: random-erasing probability (erased pixels are random normal noise, as MAE fine-tuning).
        hflip: horizontal-flip probability.
    """
    ops: list = [T.RandomResizedCrop(size, scale=tuple(crop_scale), ratio=tuple(crop_ratio),
                                     interpolation=T.InterpolationMode.BICUBIC)]
    if hflip > 0:
        ops.append(T.RandomHorizontalFlip(hflip))
    if rand_ops > 0:
        ops.append(T.RandAugment(num_ops=rand_ops, magnitude=rand_magnitude))
    ops += [T.ToTensor(), normalize()]
    if reprob > 0:
        ops.append(T.RandomErasing(p=reprob, value="random"))
    return T.Compose(ops)


def preprocess_tensor(x: torch.Tensor, size: int) -> torch.Tensor:
    """Differentiable `eval_transform` for decoded frames: (N, 3, H, W) RGB in [0, 1] (or uint8)
    -> resize the short side to `size` (bicubic, antialiased), centre crop, face-normalise."""
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    h, w = x.shape[-2:]
    if min(h, w) != size:  # torchvision Resize(int): short side -> size, long side truncated
        new = (size, int(size * w / h)) if h <= w else (int(size * h / w), size)
        # the antialiased kernels have no bf16/fp16 CPU implementation: resize in fp32, cast back
        x = F.interpolate(x.float(), size=new, mode="bicubic", align_corners=False, antialias=True).to(x.dtype)
    h, w = x.shape[-2:]
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    x = x[..., top:top + size, left:left + size]  # (N, 3, size, size)
    mean = torch.tensor(FACE_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(FACE_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std
