"""The avatar format: `<avatars_root>/<name>/rigs.csv` + images + `avatar.yaml` (stages 3a and 3b).

    avatars = load_avatars("outputs/demo/world/avatars")        # every avatar folder, sorted
    ds = AvatarRigDataset(avatars, image_size=64, split="train", val_fraction=0.1)
    batch = ds.__getitems__([0, 1, 2])  # {'rig', 'mask': (3, max_n), 'avatar', 'skipped': (3,),
                                        #  'image': uint8 (3, 3, H, W), 'bad': 3 strings}

`rigs.csv` has the header `image,<control_1>,...,<control_n>` (image paths relative to the
avatar folder, values in [0, 1]); `avatar.yaml` holds `display_name`, optionally `controls`
(must then equal the CSV header), `image_size`, `eye_boxes: [[x0, y0, x1, y1], ...]` and
`mouth_box: [x0, y0, x1, y1]` in normalised image coordinates, and optionally `face_box` (the head,
same coordinates; the expression encoder sees the square face crop around it, `data.face_track`;
without it the whole render is the face crop). Every error names the file.

The held-out split is deterministic and independent of row order: a row is held out when a
stable hash (CRC32) of its image path falls below `val_fraction`.

A row whose image cannot be decoded takes the rig and image of the next readable row of the same
avatar (same split) and is flagged in its batch (`skipped`, `bad`: the engine counts and names it).
"""
from __future__ import annotations

import csv
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from common.config import read_yaml_mapping
from data.images import UnreadableImageError, first_readable, load_rgb, main_process
from data.loading import PathArray, use_cache

RIGS_FILE, AVATAR_FILE = "rigs.csv", "avatar.yaml"


class AvatarFormatError(ValueError):
    """An avatar folder that does not follow the format; the message names the file and the fix."""


@dataclass
class Avatar:
    """One avatar: its controls, boxes and (image path, rig) rows.

    Args:
        name: folder name (the avatar's id).
        root: the avatar folder.
        display_name: human-readable name from `avatar.yaml`.
        controls: rig control names, in rig order.
        eye_boxes / mouth_box: normalised [x0, y0, x1, y1] boxes.
        face_box: normalised head box the encoder's face crop centres on; None = the whole image.
        images: image paths (absolute), one per rig row.
        rigs: (N, n_controls) float32 in [0, 1].
    """
    name: str
    root: Path
    display_name: str
    controls: list[str]
    eye_boxes: list[list[float]]
    mouth_box: list[float]
    images: list[Path] = field(default_factory=list)
    rigs: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    face_box: list[float] | None = None

    @property
    def boxes(self) -> list[list[float]]:
        """Eye boxes then the mouth box (the regions the renderer's region loss weights)."""
        return [*self.eye_boxes, self.mouth_box]


def _check_box(box, path: Path, key: str) -> list[float]:
    ok = isinstance(box, (list, tuple)) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)
    if not ok or not (0 <= box[0] < box[2] <= 1 and 0 <= box[1] < box[3] <= 1):
        raise AvatarFormatError(f"{path}: '{key}' must be [x0, y0, x1, y1] with 0 <= x0 < x1 <= 1 and "
                                f"0 <= y0 < y1 <= 1 (normalised image coordinates), got {box!r}")
    return [float(v) for v in box]


