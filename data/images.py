"""Face-image folders and the preprocessing every stage shares.

    ds = ImageFolderDataset("demo_data/faces/train", transform=eval_transform(64))
    x = ds[0]                     # (3, 64, 64) float tensor, face-normalised

Unreadable images are skipped (the dataset returns the next readable one) and counted in
`ds.skipped`, never silently.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision import transforms as T

from data.face_track import crop_face, read_face_boxes

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
# Face-image statistics used by MAE-Face and FreeAvatar (RGB, [0,1] scale).
FACE_MEAN = (0.49895, 0.41044, 0.36561)
FACE_STD = (0.29708, 0.26990, 0.26526)


def list_images(root: str | Path) -> list[Path]:
    """All images under `root` (any depth), sorted; a missing or empty folder is an error."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder '{root}' does not exist; set the data path in your config "
                                f"(or make the demo world: python scripts/make_demo_data.py --out DIR)")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file())
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTS)}) found under '{root}'")
    return files


def load_rgb(path: str | Path) -> Image.Image:
    """Open an image as RGB; raises OSError naming the file when it cannot be decoded."""
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise OSError(f"cannot read image '{path}': {e}") from e


def load_face(path: Path, boxes: dict, margin: float | None) -> Image.Image:
    """`load_rgb(path)`, cropped to the square face crop (`data.face_track`) when `boxes` has the file."""
    img = load_rgb(path)
    return crop_face(img, boxes[path], margin) if path in boxes else img


def normalize() -> T.Normalize:
    return T.Normalize(FACE_MEAN, FACE_STD)


def eval_transform(size: int) -> Callable:
    """Deterministic evaluation preprocessing: resize the short side, centre crop, normalise."""
    return T.Compose([T.Resize(size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size),
                      T.ToTensor(), normalize()])


def denormalize(x: torch.Tensor) -> torch.Tensor:
    """Inverse of `normalize` for (..., 3, H, W) tensors, clamped to [0, 1] for display."""
    mean = torch.tensor(FACE_MEAN, device=x.device).view(3, 1, 1)
    std = torch.tensor(FACE_STD, device=x.device).view(3, 1, 1)
    return (x * std + mean).clamp(0, 1)


class ImageFolderDataset(Dataset):
    """Every image under one or more folders, for unlabeled training (stage 1, stage 3b faces).

    Args:
        roots: a folder or a list of folders, searched recursively.
        transform: applied to the PIL image; returns the sample.
        crop_margin: None = whole images; a number = the square face crop with this margin
            (`data.face_track`) for images that a root's `face_boxes.csv` gives a box.
    """

    def __init__(self, roots: str | Path | list, transform: Callable | None = None, crop_margin: float | None = None):
        roots = roots if isinstance(roots, (list, tuple)) else [roots]
        self.files = [p for r in roots for p in list_images(r)]
        self.transform, self.crop_margin = transform, crop_margin
        self.boxes = read_face_boxes(roots) if crop_margin is not None else {}
        self.skipped: set[str] = set()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        for k in range(len(self.files)):
            path = self.files[(i + k) % len(self.files)]
            try:
                img = load_face(path, self.boxes, self.crop_margin)
            except OSError as e:
                with self._lock:
                    if str(path) not in self.skipped:
                        self.skipped.add(str(path))
                        print(f"[data] skipping unreadable image ({len(self.skipped)} so far): {e}")
                continue
            return self.transform(img) if self.transform else img
        raise RuntimeError(f"no readable image among {len(self.files)} files")
