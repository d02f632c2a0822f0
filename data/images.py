"""Face-image folders and the preprocessing every stage shares.

    ds = ImageFolderDataset("demo_data/faces/train", transform=eval_transform(64))
    x = ds[0]                     # (3, 64, 64) float tensor, face-normalised
    img, bad = ds.load(0)         # PIL image; bad = '' or the path of file 0 when it could not be read

Unreadable images are skipped, never silently: a dataset returns the next readable item in its
place (so batches keep their shape and clean data is read exactly as before) and flags the sample
with the unreadable path. The flag travels with the batch, also out of DataLoader worker processes,
so each engine counts the skips of an epoch (`train/skipped_*`) and `report_unreadable` prints them.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision import transforms as T

from data.face_track import crop_face, read_face_boxes
from data.loading import PathArray
from data.video import IMAGE_EXTS, image_paths

# Face-image statistics used by MAE-Face and FreeAvatar (RGB, [0,1] scale).
FACE_MEAN = (0.49895, 0.41044, 0.36561)
FACE_STD = (0.29708, 0.26990, 0.26526)
WARN_SHARE = 0.01  # an epoch in which more than this share of the samples was unreadable gets a WARNING
T_ = TypeVar("T_")


class UnreadableImageError(OSError):
    """An image file that cannot be opened or decoded; `path` names it."""

    def __init__(self, path: str | Path, why: object = "unreadable"):
        super().__init__(f"cannot read image '{path}': {why}")
        self.path = str(path)


def list_image_paths(root: str | Path) -> list[str]:
    """All images under `root` (any depth), sorted, as strings (`data.video.image_paths`); a missing or empty
    folder is an error."""
    if not Path(root).is_dir():
        raise FileNotFoundError(f"image folder '{root}' does not exist; set the data path in your config "
                                f"(or make the demo world: python scripts/make_demo_data.py --out DIR)")
    files = image_paths(root)
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTS)}) found under '{root}'")
    return files


def list_images(root: str | Path) -> list[Path]:
    """`list_image_paths(root)` as `Path` objects."""
    return [Path(p) for p in list_image_paths(root)]


def box_array(files, boxes: dict) -> np.ndarray:
    """(N, 4) float64 face boxes of `files` from {file: box} (`read_face_boxes`; float64 keeps every crop exactly as
    the CSV's numbers give it); NaN rows: no box."""
    out = np.full((len(files), 4), np.nan)
    if boxes:
        for i, f in enumerate(files):
            if (b := boxes.get(Path(f))) is not None:
                out[i] = b
    return out


def load_rgb(path: str | Path) -> Image.Image:
    """Open an image as RGB; raises `UnreadableImageError` (an OSError) naming the file when it cannot be decoded."""
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise UnreadableImageError(path, e) from e


def first_readable(load: Callable[[int], T_], i: int, n: int, where: Callable[[], str]) -> tuple[T_, str]:
    """`load(i)`; when it raises `UnreadableImageError`, the first of `load(i + 1)`, `load(i + 2)`, ...
    (wrapping around the `n` items) that reads: a deterministic stand-in for the unreadable item.

    Returns:
        (the loaded item, '' when item i itself was read, else the unreadable file of item i).
    Raises:
        RuntimeError naming `where()` (the data folder) when none of the n items can be read.
    """
    bad = ""
    for k in range(n):
        try:
            return load((i + k) % n), bad
        except UnreadableImageError as e:
            bad = bad or e.path
    raise RuntimeError(f"none of the {n} items under {where()} can be read (every image is corrupt or not an "
                       f"image, e.g. {bad}); check the data folder in your config")


def common_folder(paths: list) -> str:
    """The deepest folder that holds all `paths` (for error messages)."""
    return os.path.commonpath([str(Path(p).parent) for p in paths]) if paths else "?"


def main_process() -> bool:
    """Rank 0 of a distributed run, or the only process (for messages printed once)."""
    return not dist.is_initialized() or dist.get_rank() == 0


def report_unreadable(where: str, n_skipped: int, n_seen: int, names: list[str], unit: str = "samples",
                      action: str = "were replaced by the next readable one") -> None:
    """Print one line (rank 0) naming a few files when samples of an epoch had an unreadable image; a
    WARNING when their share passes `WARN_SHARE`.

    Args:
        where: e.g. 'epoch 3'.
        n_skipped / n_seen: unreadable and all samples of the epoch (summed over ranks).
        names: unreadable files met on this rank (the first few are named).
        unit / action: what the samples are and what became of the unreadable ones, for the message.
    """
    if not n_skipped or not main_process():
        return
    share = n_skipped / max(n_seen, 1)
    first = ", ".join(list(dict.fromkeys(names))[:3]) or "?"
    line = f"{where}: {n_skipped} of {n_seen} {unit} ({share:.2%}) could not be read (corrupt image) and {action}"
    if share > WARN_SHARE:
        print(f"[data] WARNING {line}: more than {WARN_SHARE:.0%}; fix or remove these files, e.g. {first}",
              flush=True)
    else:
        print(f"[data] {line} (e.g. {first})", flush=True)


def load_face(path: str | Path, box, margin: float | None) -> Image.Image:
    """`load_rgb(path)`, cropped to the square face crop (`data.face_track`) around `box` (normalised
    x0, y0, x1, y1; None or NaN = the whole image) when `margin` is a number; raises `UnreadableImageError`
    when the file cannot be decoded."""
    return frame_face(load_rgb(path), box, margin)


def frame_face(img: Image.Image, box, margin: float | None) -> Image.Image:
    """The square face crop of `img` around `box` as `load_face` frames it (the whole image when `box`
    is None or NaN or `margin` is None)."""
    if margin is None or box is None or np.isnan(box[0]):
        return img
    return crop_face(img, tuple(float(v) for v in box), margin)


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
    """Every image under one or more folders, for unlabeled training (stage 1); streams: only the file list
    and the face boxes are held, each image is decoded when asked for (in the DataLoader worker).

    An unreadable file is replaced by the next readable one (`first_readable`); `load(i)` also says
    whether that happened, and `skipped` holds the unreadable files met in this process.

    Args:
        roots: a folder or a list of folders, searched recursively.
        transform: applied to the PIL image; returns the sample.
        crop_margin: None = whole images; a number = the square face crop with this margin
            (`data.face_track`) for images that a root's `face_boxes.csv` gives a box.
    """

    def __init__(self, roots: str | Path | list, transform: Callable | None = None, crop_margin: float | None = None):
        roots = roots if isinstance(roots, (list, tuple)) else [roots]
        self.roots = [str(r) for r in roots]
        self.files = PathArray(p for r in roots for p in list_image_paths(r))
        self.transform, self.crop_margin = transform, crop_margin
        self.boxes = box_array(self.files, read_face_boxes(roots) if crop_margin is not None else {})  # (N, 4)
        self.skipped: set[str] = set()  # per process: DataLoader workers keep their own

    def __len__(self) -> int:
        return len(self.files)

    def _open(self, j: int) -> Image.Image:
        path = self.files[j]
        if path in self.skipped:  # known bad in this process: do not decode it again
            raise UnreadableImageError(path)
        try:
            return load_face(path, self.boxes[j], self.crop_margin)
        except UnreadableImageError:
            self.skipped.add(path)
            raise

    def load(self, i: int) -> tuple[Image.Image, str]:
        """(PIL image, '') for file i, or (the next readable file's image, file i's path) when i is unreadable."""
        return first_readable(self._open, i, len(self.files), lambda: ", ".join(self.roots))

    def __getitem__(self, i: int):
        img, _ = self.load(i)
        return self.transform(img) if self.transform else img
