"""A one-page overview PNG: actors in every expression class and each avatar at each class."""
from pathlib import Path

import cv2
import numpy as np

from .actors import render_actor, sample_identity, sample_pose
from .avatar_art import render_avatar
from .avatars import AVATARS, au_to_rig
from .expressions import EXPRESSION_CLASSES, PROTOTYPES

TILE, LABEL, LEFT = 128, 18, 96


def _tile(img, text):
    """(size, size, 3) RGB -> (TILE + LABEL, TILE, 3) with the real pixels enlarged and a caption."""
    big = cv2.resize(img, (TILE, TILE), interpolation=cv2.INTER_NEAREST if img.shape[0] < TILE else cv2.INTER_AREA)
    strip = np.full((LABEL, TILE, 3), 255, np.uint8)
    cv2.putText(strip, text, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([big, strip], 0)


def _row(tiles, title):
    head = np.full((TILE + LABEL, LEFT, 3), 255, np.uint8)
    for k, part in enumerate(title.split("\n")):
        cv2.putText(head, part, (4, 55 + 18 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([head] + tiles, 1)


def make_contact_sheet(path, seed: int = 0, image_size: int = 64, n_actors: int = 4) -> np.ndarray:
    """Write the sheet (actors x classes, then avatars x classes) to `path`; returns it (RGB)."""
    rows = []
    for a in range(n_actors):  # the first train actors of this seed, full-intensity prototypes
        idn = sample_identity(np.random.default_rng([seed, 1, a]))
        tiles = []
        for c, name in enumerate(EXPRESSION_CLASSES):
            img, _ = render_actor(idn, PROTOTYPES[c], sample_pose(np.random.default_rng([seed, 99, a, c])), image_size)
            tiles.append(_tile(img, name))
        rows.append(_row(tiles, f"actor_{a:04d}"))
    for nm, s in AVATARS.items():
        tiles = [_tile(render_avatar(nm, au_to_rig(nm, PROTOTYPES[c]), image_size), name)
                 for c, name in enumerate(EXPRESSION_CLASSES)]
        rows.append(_row(tiles, f"{nm}\n{len(s['controls'])} controls"))
    sheet = np.concatenate(rows, 0)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    return sheet
