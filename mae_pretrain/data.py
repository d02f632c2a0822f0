"""Stage-1 data: face-image folders with MAE's crop + flip augmentation and face normalisation.

    train_ds = FaceImages(cfg.train_roots, train_transform(64))
    x, bad = train_ds[0]   # x: (3, 64, 64) face-normalised; bad: '' or file 0's path when it was unreadable

Unreadable files are skipped (the next readable image is returned) and reported per sample as
`bad`, so the engine can count and name them even when worker processes do the loading.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset
from torchvision import transforms as T

from common.dist import DistInfo, make_sampler
from common.seeding import SeededSamples
from data.images import ImageFolderDataset, eval_transform, normalize, report_unreadable
from data.loading import build_loader


def train_transform(size: int, scale_min: float = 0.2) -> Callable:
    """RandomResizedCrop(size, scale=(scale_min, 1), bicubic) + horizontal flip + face normalisation."""
    return T.Compose([
        T.RandomResizedCrop(size, scale=(scale_min, 1.0), interpolation=T.InterpolationMode.BICUBIC),
        T.RandomHorizontalFlip(), T.ToTensor(), normalize()])


class FaceImages(ImageFolderDataset):
    """`ImageFolderDataset` whose samples are `(image, bad)`; `bad` is the requested file's path when it
    could not be read (the next readable image was returned instead), else ''.

    Args:
        roots: face-image folders, searched recursively.
        transform: PIL image -> (3, H, W) tensor.
        crop_margin: face crop from each root's `face_boxes.csv` (see `ImageFolderDataset`).
    """

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str]:
        img, bad = self.load(i)
        return self.transform(img), bad


def build_loaders(train_roots: list[str], val_roots: list[str], img_size: int, scale_min: float,
                  batch_size: int, num_workers: int, val_max_images: int, info: DistInfo, seed: int,
                  crop_margin: float | None = None) -> tuple[DataLoader, torch.Tensor | None]:
    """Training loader (distributed sampler, drop_last) and the held-out images as fixed tensors.

    Returns:
        (train_loader, val) where `val` is an (N, 3, H, W) tensor (or None without val_roots);
        every rank evaluates the same held-out images, so the held-out loss needs no reduction.
    """
    train_ds = FaceImages([str(Path(r)) for r in train_roots], train_transform(img_size, scale_min), crop_margin)
    sampler = make_sampler(train_ds, info, shuffle=True, seed=seed, drop_last=True)
    per_rank = len(sampler)
    if per_rank < batch_size:
        raise ValueError(f"{len(train_ds)} training images give {per_rank} per process, fewer than "
                         f"batch_size {batch_size}; lower batch_size or add images to {train_roots}")
    loader = build_loader(SeededSamples(train_ds, seed, info.rank), batch_size=batch_size, sampler=sampler,
                          drop_last=True, num_workers=num_workers, device=info.device, prefetch_factor=4,
                          generator=torch.Generator())
    if not val_roots:
        return loader, None
    val_ds = FaceImages(list(val_roots), eval_transform(img_size), crop_margin)
    n = min(len(val_ds), val_max_images)
    step = max(len(val_ds) // n, 1)  # spread the subset over actors, deterministically
    picked = list(Subset(val_ds, list(range(0, step * n, step))))
    bad = [b for _, b in picked if b]
    report_unreadable("held-out set", len(bad), n, bad, "images")
    return loader, torch.stack([x for x, _ in picked])  # (n, 3, H, W)
