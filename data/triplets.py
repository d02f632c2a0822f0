"""Expression-comparison triplets (stage 2): the two CSV formats and one dataset over them.

    recs = read_triplets("triplets/train.csv", image_root="outputs/demo/world")   # either format
    recs.skipped                   # {'malformed rows': 3, ...}: the rows left out, by reason
    ds = TripletDataset(recs, transform=eval_transform(64))
    imgs, type_id, bad = ds[0]     # (3, 3, 64, 64): anchor, positive, negative; int index in TRIPLET_TYPES;
                                   # bad: '' or the unreadable image of triplet 0 (the next readable one came instead)

Formats (the product's contracts, DESIGN.md):
  * simple: header `anchor,positive,negative,type`, image paths relative to `image_root`; the
    anchor/positive pair is the annotated most-similar pair.
  * raw FEC (no header, 28 columns): for each of the 3 images `URL, tl_col, br_col, tl_row, br_row`
    (face box normalised by width/height), then the triplet type, then 6 `(annotator_id, answer)`
    pairs, an answer being the 1-based index of the image that is least similar to the other two.
    URLs map to local files through a `url,path` CSV (paths relative to `image_root`); the face is
    cropped by its box; the majority answer is the negative, the other two (in file order) are
    anchor and positive. Rows with the wrong column count, bad numbers or an unknown type are
    malformed; rows whose answers tie have no majority; both are skipped, and so are triplets
    with a missing image. One summary line reports every count.

Images that exist but cannot be decoded are found while reading batches: a training triplet with one
is replaced by the next readable triplet and flagged (`bad`), a held-out image is flagged
(`HeldOutImages`) and the triplets that use it are left out of the score.
"""
from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from data.face_track import crop_face
from data.images import UnreadableImageError, common_folder, first_readable, load_rgb
from data.loading import PathArray, use_cache

TRIPLET_TYPES = ("ONE_CLASS_TRIPLET", "TWO_CLASS_TRIPLET", "THREE_CLASS_TRIPLET")
TYPE_INDEX = {t: i for i, t in enumerate(TRIPLET_TYPES)}
SIMPLE_HEADER = ["anchor", "positive", "negative", "type"]
FEC_COLUMNS = 28  # 3 x (url + 4 box numbers) + type + 6 x (annotator, answer)

Box = tuple[float, float, float, float]  # (left, top, right, bottom), normalised to [0, 1]


@dataclass(frozen=True)
class TripletRecord:
    """One triplet: `paths[0:2]` is the annotated similar pair (anchor, positive), `paths[2]` the odd one.

    Args:
        paths: anchor, positive, negative image files.
        type: one of `TRIPLET_TYPES`.
        boxes: per image a normalised face box to crop, or None for the whole image.
    """

    paths: tuple[Path, Path, Path]
    type: str
    boxes: tuple[Box | None, Box | None, Box | None] = (None, None, None)


class TripletList(list):
    """The `TripletRecord`s read from one file (a list), with `skipped`: {reason: rows left out}."""

    def __init__(self, records: list[TripletRecord], skipped: Counter | dict):
        super().__init__(records)
        self.skipped = {k: int(v) for k, v in sorted(skipped.items()) if v}


def _summary(name: str, out: list[TripletRecord], counts: Counter) -> TripletList:
    parts = [f"{v} {k}" for k, v in sorted(counts.items()) if v]
    print(f"[triplets] {name}: {len(out)} triplets loaded" + (f"; skipped {', '.join(parts)}" if parts else ""))
    return TripletList(out, counts)


def read_simple_csv(path: str | Path, image_root: str | Path) -> TripletList:
    """Read an `anchor,positive,negative,type` CSV; skip (and count) malformed rows and missing files."""
    path, root = Path(path), Path(image_root)
    out, skipped = [], Counter()
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        if header[:4] != SIMPLE_HEADER:
            raise ValueError(f"{path}: expected header {','.join(SIMPLE_HEADER)}, got {','.join(header)}; "
                             "for a raw FEC file use format=fec")
        for row in reader:
            if len(row) < 4 or row[3].strip() not in TYPE_INDEX:
                skipped["malformed rows"] += 1
                continue
            paths = tuple(root / p.strip() for p in row[:3])
            if not all(p.is_file() for p in paths):
                skipped["with missing images"] += 1
                continue
            out.append(TripletRecord(paths, row[3].strip()))  # type: ignore[arg-type]
    return _summary(path.name, out, skipped)


def read_url_map(path: str | Path, image_root: str | Path) -> dict[str, Path]:
    """`url,path` CSV (with header) -> {url: local file under image_root}."""
    path, root = Path(path), Path(image_root)
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows or [c.strip() for c in rows[0][:2]] != ["url", "path"]:
        raise ValueError(f"{path}: expected a 'url,path' header")
    return {r[0].strip(): root / r[1].strip() for r in rows[1:] if len(r) >= 2}


