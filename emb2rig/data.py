"""Stage-3b data: unlabeled actor faces mixed with avatar renders whose rigs are known.

    train_set, val_set = build_sets(avatars, [faces_root], image_size=64, val_fraction=0.1, margin=0.3)
    batch = train_set.__getitems__([0, 5, 9])   # 'image' uint8 (3, 3, S, S), 'source', 'rig' (3, max_n),
                                                # 'skipped' (3,), 'bad' (3 file names, '' when read)
    batch["target"] = sample_targets(batch["source"], n_avatars=3, per_sample=2, generator=g)   # (3, 2)

Faces are framed as in every stage (`data.face_track`): a folder with a `face_boxes.csv` gives each
image's face box and the square crop with `margin` around it is used; without one the images are
taken as face crops already. Both sets stream (decoded in the DataLoader workers) unless `cache`
decodes them into memory once (small worlds, one process). Avatar renders are used whole (the pixel
loss compares whole renders); `Frozen.encode` crops them to the avatar's `face_box` on the way into the encoder.

An unreadable face or render is replaced by the next readable face (or row of the same avatar, see
`data.avatars`) and flagged in `skipped` and `bad`, which every batch carries so that the engine can count
and name it.

Validation holds out whole actors of the face folder (a stable hash of the actor folder name)
and the avatar rows `data.avatars` holds out; it never reads the demo world's `eval/` folder,
nor any augmentation (there is none: the encoder saw its augmentations in stage 2).
"""
from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from data.avatars import Avatar, AvatarRigDataset
from data.face_track import read_face_boxes
from data.images import (
    UnreadableImageError,
    box_array,
    common_folder,
    first_readable,
    list_image_paths,
    load_face,
    main_process,
)
from data.loading import PathArray, use_cache


def split_faces(roots: list[str | Path], val_fraction: float) -> tuple[list[str], list[str]]:
    """(train, val) face files under the folders `roots`.

    An image's actor is its parent folder (relative to its root); an actor is held out as a whole
    when a stable hash (CRC32) of that folder falls below `val_fraction`, and at least one actor
    (the smallest hash) is held out whenever there are two or more."""
    files = [(f, f"{i}/{Path(os.path.relpath(os.path.dirname(f), root)).as_posix()}")
             for i, root in enumerate(roots) for f in list_image_paths(root)]
    score = {a: zlib.crc32(a.split("/", 1)[1].encode()) / 2**32 for a in {a for _, a in files}}
    held = {a for a, h in score.items() if h < val_fraction}
    if not held and len(score) > 1:
        held = {min(score, key=score.get)}
    return [f for f, a in files if a not in held], [f for f, a in files if a in held]


