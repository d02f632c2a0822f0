"""A blend-shape mesh -> the avatar format stages 3a/3b read (`rigs.csv`, images, `avatar.yaml`).

    write_mesh_avatar(mesh, "avatars/ict", MeshAvatarSettings(count=3000, seed=0))

The rigs look like animation, not noise: most rows move a few controls (left/right pairs mostly
together), some rows are the neutral. The controls are the mesh's target names; `avatar.yaml` gets
the eye and mouth boxes (projected from where the eye shapes (eyeBlink*, eyeSquint*, eyeWide*)
and mouth shapes (mouth*, lip*; else jaw*) move their vertices, from named parts,
or given), the face box (the projected mesh), `mesh: mesh.glb` (the rendered mesh, for test mode's
exports) and, where controls are ARKit-named, `arkit_names`. Nothing downstream knows it was a mesh.
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from avatar3d.arkit import arkit_map
from avatar3d.mesh import BlendShapeMesh, write_glb
from avatar3d.render import Camera, MeshRenderer, RenderSettings

MESH_FILE = "mesh.glb"
_EYE = re.compile(r"eye(blink|squint|wide|lid)", re.I)
_MOUTH = re.compile(r"(mouth|lip)", re.I)
_JAW = re.compile(r"jaw", re.I)
_SIDE = [(re.compile(r"(left|_l|\.l|_lf)$", re.I), 0), (re.compile(r"(right|_r|\.r|_rt)$", re.I), 1)]


@dataclass
class MeshAvatarSettings:
    """Args:
        count: rendered (rig, image) pairs.
        seed: the rig sampler's seed.
        display_name: written to avatar.yaml (default: the folder name).
        render: renderer settings (size, light, background, camera).
        mean_active: mean number of moving controls (a left/right pair counts once) per row.
        neutral_fraction: share of rows at the neutral (all zeros); row 0 is always neutral.
        pair_asymmetry: chance that a pair moves one side only (else both, with a small difference).
        eye_boxes / mouth_box: given boxes [x0, y0, x1, y1] (normalised); None = found (see module doc).
        eye_parts / mouth_parts: part names whose vertices make the boxes, instead of the moving shapes.
        arkit_names: {control: ARKit name} overrides for controls whose names do not say it.
    """
    count: int = 2000
    seed: int = 0
    display_name: str | None = None
    render: RenderSettings = field(default_factory=RenderSettings)
    mean_active: float = 3.0
    neutral_fraction: float = 0.05
    pair_asymmetry: float = 0.25
    eye_boxes: list[list[float]] | None = None
    mouth_box: list[float] | None = None
    eye_parts: list[str] | None = None
    mouth_parts: list[str] | None = None
    arkit_names: dict[str, str] | None = None


def side_of(name: str) -> int | None:
    """0 for a left control, 1 for a right one, None otherwise (suffixes Left/_L/.L, Right/_R/.R)."""
    for pattern, side in _SIDE:
        if pattern.search(name):
            return side
    return None


def control_units(names: list[str]) -> list[list[int]]:
    """Controls grouped into units that move together: a left/right pair, or one control."""
    def stem(n: str) -> str:
        for pattern, _ in _SIDE:
            n = pattern.sub("", n)
        return n

    units: dict[str, list[int]] = {}
    for i, n in enumerate(names):
        units.setdefault(stem(n) if side_of(n) is not None else n + "\0", []).append(i)
    return list(units.values())


def sample_rigs(names: list[str], count: int, rng: np.random.Generator, mean_active: float = 3.0,
                neutral_fraction: float = 0.05, pair_asymmetry: float = 0.25) -> np.ndarray:
    """(count, n) rigs in [0, 1]: few active units per row, pairs mostly symmetric, neutral rows included."""
    units = control_units(names)
    rigs = np.zeros((count, len(names)), np.float32)
    for r in range(1, count):
        if rng.random() < neutral_fraction:
            continue
        k = min(1 + rng.poisson(max(mean_active - 1, 0)), len(units))
        for u in rng.choice(len(units), size=k, replace=False):
            v = rng.uniform(0.15, 1.0) ** 0.8
            idx = units[u]
            if len(idx) == 2 and rng.random() < pair_asymmetry:
                rigs[r, idx[rng.integers(2)]] = v
            else:
                rigs[r, idx] = np.clip(v + rng.normal(0, 0.08, len(idx)), 0, 1)
    return rigs


def _box(xy: np.ndarray, pad: float = 0.15) -> list[float]:
    lo, hi = xy.min(0), xy.max(0)
    d = (hi - lo) * pad + 0.01
    lo, hi = np.clip(lo - d, 0, 1), np.clip(hi + d, 0, 1)
    return [round(float(v), 4) for v in (lo[0], lo[1], hi[0], hi[1])]


def _moved_by(mesh: BlendShapeMesh, pattern: re.Pattern, side: int | None = None, share: float = 0.2) -> np.ndarray:
    """(K, 3) where the matching shapes' moving vertices (moved by at least `share` of the largest move) are,
    at the neutral and at each shape's full weight: the region those shapes move through."""
    t = [i for i, n in enumerate(mesh.target_names) if pattern.search(n) and (side is None or side_of(n) == side)]
    if not t:
        return np.zeros((0, 3), np.float32)
    move = np.linalg.norm(mesh.targets[t], axis=2).max(0)  # (V,)
    if move.max() <= 0:
        return np.zeros((0, 3), np.float32)
    ids = np.flatnonzero(move >= share * move.max())
    return np.concatenate([mesh.vertices[ids], *(mesh.vertices[ids] + mesh.targets[k, ids] for k in t)])