def read_avatar(folder: str | Path) -> Avatar:
    """Read one avatar folder (`avatar.yaml` + `rigs.csv`); raises AvatarFormatError naming the file."""
    folder = Path(folder)
    meta_path, rigs_path = folder / AVATAR_FILE, folder / RIGS_FILE
    for p in (meta_path, rigs_path):
        if not p.is_file():
            raise AvatarFormatError(f"{p}: missing; every avatar folder needs {AVATAR_FILE} and {RIGS_FILE}")
    meta = read_yaml_mapping(meta_path, AvatarFormatError)
    for key in ("eye_boxes", "mouth_box"):
        if key not in meta:
            raise AvatarFormatError(f"{meta_path}: missing key '{key}' (normalised [x0, y0, x1, y1] boxes)")
    eyes = meta["eye_boxes"]
    if not isinstance(eyes, list) or not eyes:
        raise AvatarFormatError(f"{meta_path}: 'eye_boxes' must be a non-empty list of [x0, y0, x1, y1]")
    eyes = [_check_box(b, meta_path, "eye_boxes") for b in eyes]
    mouth = _check_box(meta["mouth_box"], meta_path, "mouth_box")
    face = _check_box(meta["face_box"], meta_path, "face_box") if meta.get("face_box") is not None else None

    with rigs_path.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows or not rows[0] or rows[0][0].strip() != "image" or len(rows[0]) < 2:
        raise AvatarFormatError(f"{rigs_path}: header must be 'image,<control_1>,...,<control_n>'")
    controls = [c.strip() for c in rows[0][1:]]
    if len(set(controls)) != len(controls) or any(not c for c in controls):
        raise AvatarFormatError(f"{rigs_path}: control names in the header must be non-empty and unique")
    if "controls" in meta and list(meta["controls"]) != controls:
        raise AvatarFormatError(f"{meta_path}: 'controls' {meta['controls']} differ from the header of "
                                f"{rigs_path} {controls}; make them the same list in the same order")
    images, rigs = [], []
    for line, row in enumerate(rows[1:], start=2):
        if not row or all(not v.strip() for v in row):
            continue
        if len(row) != len(controls) + 1:
            raise AvatarFormatError(f"{rigs_path}, line {line}: {len(row)} columns, expected "
                                    f"{len(controls) + 1} (image + {len(controls)} controls)")
        try:
            vals = [float(v) for v in row[1:]]
        except ValueError:
            raise AvatarFormatError(f"{rigs_path}, line {line}: rig values must be numbers, got {row[1:]}") from None
        if not all(0.0 <= v <= 1.0 for v in vals):  # also rejects NaN
            raise AvatarFormatError(f"{rigs_path}, line {line}: rig values must lie in [0, 1], got {vals}")
        img = folder / row[0].strip()
        if not img.is_file():
            raise AvatarFormatError(f"{rigs_path}, line {line}: image '{row[0]}' not found (looked for {img})")
        images.append(img)
        rigs.append(vals)
    if not images:
        raise AvatarFormatError(f"{rigs_path}: no rows; add one 'image,<values>' row per rendered image")
    return Avatar(folder.name, folder, str(meta.get("display_name", folder.name)), controls, eyes, mouth,
                  images, np.asarray(rigs, np.float32), face)


