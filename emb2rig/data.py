"""Stage-3b data: unlabeled actor faces mixed with avatar renders whose rigs are known.

    train_set, val_set = build_sets(avatars, [faces_root], image_size=64, val_fraction=0.1, margin=0.3)
    batch = train_set.__getitems__([0, 5, 9])   # 'image' uint8 (3, 3, S, S), 'source', 'skipped' (3,), 'rig' (3, max_n)
    batch["target"] = sample_targets(batch["source"], n_avatars=3, per_sample=2, generator=g)   # (3, 2)

Faces are framed as in every stage (`data.face_track`): a folder with a `face_boxes.csv` gives each
image's face box and the square crop with `margin` around it is stored; without one the images are
taken as face crops already. Avatar renders are stored whole (the pixel loss compares whole renders);
`Frozen.encode` crops them to the avatar's `face_box` on the way into the encoder.

An unreadable face or render is replaced by the next readable face (or row of the same avatar, see
`data.avatars`) and flagged in `skipped`, which every batch carries so that the engine can count it.

Validation holds out whole actors of the face folder (a stable hash of the actor folder name)
and the avatar rows `data.avatars` holds out; it never reads the demo world's `eval/` folder,
nor any augmentation (there is none: the encoder saw its augmentations in stage 2).
"""
from __future__ import annotations

import bisect
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from data.avatars import Avatar, AvatarRigDataset
from data.face_track import read_face_boxes
from data.images import UnreadableImageError, common_folder, list_images, load_face, main_process


def split_faces(roots: list[str | Path], val_fraction: float) -> tuple[list[Path], list[Path]]:
    """(train, val) face files under the folders `roots`.

    An image's actor is its parent folder (relative to its root); an actor is held out as a whole
    when a stable hash (CRC32) of that folder falls below `val_fraction`, and at least one actor
    (the smallest hash) is held out whenever there are two or more."""
    files = [(f, f"{i}/{f.parent.relative_to(root).as_posix()}") for i, root in enumerate(map(Path, roots))
             for f in list_images(root)]
    score = {a: zlib.crc32(a.split("/", 1)[1].encode()) / 2**32 for a in {a for _, a in files}}
    held = {a for a, h in score.items() if h < val_fraction}
    if not held and len(score) > 1:
        held = {min(score, key=score.get)}
    return [f for f, a in files if a not in held], [f for f, a in files if a in held]


class MixedSet(Dataset):
    """Actor faces (source -1) and avatar renders (source = avatar index), decoded once into memory.

    Args:
        faces: face image files; an unreadable one is replaced by the next readable face, flagged in
            `skipped` (N,) and listed in `unreadable` (as are the renders' unreadable files).
        renders: AvatarRigDataset of the same image size (rig padded to the largest avatar).
        image_size: faces are resized (area) to this square size (the renderer's size).
        boxes: {face file: normalised face box} (`read_face_boxes`); files without one are used whole.
        margin: face-crop margin around a box.
    """

    def __init__(self, faces: list[Path], renders: AvatarRigDataset, image_size: int,
                 boxes: dict | None = None, margin: float = 0.3):
        imgs, bad = [], []
        boxes = boxes or {}
        for f in faces:
            try:
                im = load_face(f, boxes, margin)
            except UnreadableImageError:
                imgs.append(None)
                bad.append(str(f))
                continue
            if im.size != (image_size, image_size):
                im = im.resize((image_size, image_size), Image.Resampling.BOX)
            imgs.append(np.asarray(im, np.uint8))
        face_skipped = torch.tensor([im is None for im in imgs], dtype=torch.bool)  # (n_faces,)
        if bad:
            good = [j for j, im in enumerate(imgs) if im is not None]
            if not good:
                raise RuntimeError(f"none of the {len(faces)} face images under {common_folder(faces)} can be read "
                                   "(corrupt or not images); check the faces folders in your config")
            for j in range(len(imgs)):  # the next readable face, wrapping around
                if imgs[j] is None:
                    imgs[j] = imgs[good[bisect.bisect(good, j) % len(good)]]
            if main_process():
                print(f"[data] {len(bad)} of {len(faces)} face images ({len(bad) / len(faces):.2%}) could not be read "
                      f"(corrupt image), each replaced by the next readable face: {', '.join(bad[:3])}"
                      f"{' ...' if len(bad) > 3 else ''}", flush=True)
        n_max = renders.max_controls
        face_img = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2) if imgs else \
            torch.zeros(0, 3, image_size, image_size, dtype=torch.uint8)
        self.image = torch.cat([face_img, renders.image]).contiguous()  # (N, 3, S, S) uint8
        self.source = torch.cat([torch.full((len(face_img),), -1, dtype=torch.long), renders.avatar])  # (N,)
        self.rig = torch.cat([torch.zeros(len(face_img), n_max), renders.rig])  # (N, max_n)
        self.skipped = torch.cat([face_skipped, renders.skipped])  # (N,) bool
        self.unreadable = bad + renders.unreadable
        self.n_faces, self.n_renders = len(face_img), len(renders)

    def __len__(self) -> int:
        return len(self.source)

    def __getitems__(self, idx: list[int]) -> dict[str, torch.Tensor]:
        i = torch.as_tensor(idx, dtype=torch.long)
        return {"image": self.image[i], "source": self.source[i], "rig": self.rig[i], "skipped": self.skipped[i]}

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([i]).items()}


def build_sets(avatars: list[Avatar], faces: list[str | Path], image_size: int,
               val_fraction: float, margin: float = 0.3) -> tuple[MixedSet, MixedSet]:
    """(train, val) MixedSets over the given avatars and the faces under the folders `faces`
    (each folder's `face_boxes.csv`, when it has one, frames its faces)."""
    f_train, f_val = split_faces(faces, val_fraction)
    if not f_val:
        raise ValueError(f"no validation actors under {[str(f) for f in faces]} (val_fraction={val_fraction})")
    boxes = read_face_boxes(faces)
    train = MixedSet(f_train, AvatarRigDataset(avatars, image_size, "train", val_fraction), image_size, boxes, margin)
    val = MixedSet(f_val, AvatarRigDataset(avatars, image_size, "val", val_fraction), image_size, boxes, margin)
    return train, val


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
