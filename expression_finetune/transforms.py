"""Stage-2 preprocessing: the training augmentation (`augment: official | ours | none`) and the shared
deterministic eval transform.

    tf, deterministic = build_train_transform(cfg, size=224)

* official: timm's `create_transform` with the arguments of the official `exp_emb_code/dataset.py`
  `build_transform(True)` (L72-85): RandomResizedCrop scale (0.08, 1) ratio (7/8, 8/7) bicubic,
  RandAugment 'rand-m9-mstd0.5-inc1' (timm's 0-10 magnitude scale), normalise, random erasing 0.25
  in 'pixel' mode (normal noise), once. One difference: the official call leaves timm's default
  horizontal flip (0.5) on; ours comes from `hflip` (0 by default) because a flip swaps left/right
  action units (a wink, a smirk), so it changes the expression label.
* ours: the torchvision pipeline below (RandAugment on torchvision's 0-30 magnitude scale).
* camera: the eval transform after, with probability `camera_p`, one of what real footage does to a
  face (`data.degrade`: blur, JPEG, sensor noise, low light, low resolution, in-plane rotation) at a
  strength drawn between none and the stronger of the two that `scripts/claims.py` measures robustness at.
  It acts on the face crop (a rotation fills its corners with the crop's edge pixels), where the
  robustness test degrades the whole photo before the crop.
* none: the eval transform (deterministic; the demo's setting).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torchvision import transforms as T

from data.degrade import STRENGTHS, degrade
from data.images import FACE_MEAN, FACE_STD, eval_transform, normalize

__all__ = ["CameraDegradation", "build_train_transform", "official_train_transform", "train_transform",
           "eval_transform", "preprocess_tensor"]
IDENTITY = {"blur": 0.0, "jpeg": 100, "noise": 0.0, "low_light": 1.0, "low_res": 1.0, "rotation": 0.0}


class CameraDegradation:
    """`augment: camera`: with probability `p`, one degradation of `data.degrade`, uniformly chosen, at a
    strength uniform between none (`IDENTITY`) and its stronger `STRENGTHS` value (rotations either way).
    Every draw comes from torch's generator, so the per-sample seeds of `common.seeding` fix them."""

    def __init__(self, p: float = 0.5):
        self.p, self.kinds = p, sorted(STRENGTHS)

    def __call__(self, img: Image.Image) -> Image.Image:
        u = torch.rand(3).tolist()
        if u[0] >= self.p:
            return img
        kind = self.kinds[min(int(u[1] * len(self.kinds)), len(self.kinds) - 1)]
        lo, hi = IDENTITY[kind], STRENGTHS[kind][1]
        strength = lo + (hi - lo) * u[2]
        if kind == "rotation" and torch.rand(()) < 0.5:
            strength = -strength
        return degrade(img, kind, round(strength) if kind == "jpeg" else strength,
                       seed=int(torch.randint(2**31 - 1, ())))


def posterize(img: Image.Image, bits_to_keep: int, **_) -> Image.Image:
    """timm's RandAugment posterize, for 0 bits too: 'PosterizeIncreasing' keeps 0 bits at magnitude 10
    (reached with 'mstd0.5'), which Pillow 13 refuses with a ValueError that ends the run, and which older
    Pillow turned into a black image; this returns that black image."""
    if bits_to_keep >= 8:
        return img
    if bits_to_keep < 1:
        return Image.new(img.mode, img.size)
    return ImageOps.posterize(img, bits_to_keep)


def official_train_transform(size: int, crop_scale=(0.08, 1.0), crop_ratio=(7 / 8, 8 / 7),
                             auto_augment: str | None = "rand-m9-mstd0.5-inc1", reprob: float = 0.25,
                             hflip: float = 0.0) -> Callable:
    """The official training augmentation through timm (see the module docstring); defaults are its values.

    Args:
        size: output side in pixels (224 for ViT-B/16).
        crop_scale, crop_ratio: RandomResizedCrop area and aspect-ratio ranges.
        auto_augment: a timm policy string ('rand-m9-mstd0.5-inc1': RandAugment, magnitude 9 of 10 with
            std 0.5, the "increasing" op variants, 2 ops per image); None = off.
        reprob: random-erasing probability ('pixel' mode, one box, as the official call).
        hflip: horizontal-flip probability (the official call leaves timm's 0.5; see the module docstring).
    """
    from timm.data import auto_augment as timm_augment  # timm is only needed for this transform
    from timm.data import create_transform

    for name in ("Posterize", "PosterizeIncreasing", "PosterizeOriginal"):  # Pillow 13 refuses 0 bits
        timm_augment.NAME_TO_OP[name] = posterize
    return create_transform(input_size=size, is_training=True, scale=tuple(crop_scale), ratio=tuple(crop_ratio),
                            hflip=hflip, color_jitter=None, auto_augment=auto_augment, interpolation="bicubic",
                            re_prob=reprob, re_mode="pixel", re_count=1, mean=FACE_MEAN, std=FACE_STD)


def build_train_transform(cfg, size: int) -> tuple[Callable, bool]:
    """(PIL image -> tensor training transform, whether it is deterministic) for an `ExpressionConfig`."""
    if cfg.augment == "official":
        return official_train_transform(size, cfg.crop_scale, cfg.crop_ratio, cfg.auto_augment, cfg.reprob,
                                        cfg.hflip), False
    if cfg.augment == "ours":
        return train_transform(size, cfg.crop_scale, cfg.rand_ops, cfg.rand_magnitude, cfg.reprob, cfg.hflip,
                               cfg.crop_ratio), False
    if cfg.augment == "camera":
        return T.Compose([CameraDegradation(cfg.camera_p), eval_transform(size)]), False
    return eval_transform(size), True  # 'none': faces go through the eval resize, transformed once if cached


def train_transform(size: int, crop_scale=(0.08, 1.0), rand_ops: int = 2, rand_magnitude: int = 9,
                    reprob: float = 0.25, hflip: float = 0.0, crop_ratio=(3 / 4, 4 / 3)) -> Callable:
    """`augment: ours`: RandomResizedCrop -> [flip] -> RandAugment(n, m) -> tensor -> normalise -> random erasing.

    Args:
        size: output side in pixels (the model's image size).
        crop_scale: area range of RandomResizedCrop.
        crop_ratio: its aspect-ratio range.
        rand_ops, rand_magnitude: torchvision RandAugment ops per image and magnitude (of 30; 0 ops = off).
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