def load_avatars(root: str | Path, names: list[str] | None = None) -> list[Avatar]:
    """Every avatar folder under `root` (sorted by name), or the listed `names` in that order."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"avatar folder '{root}' does not exist; set data_root in your config "
                                f"(or make the demo world: python scripts/make_demo_data.py --out DIR)")
    if not names:
        names = sorted(p.name for p in root.iterdir() if (p / RIGS_FILE).is_file())
        if not names:
            raise FileNotFoundError(f"no avatar folders (with {RIGS_FILE}) under '{root}'")
    return [read_avatar(root / n) for n in names]


def is_held_out(image: str, val_fraction: float) -> bool:
    """Deterministic split: CRC32 of the image path (relative to its avatar folder) vs `val_fraction`."""
    return zlib.crc32(image.encode()) / 2**32 < val_fraction


def box_pixels(box: list[float], size: int) -> tuple[int, int, int, int]:
    """Pixel rows / columns [y0, y1) x [x0, x1) of a normalised [x0, y0, x1, y1] box: every pixel it touches."""
    x0, y0, x1, y1 = box
    return int(np.floor(y0 * size)), int(np.ceil(y1 * size)), int(np.floor(x0 * size)), int(np.ceil(x1 * size))


def box_mask(boxes: list[list[float]], size: int) -> torch.Tensor:
    """(1, size, size) float mask: 1 inside any of the normalised boxes (`box_pixels`), else 0."""
    m = torch.zeros(1, size, size)
    for box in boxes:
        y0, y1, x0, x1 = box_pixels(box, size)
        m[:, y0:y1, x0:x1] = 1
    return m


class AvatarRigDataset(Dataset):
    """(rig, image) pairs of several avatars; streams: it holds the rigs and file paths, and decodes an image
    when its row is asked for (in the DataLoader worker), or all of them once with `cache`.

    Rigs of different sizes are padded with zeros to the largest avatar's size; `mask` marks the
    real entries. Use `__getitems__` (the DataLoader calls it) to fetch stacked batches.
    An unreadable image's row is served as the next readable row of its avatar (its rig and image),
    flagged in the batch's `skipped` and `bad` (the unreadable file; '' for the others).

    Args:
        avatars: from `load_avatars`.
        image_size: images are resized (area) to this square size.
        split: 'train' (rows not held out), 'val' (held out) or 'all'.
        val_fraction: share of rows held out, chosen by a stable hash of the image path.
        cache: decode every image once into memory (small worlds; ignored under torchrun, `data.loading.use_cache`).
    """

    def __init__(self, avatars: list[Avatar], image_size: int, split: str = "train", val_fraction: float = 0.1,
                 cache: bool = False):
        if split not in ("train", "val", "all"):
            raise ValueError(f"split must be 'train', 'val' or 'all', got '{split}'")
        self.avatars, self.image_size, self.split = avatars, image_size, split
        self.max_controls = max(len(a.controls) for a in avatars)
        rigs, avatar_idx, files = [], [], []
        for k, a in enumerate(avatars):
            for path, rig in zip(a.images, a.rigs):
                held = is_held_out(path.relative_to(a.root).as_posix(), val_fraction)
                if split == "all" or held == (split == "val"):
                    rigs.append(np.pad(rig, (0, self.max_controls - len(rig))))
                    avatar_idx.append(k)
                    files.append(path)
        if not rigs:
            raise ValueError(f"split '{split}' is empty (val_fraction={val_fraction}); use more rows "
                             f"or a different val_fraction")
        self.files = PathArray(files)
        self.rig = torch.from_numpy(np.stack(rigs))  # (N, max_n)
        self.avatar = torch.tensor(avatar_idx, dtype=torch.long)  # (N,)
        n_ctrl = torch.tensor([len(a.controls) for a in avatars])
        self.mask = (torch.arange(self.max_controls)[None] < n_ctrl[self.avatar][:, None]).float()  # (N, max_n)
        self._rows = [torch.nonzero(self.avatar == k).flatten().numpy() for k in range(len(avatars))]  # per avatar
        self._pos = np.zeros(len(files), np.int64)  # row -> its place among its avatar's rows
        for rows in self._rows:
            self._pos[rows] = np.arange(len(rows))
        self.unreadable: list[str] = []  # met in this process (DataLoader workers keep their own)
        self._bad: set[str] = set()
        self._cache = self._decode_all() if use_cache(cache, "avatar renders") else None

    @property
    def cached(self) -> bool:
        """Whether every image is decoded in memory already (`cache`)."""
        return self._cache is not None

    def _decode(self, j: int) -> np.ndarray:
        path = self.files[j]
        if path in self._bad:  # known bad in this process: do not decode it again
            raise UnreadableImageError(path)
        try:
            img = load_rgb(path)
        except UnreadableImageError:
            self._bad.add(path)
            self.unreadable.append(path)
            raise
        if img.size != (self.image_size, self.image_size):
            img = img.resize((self.image_size, self.image_size), Image.Resampling.BOX)
        return np.asarray(img, np.uint8)  # (H, W, 3)

    def read(self, j: int) -> tuple[int, np.ndarray]:
        """(the row served for row j, its image (H, W, 3) uint8): j itself, or when its image is unreadable
        the next readable row of the same avatar (wrapping around)."""
        a = int(self.avatar[j])
        rows = self._rows[a]
        where = lambda: f"{self.avatars[a].root} (avatar '{self.avatars[a].name}', {self.split} rows)"
        (src, img), _ = first_readable(lambda p: (int(rows[p]), self._decode(int(rows[p]))), int(self._pos[j]),
                                       len(rows), where)
        return src, img

    def _decode_all(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(served row (N,), images (N, 3, H, W) uint8) of every row, decoded once."""
        src, images = zip(*(self.read(j) for j in range(len(self))))
        if self.unreadable and main_process():
            n, share = len(self.unreadable), len(self.unreadable) / len(self)
            print(f"[data] {n} of {len(self)} avatar images ({share:.2%}, {self.split} rows) could not be read "
                  f"(corrupt image); each row repeats the next readable row of its avatar: "
                  f"{', '.join(self.unreadable[:3])}{' ...' if n > 3 else ''}", flush=True)
        return torch.tensor(src), torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()

    def __len__(self) -> int:
        return len(self.rig)

    def __getitems__(self, idx: list[int]) -> dict:
        """A stacked batch: 'rig', 'mask' (B, max_n), 'avatar' (B,), 'image' (B, 3, H, W) uint8,
        'skipped' (B,) bool and 'bad' (B strings: the unreadable file, or '')."""
        if self._cache is not None:
            i = torch.as_tensor(idx, dtype=torch.long)
            src, image = self._cache[0][i], self._cache[1][i]
        else:
            src, image = zip(*(self.read(j) for j in idx))
            src, image = torch.tensor(src), torch.from_numpy(np.stack(image)).permute(0, 3, 1, 2)
        skipped = src != torch.as_tensor(idx)
        return {"rig": self.rig[src], "mask": self.mask[src], "avatar": self.avatar[src], "image": image,
                "skipped": skipped, "bad": [self.files[j] if s else "" for j, s in zip(idx, skipped.tolist())]}

    def __getitem__(self, i: int) -> dict:
        return {k: v[0] for k, v in self.__getitems__([i]).items()}

    def indices_of(self, avatar: int) -> torch.Tensor:
        """Row indices of one avatar (for per-avatar evaluation and sample grids)."""
        return torch.nonzero(self.avatar == avatar).flatten()