def _parse_fec_row(row: list[str]) -> tuple[list[str], list[Box], str, int | None]:
    """(urls, boxes, type, majority odd-one-out 0-based or None on a tie); ValueError when malformed."""
    if len(row) != FEC_COLUMNS:
        raise ValueError(f"{len(row)} columns")
    urls, boxes = [], []
    for i in range(3):
        url, tl_col, br_col, tl_row, br_row = row[5 * i:5 * i + 5]
        left, right, top, bottom = (float(v) for v in (tl_col, br_col, tl_row, br_row))
        if not (0.0 <= left < right <= 1.0 and 0.0 <= top < bottom <= 1.0):
            raise ValueError("box outside [0, 1]")
        urls.append(url.strip())
        boxes.append((left, top, right, bottom))
    ttype = row[15].strip()
    if ttype not in TYPE_INDEX:
        raise ValueError(f"unknown type {ttype}")
    answers = [int(row[k]) for k in range(17, FEC_COLUMNS, 2)]
    if any(a not in (1, 2, 3) for a in answers):
        raise ValueError("answer outside 1..3")
    (top, n_top), *rest = Counter(answers).most_common()
    return urls, boxes, ttype, (None if rest and rest[0][1] == n_top else top - 1)


def read_fec_csv(path: str | Path, url_map: str | Path | dict[str, Path],
                 image_root: str | Path) -> TripletList:
    """Read a raw 28-column FEC annotation file (see the module docstring).

    Args:
        path: the FEC CSV (no header).
        url_map: a `url,path` CSV or a ready {url: file} dict.
        image_root: the folder that the url map's paths are relative to.
    """
    path = Path(path)
    urls = url_map if isinstance(url_map, dict) else read_url_map(url_map, image_root)
    out, skipped = [], Counter()
    with path.open(newline="") as f:
        for row in csv.reader(f):
            if not row or not "".join(row).strip():
                continue
            try:
                row_urls, boxes, ttype, odd = _parse_fec_row(row)
            except ValueError:
                skipped["malformed rows"] += 1
                continue
            if odd is None:
                skipped["without a majority answer"] += 1
                continue
            files = [urls.get(u) for u in row_urls]
            if not all(p is not None and p.is_file() for p in files):
                skipped["with missing images"] += 1
                continue
            order = [i for i in range(3) if i != odd] + [odd]  # anchor, positive, negative
            out.append(TripletRecord(tuple(files[i] for i in order), ttype,  # type: ignore[arg-type]
                                     tuple(boxes[i] for i in order)))  # type: ignore[arg-type]
    return _summary(path.name, out, skipped)