class MixedSet(Dataset):
    """Actor faces (source -1) then avatar renders (source = avatar index); streams like `renders`: faces
    are decoded when asked for (in the DataLoader worker), or all once with `cache`.

    Args:
        faces: face image files; an unreadable one is served as the next readable face (wrapping
            around) and flagged in its batch (`skipped`, `bad`), as are unreadable renders.
        renders: AvatarRigDataset of the same image size (rig padded to the largest avatar).
        image_size: faces are resized (area) to this square size (the renderer's size).
        boxes: {face file: normalised face box} (`read_face_boxes`); files without one are used whole.
        margin: face-crop margin around a box.
        cache: decode every face once into memory (`data.loading.use_cache`; give `renders` its own cache too).
    """

    def __init__(self, faces: list[str | Path], renders: AvatarRigDataset, image_size: int,
                 boxes: dict | None = None, margin: float = 0.3, cache: bool = False):
        self.faces, self.renders, self.image_size, self.margin = PathArray(faces), renders, image_size, margin
        self.boxes = box_array(self.faces, boxes or {})  # (n_faces, 4), NaN = whole image
        self.n_faces, self.n_renders = len(self.faces), len(renders)
        self.source = torch.cat([torch.full((self.n_faces,), -1, dtype=torch.long), renders.avatar])  # (N,)
        self.rig = torch.cat([torch.zeros(self.n_faces, renders.max_controls), renders.rig])  # (N, max_n)
        self._face_unreadable: list[str] = []  # met in this process (DataLoader workers keep their own)
        self._bad: set[str] = set()
        self._cache = self._decode_all() if use_cache(cache, "actor faces") else None

    @property
    def unreadable(self) -> list[str]:
        """Unreadable faces and renders met in this process."""
        return self._face_unreadable + self.renders.unreadable

    def _decode(self, j: int) -> np.ndarray:
        path = self.faces[j]
        if path in self._bad:  # known bad in this process: do not decode it again
            raise UnreadableImageError(path)
        try:
            im = load_face(path, self.boxes[j], self.margin)
        except UnreadableImageError:
            self._bad.add(path)
            self._face_unreadable.append(path)
            raise
        if im.size != (self.image_size, self.image_size):
            im = im.resize((self.image_size, self.image_size), Image.Resampling.BOX)
        return np.asarray(im, np.uint8)  # (S, S, 3)

    def read_face(self, j: int) -> tuple[int, np.ndarray]:
        """(the face served for face j, its image (S, S, 3) uint8): j, or the next readable face."""
        where = lambda: f"{common_folder(list(self.faces))} (check the faces folders in your config)"
        (src, img), _ = first_readable(lambda k: (k, self._decode(k)), j, self.n_faces, where)
        return src, img

    def _decode_all(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(served face (n_faces,), faces (n_faces, 3, S, S) uint8), decoded once."""
        src, imgs = self._read_faces(list(range(self.n_faces)))
        bad = self._face_unreadable
        if bad and main_process():
            print(f"[data] {len(bad)} of {self.n_faces} face images ({len(bad) / self.n_faces:.2%}) could not be read "
                  f"(corrupt image), each replaced by the next readable face: {', '.join(bad[:3])}"
                  f"{' ...' if len(bad) > 3 else ''}", flush=True)
        return src, imgs.contiguous()

    def _read_faces(self, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(served faces (B,), their images (B, 3, S, S) uint8) of faces `idx`, decoded now."""
        if not idx:
            size = self.image_size
            return torch.zeros(0, dtype=torch.long), torch.zeros(0, 3, size, size, dtype=torch.uint8)
        src, imgs = zip(*(self.read_face(j) for j in idx))
        return torch.tensor(src), torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2)

    def __len__(self) -> int:
        return len(self.source)

    def _faces(self, idx: list[int]) -> dict:
        if self._cache is not None:
            i = torch.as_tensor(idx, dtype=torch.long)
            src, image = self._cache[0][i], self._cache[1][i]
        else:
            src, image = self._read_faces(idx)
        skipped = src != torch.as_tensor(idx, dtype=torch.long)
        return {"image": image, "source": torch.full((len(idx),), -1, dtype=torch.long),
                "rig": torch.zeros(len(idx), self.renders.max_controls), "skipped": skipped,
                "bad": [self.faces[j] if s else "" for j, s in zip(idx, skipped.tolist())]}

    def __getitems__(self, idx: list[int]) -> dict:
        """A stacked batch in the order of `idx`: 'image' (B, 3, S, S) uint8, 'source' (B,), 'rig' (B, max_n),
        'skipped' (B,) bool, 'bad' (B strings: the unreadable file, or '')."""
        faces = [j for j in idx if j < self.n_faces]
        renders = [j - self.n_faces for j in idx if j >= self.n_faces]
        f = self._faces(faces)
        if not renders:
            return f
        r = self.renders.__getitems__(renders)
        r = {"image": r["image"], "source": r["avatar"], "rig": r["rig"], "skipped": r["skipped"], "bad": r["bad"]}
        if not faces:
            return r
        is_render = torch.tensor([j >= self.n_faces for j in idx])
        stacked = torch.cat([torch.nonzero(~is_render).flatten(), torch.nonzero(is_render).flatten()])
        inv = torch.empty(len(idx), dtype=torch.long)  # row b of the batch = row inv[b] of faces-then-renders
        inv[stacked] = torch.arange(len(idx))
        out = {k: torch.cat([f[k], r[k]])[inv] for k in ("image", "source", "rig", "skipped")}
        return out | {"bad": [(f["bad"] + r["bad"])[k] for k in inv.tolist()]}

    def __getitem__(self, i: int) -> dict:
        return {k: v[0] for k, v in self.__getitems__([i]).items()}


def build_sets(avatars: list[Avatar], faces: list[str | Path], image_size: int,
               val_fraction: float, margin: float = 0.3, cache: bool = False) -> tuple[MixedSet, MixedSet]:
    """(train, val) MixedSets over the given avatars and the faces under the folders `faces`
    (each folder's `face_boxes.csv`, when it has one, frames its faces); `cache`: decode all into memory."""
    f_train, f_val = split_faces(faces, val_fraction)
    if not f_val:
        raise ValueError(f"no validation actors under {[str(f) for f in faces]} (val_fraction={val_fraction})")
    boxes = read_face_boxes(faces)
    sets = (MixedSet(f, AvatarRigDataset(avatars, image_size, split, val_fraction, cache), image_size, boxes, margin,
                     cache) for f, split in ((f_train, "train"), (f_val, "val")))
    return tuple(sets)  # type: ignore[return-value]


def sample_targets(source: torch.Tensor, n_avatars: int, per_sample: int,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Distinct target avatars per sample; an avatar render always gets its own avatar first.

    Args:
        source: (B,) -1 for faces, else the avatar index of the render.
        per_sample: targets per sample (clamped to n_avatars).
    Returns: (B, T) long.
    """
    T = min(per_sample, n_avatars)
    scores = torch.rand(len(source), n_avatars, generator=generator)  # (B, A) random order
    own = source >= 0
    scores[own, source[own]] = -1.0  # sorts first
    return scores.argsort(dim=1)[:, :T].to(source.device)