class AvatarBatchSampler(Sampler[list[int]]):
    """Batches that each hold one avatar's rows (for per-avatar generators: one full batch per
    generator per step instead of a third of one), shuffled per epoch, sharded over ranks.

    Every rank gets the same number of batches of each avatar, so DDP ranks stay in step.

    Args:
        avatar: (N,) avatar index of each dataset row.
        batch_size: rows per batch (a rank's last partial batch of an avatar is dropped).
        rank / world_size: this process's shard.
        seed: base seed; call `set_epoch` each epoch for a new order.
    """

    def __init__(self, avatar: torch.Tensor, batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0):
        self.avatar, self.batch_size = avatar, batch_size
        self.rank, self.world_size, self.seed, self.epoch = rank, world_size, seed, 0
        counts = torch.bincount(avatar).tolist()
        self.n_batches = sum(c // world_size // batch_size for c in counts)
        if self.n_batches == 0:
            raise ValueError(f"no avatar has {batch_size * world_size} training rows; lower batch_size")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n_batches

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        batches = []
        for a in range(int(self.avatar.max()) + 1):
            idx = torch.nonzero(self.avatar == a).flatten()
            idx = idx[torch.randperm(len(idx), generator=g)]
            per_rank = len(idx) // self.world_size // self.batch_size * self.batch_size
            mine = idx[self.rank * per_rank:(self.rank + 1) * per_rank]
            batches += [mine[i:i + self.batch_size].tolist() for i in range(0, per_rank, self.batch_size)]
        order = torch.randperm(len(batches), generator=g).tolist()  # same order on every rank
        return iter([batches[i] for i in order])


def keep_batch(batch):
    """DataLoader `collate_fn` for datasets whose `__getitems__` already returns a stacked batch."""
    return batch