def _part_points(mesh: BlendShapeMesh, parts: list[str]) -> np.ndarray:
    missing = sorted(set(parts) - set(mesh.parts))
    if missing:
        raise ValueError(f"{mesh.source}: no parts named {missing}; it has {mesh.parts}")
    return mesh.vertices[np.unique(mesh.faces[np.isin(mesh.face_part, [mesh.parts.index(p) for p in parts])])]


def region_boxes(mesh: BlendShapeMesh, camera: Camera, s: MeshAvatarSettings) -> dict:
    """Eye boxes, mouth box and face box in normalised image coordinates (see the module docstring)."""
    eyes = s.eye_boxes
    if eyes is None:
        if s.eye_parts:
            groups = [_part_points(mesh, [p]) for p in s.eye_parts]
        else:
            groups = [g for side in (0, 1) if len(g := _moved_by(mesh, _EYE, side))] or [_moved_by(mesh, _EYE)]
        if not all(len(g) for g in groups):
            raise ValueError(f"{mesh.source}: no eye shapes (eyeBlink*, eyeSquint*, eyeWide*) or eye parts to find "
                             "the eye boxes from; give eye_boxes or eye_parts")
        eyes = sorted((_box(camera.project(g)) for g in groups), key=lambda b: b[0])
    mouth = s.mouth_box
    if mouth is None:
        pts = _part_points(mesh, s.mouth_parts) if s.mouth_parts else _moved_by(mesh, _MOUTH, share=0.5)
        if not len(pts) and not s.mouth_parts:
            pts = _moved_by(mesh, _JAW, share=0.5)
        if not len(pts):
            raise ValueError(f"{mesh.source}: no mouth shapes (mouth*, lip*, jaw*) or mouth parts to find the "
                             "mouth box from; give mouth_box or mouth_parts")
        mouth = _box(camera.project(pts))
    return {"eye_boxes": eyes, "mouth_box": mouth, "face_box": _box(camera.project(mesh.vertices), 0.02)}


def write_mesh_avatar(mesh: BlendShapeMesh, out_dir: str | Path, s: MeshAvatarSettings | None = None) -> Path:
    """Render `s.count` sampled rigs of `mesh` into the avatar folder `out_dir`; returns it."""
    s = s or MeshAvatarSettings()
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rigs = sample_rigs(mesh.target_names, s.count, np.random.default_rng(s.seed), s.mean_active,
                       s.neutral_fraction, s.pair_asymmetry)
    boxes = region_boxes(mesh, Camera(mesh.vertices, s.render), s)
    renderer = MeshRenderer(mesh, s.render)
    try:
        rows = []
        for i, rig in enumerate(rigs):
            name = f"images/{i:05d}.png"
            Image.fromarray(renderer.render(rig)).save(out / name)
            rows.append([name, *(f"{v:.4f}" for v in rig)])
    finally:
        renderer.release()
    with (out / "rigs.csv").open("w", newline="") as f:
        csv.writer(f).writerows([["image", *mesh.target_names], *rows])
    write_glb(out / MESH_FILE, mesh)
    meta = {"display_name": s.display_name or out.name, "controls": list(mesh.target_names),
            "image_size": s.render.size, **boxes, "mesh": MESH_FILE,
            "render": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(s.render).items()}}
    names = arkit_map(mesh.target_names, s.arkit_names)
    if names:
        meta["arkit_names"] = names
    (out / "avatar.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    return out