def read_triplets(path: str | Path, image_root: str | Path, fmt: str = "auto",
                  url_map: str | Path | None = None) -> TripletList:
    """Read either format; `fmt='auto'` picks `simple` when the first line is the simple header.

    Returns the triplets as a `TripletList`: a list with `.skipped` = {reason: count} of the rows left out.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"triplet file '{path}' does not exist; check data_root / the csv keys in your "
                                "config (demo: python scripts/make_demo_data.py --out outputs/demo/world)")
    if fmt == "auto":
        with path.open() as f:
            fmt = "simple" if f.readline().replace(" ", "").startswith("anchor,positive") else "fec"
    if fmt == "simple":
        return read_simple_csv(path, image_root)
    if url_map is None:
        raise ValueError(f"{path} is a raw FEC file: set url_map (a 'url,path' CSV) in the config")
    return read_fec_csv(path, url_map, image_root)


def crop_box(img, box: Box | None, margin: float | None = None):
    """Crop a PIL image to a normalised (left, top, right, bottom) face box; None keeps it whole.

    margin None crops the box exactly (its aspect ratio is kept). A number gives the face crop every
    stage shares (`data.face_track`): a square centred on the box, side sqrt(w * h) * (1 + 2 * margin)
    in pixels, black outside the image; then training augmentation and the eval resize + centre crop
    see the same framing.
    """
    if box is None:
        return img
    w, h = img.size
    if margin is None:
        x0, y0 = round(box[0] * w), round(box[1] * h)
        return img.crop((x0, y0, max(round(box[2] * w), x0 + 1), max(round(box[3] * h), y0 + 1)))
    return crop_face(img, box, margin)


class TripletDataset(Dataset):
    """Triplets as stacked image tensors; each image gets its own draw of `transform`. Streams: it holds the
    distinct image paths and boxes and a (T, 3) index into them, and decodes when a triplet is asked for.

    A triplet with an unreadable image is replaced by the next triplet whose three images read
    (`data.images.first_readable`), so batches keep their shape; its sample says so in `bad`.

    Args:
        records: from `read_triplets` (not kept: the dataset stores them compactly).
        transform: PIL image -> (C, H, W) tensor (training augmentation or `eval_transform`).
        cache: keep decoded, cropped PIL images in memory (small datasets such as the demo world; ignored
            under torchrun, `data.loading.use_cache`). Each DataLoader worker fills its own.
        margin: face-box crop, see `crop_box` (None = the exact box).
        deterministic: `transform` has no randomness (no augmentation), so with `cache` its output
            tensors are kept instead of the PIL images and each image is transformed once.
    Returns per item: images (3, C, H, W) in (anchor, positive, negative) order, type index (int),
        bad: '' or the unreadable image of the requested triplet.
    """

    def __init__(self, records: list[TripletRecord], transform: Callable, cache: bool = False,
                 margin: float | None = None, deterministic: bool = False):
        if not records:
            raise ValueError("no triplets to train on (every row was skipped; see the [triplets] lines above)")
        items, self.index = unique_images(records)  # distinct (path, box); (T, 3) index into them
        self.files = PathArray(p for p, _ in items)
        self.boxes = np.array([(np.nan,) * 4 if b is None else b for _, b in items], np.float64)  # (U, 4)
        self.types = torch.tensor([TYPE_INDEX[r.type] for r in records], dtype=torch.int8)  # (T,)
        self.transform, self.margin, self.deterministic = transform, margin, deterministic
        self.cache = use_cache(cache, "training triplets")
        self._images: dict[int, object] = {}  # image index -> PIL image (cache, augmenting transform)
        self._tensors: dict[int, torch.Tensor] = {}  # image index -> tensor (cache, deterministic transform)
        self.unreadable: set[str] = set()  # met in this process (DataLoader workers keep their own)

    def __len__(self) -> int:
        return len(self.index)

    def image(self, u: int):
        """Distinct image u, decoded and cropped (PIL)."""
        img = self._images.get(u)
        if img is None:
            path, box = self.files[u], self.boxes[u]
            if path in self.unreadable:  # known bad in this process: do not decode it again
                raise UnreadableImageError(path)
            try:
                img = crop_box(load_rgb(path), None if np.isnan(box[0]) else tuple(box.tolist()), self.margin)
            except UnreadableImageError:
                self.unreadable.add(path)
                raise
            if self.cache and not self.deterministic:  # a deterministic cache keeps the tensor instead
                self._images[u] = img
        return img

    def tensor(self, u: int, img=None) -> torch.Tensor:
        """The transformed image u (`img`: its already decoded PIL image, if at hand)."""
        if not (self.cache and self.deterministic):
            return self.transform(self.image(u) if img is None else img)
        x = self._tensors.get(u)
        if x is None:
            x = self._tensors[u] = self.transform(self.image(u) if img is None else img)
        return x

    def _triplet(self, i: int) -> tuple[torch.Tensor, int]:
        keys = self.index[i].tolist()
        # decode all three first, so that a triplet with an unreadable image draws no augmentation
        imgs = [None if self.cache and self.deterministic and u in self._tensors else self.image(u) for u in keys]
        return torch.stack([self.tensor(u, img) for u, img in zip(keys, imgs)]), int(self.types[i])  # (3, C, H, W)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, str]:
        (x, type_id), bad = first_readable(self._triplet, i, len(self), lambda: common_folder(list(self.files)))
        return x, type_id, bad


class ImageListDataset(Dataset):
    """Single images (optionally box-cropped, see `crop_box`) for embedding: item -> (C, H, W) tensor."""

    def __init__(self, items: list[tuple[Path, Box | None]], transform: Callable, margin: float | None = None):
        self.items, self.transform, self.margin = items, transform, margin

    def __len__(self) -> int:
        return len(self.items)

    def _open(self, i: int):
        path, box = self.items[i]
        return crop_box(load_rgb(path), box, self.margin)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.transform(self._open(i))


class HeldOutImages(ImageListDataset):
    """`ImageListDataset` for scoring, item -> (tensor, bad): an unreadable image gives the next readable
    one's tensor (batches keep their shape) and its own path as `bad` ('' when it was read); the scorer
    leaves the triplets that use it out (`expression_finetune.engine.evaluate`)."""

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str]:
        img, bad = first_readable(self._open, i, len(self.items), lambda: common_folder([p for p, _ in self.items]))
        return self.transform(img), bad


def unique_images(records: list[TripletRecord]) -> tuple[list[tuple[Path, Box | None]], torch.Tensor]:
    """Distinct (path, box) images of `records` and a (T, 3) index tensor into them (for evaluation)."""
    index: dict[tuple, int] = {}
    rows = []
    for r in records:
        rows.append([index.setdefault((p, b), len(index)) for p, b in zip(r.paths, r.boxes)])
    return list(index), torch.tensor(rows, dtype=torch.long).view(-1, 3)
