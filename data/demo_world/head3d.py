"""The demo world's 3-D avatar: a stylised head mesh built here, with 26 ARKit-named blend shapes.

    mesh = build_head()          # avatar3d.mesh.BlendShapeMesh, written to avatars/head/mesh.glb
    mesh.target_names            # HEAD_CONTROLS: browInnerUp, ..., jawOpen, tongueOut

Units: the skull is an ellipsoid of half-height 1.25; +Y is up, the face looks down +Z, +X is the
head's own left (the image's right), as in ARKit. Parts: skin, eyes (white, iris), eyelids, brows,
nose, lips, mouth, tongue. A shape is a displacement field applied to the neutral: eyelids stretch
down over the eye, lips and jaw move by smooth weights of position.
"""
from __future__ import annotations

import math

import numpy as np

from avatar3d.mesh import BlendShapeMesh
from avatar3d.render import RenderSettings

HEAD_CONTROLS = [
    "browInnerUp", "browOuterUpLeft", "browOuterUpRight", "browDownLeft", "browDownRight",
    "eyeBlinkLeft", "eyeBlinkRight", "eyeWideLeft", "eyeWideRight", "eyeSquintLeft", "eyeSquintRight",
    "noseSneerLeft", "noseSneerRight", "cheekPuff",
    "mouthSmileLeft", "mouthSmileRight", "mouthFrownLeft", "mouthFrownRight", "mouthStretchLeft",
    "mouthStretchRight", "mouthUpperUpLeft", "mouthUpperUpRight", "mouthPucker", "mouthFunnel",
    "jawOpen", "tongueOut"]
_PARTS = {  # name -> base colour
    "skin": (0.86, 0.66, 0.52), "eye_white": (0.95, 0.95, 0.93), "iris": (0.16, 0.32, 0.45),
    "lid": (0.80, 0.60, 0.48), "brow": (0.28, 0.18, 0.12), "nose": (0.88, 0.62, 0.50),
    "lips": (0.72, 0.30, 0.30), "mouth": (0.18, 0.05, 0.06), "tongue": (0.85, 0.42, 0.45)}
HEAD_RENDER = RenderSettings(size=64)  # the demo's camera and light (the size is the world's image size)
_EYE_Y, _EYE_X, _EYE_R = 0.22, 0.36, 0.17
_MOUTH_Y, _MOUTH_W, _MOUTH_H = -0.52, 0.30, 0.07
_LID_OPEN = 0.12  # share of its closed height an open eyelid keeps


def _sphere(centre, radii, nu: int, nv: int, v_range=(0.0, math.pi)) -> tuple[np.ndarray, np.ndarray]:
    """A UV ellipsoid (or a band of one, polar angle in `v_range`): (V, 3) vertices, (F, 3) triangles
    wound counter-clockwise seen from outside."""
    v = np.linspace(*v_range, nv + 1)
    u = np.linspace(0, 2 * math.pi, nu, endpoint=False)
    vv, uu = np.meshgrid(v, u, indexing="ij")  # (nv + 1, nu)
    pts = np.stack([np.sin(vv) * np.sin(uu), np.cos(vv), np.sin(vv) * np.cos(uu)], -1).reshape(-1, 3)
    pts = pts * np.asarray(radii) + np.asarray(centre)
    faces = []
    for i in range(nv):
        for j in range(nu):
            a, b = i * nu + j, i * nu + (j + 1) % nu
            c, d = a + nu, b + nu
            faces += [(a, c, d), (a, d, b)]
    return pts.astype(np.float32), np.asarray(faces, np.int32)


def _torus(centre, rx: float, ry: float, tube: float, nu: int, nv: int) -> tuple[np.ndarray, np.ndarray]:
    """An elliptic ring in the XY plane (the lips)."""
    u = np.linspace(0, 2 * math.pi, nu, endpoint=False)
    v = np.linspace(0, 2 * math.pi, nv, endpoint=False)
    uu, vv = np.meshgrid(u, v, indexing="ij")
    x = (rx + tube * np.cos(vv)) * np.cos(uu)
    y = (ry + tube * np.cos(vv)) * np.sin(uu)
    z = tube * 0.8 * np.sin(vv)
    pts = (np.stack([x, y, z], -1).reshape(-1, 3) + np.asarray(centre)).astype(np.float32)
    faces = []
    for i in range(nu):
        for j in range(nv):
            a, b = i * nv + j, i * nv + (j + 1) % nv
            c, d = ((i + 1) % nu) * nv + j, ((i + 1) % nu) * nv + (j + 1) % nv
            faces += [(a, c, d), (a, d, b)]
    return pts, np.asarray(faces, np.int32)


def _squash(lid: np.ndarray, height: float) -> np.ndarray:
    """An eyelid (a flat ellipsoid in front of the eye) scaled vertically about its top to `height` of its
    closed height: linear in `height`, so a blend shape interpolates the lid exactly."""
    top = lid[:, 1].max()
    out = lid.copy()
    out[:, 1] = top - (top - lid[:, 1]) * height
    return out


def _smooth(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """0 below lo, 1 above hi, smooth in between (works for lo > hi too)."""
    t = np.clip((x - lo) / (hi - lo), 0, 1)
    return t * t * (3 - 2 * t)


class _Builder:
    def __init__(self):
        self.verts, self.faces, self.part, self.tag = [], [], [], []
        self.n = 0

    def add(self, part: str, tag: str, mesh: tuple[np.ndarray, np.ndarray]) -> None:
        v, f = mesh
        self.verts.append(v)
        self.faces.append(f + self.n)
        self.part += [list(_PARTS).index(part)] * len(f)
        self.tag += [tag] * len(v)
        self.n += len(v)


def build_head() -> BlendShapeMesh:
    """The demo's stylised 3-D head with the shapes of `HEAD_CONTROLS` (deterministic)."""
    b = _Builder()
    skull, skull_f = _sphere((0, 0, 0), (1.0, 1.25, 0.95), 48, 36)
    b.add("skin", "skin", (skull, skull_f))
    eyes, lids = {}, {}
    for side, sx in (("Left", 1), ("Right", -1)):
        c = np.array([sx * _EYE_X, _EYE_Y, 0.80], np.float32)
        eyes[side] = c
        b.add("eye_white", f"eye{side}", _sphere(c, (_EYE_R, _EYE_R * 1.1, 0.07), 20, 12))
        b.add("iris", f"iris{side}", _sphere(c + (0, -0.01, 0.07), (0.075, 0.08, 0.015), 16, 8))
        lid, lid_f = _sphere(c + (0, 0, 0.005), (_EYE_R * 1.1, _EYE_R * 1.22, 0.09), 20, 12)
        lids[side] = lid  # closed; the neutral holds it squashed up to its top
        b.add("lid", f"lid{side}", (_squash(lid, _LID_OPEN), lid_f))
        b.add("brow", f"brow{side}", _sphere(c + (0, 0.3, 0.1), (0.19, 0.035, 0.05), 16, 8))
    b.add("nose", "nose", _sphere((0, -0.12, 0.98), (0.11, 0.17, 0.13), 16, 12))
    b.add("mouth", "mouth", _sphere((0, _MOUTH_Y, 0.86), (_MOUTH_W * 0.95, _MOUTH_H, 0.04), 24, 8))
    b.add("lips", "lips", _torus((0, _MOUTH_Y, 0.90), _MOUTH_W, _MOUTH_H, 0.05, 40, 10))
    b.add("tongue", "tongue", _sphere((0, _MOUTH_Y - 0.02, 0.80), (0.15, 0.04, 0.12), 16, 8))
    verts = np.concatenate(b.verts)
    tag = np.asarray(b.tag)
    x, y, z = verts[:, 0], verts[:, 1], verts[:, 2]
    front = _smooth(z, 0.3, 0.7)
    is_ = lambda *names: np.isin(tag, names)[:, None]  # noqa: E731
    shapes = {}

    def side_w(sx: int) -> np.ndarray:  # weight of the head's left (+1) or right (-1) half
        return _smooth(sx * x, -0.05, 0.12)

    # brows: the whole brow up on the outer side / inner side; down and in for browDown
    for side, sx in (("Left", 1), ("Right", -1)):
        brow = is_(f"brow{side}")
        outer = _smooth(sx * x, _EYE_X - 0.2, _EYE_X + 0.2)[:, None]
        inner = 1 - outer
        skin_above = is_("skin") * (front * _smooth(y, _EYE_Y + 0.1, _EYE_Y + 0.3)
                                    * np.exp(-((x - sx * _EYE_X) / 0.25) ** 2))[:, None]
        shapes[f"browOuterUp{side}"] = (brow * outer + 0.3 * skin_above) * [0, 0.16, 0]
        shapes[f"browDown{side}"] = brow * (inner * [-sx * 0.04, -0.12, 0.02] + outer * [0, -0.05, 0])
        up_inner = brow * inner * [0, 0.15, 0]
        shapes["browInnerUp"] = shapes.get("browInnerUp", 0) + up_inner
        # eyelids: a blink turns the lid down over the eye; wide turns it further up; a squint half-way
        lid = is_(f"lid{side}")[:, 0]
        for name, height in ((f"eyeBlink{side}", 1.0), (f"eyeWide{side}", 0.04), (f"eyeSquint{side}", 0.55)):
            d = np.zeros_like(verts)
            d[lid] = _squash(lids[side], height) - verts[lid]
            if name.startswith("eyeWide"):  # the eye opens a little wider too
                eye = is_(f"eye{side}", f"iris{side}")[:, 0]
                d[eye] = (verts[eye] - eyes[side]) * [0.06, 0.12, 0.0]
            if name.startswith("eyeSquint"):  # the cheek below rises too
                cheek = is_("skin")[:, 0] * front * np.exp(-((x - sx * 0.42) ** 2 + (y + 0.12) ** 2) / 0.03)
                d += cheek[:, None] * [0, 0.07, 0.02]
            shapes[name] = d
        # nose sneer: that side of the nose and the skin beside it up
        near_nose = (is_("nose")[:, 0] * side_w(sx) + is_("skin")[:, 0] * front
                     * np.exp(-((x - sx * 0.16) ** 2 + (y + 0.05) ** 2) / 0.02))
        shapes[f"noseSneer{side}"] = near_nose[:, None] * [sx * 0.02, 0.08, 0.0]
        # mouth corners: smile up and out, frown down, stretch out; upper lip up on that side
        mouthy = is_("lips", "mouth")[:, 0]
        corner = mouthy * _smooth(sx * x, 0.05, _MOUTH_W)
        cheek = is_("skin")[:, 0] * front * np.exp(-((x - sx * 0.35) ** 2 + (y - _MOUTH_Y - 0.1) ** 2) / 0.02)
        shapes[f"mouthSmile{side}"] = corner[:, None] * [sx * 0.06, 0.13, -0.02] + cheek[:, None] * [0, 0.06, 0.03]
        shapes[f"mouthFrown{side}"] = corner[:, None] * [0, -0.12, 0]
        shapes[f"mouthStretch{side}"] = corner[:, None] * [sx * 0.12, -0.02, -0.02]
        upper = mouthy * _smooth(y, _MOUTH_Y, _MOUTH_Y + 0.05) * _smooth(sx * x, -0.05, 0.1)
        shapes[f"mouthUpperUp{side}"] = upper[:, None] * [0, 0.08, 0.01]
    # cheeks puff out around (+-0.5, -0.35)
    puff = is_("skin")[:, 0] * front * np.exp(-((np.abs(x) - 0.5) ** 2 + (y + 0.35) ** 2) / 0.04)
    shapes["cheekPuff"] = puff[:, None] * np.c_[np.sign(x) * 0.1, np.zeros_like(x), np.full_like(x, 0.06)]
    # lips: pucker pulls them in and forward; funnel rounds them open
    lips = is_("lips", "mouth")[:, 0]
    dx, dy = x, y - _MOUTH_Y
    shapes["mouthPucker"] = lips[:, None] * np.c_[-0.45 * dx, -0.3 * dy, np.full_like(x, 0.12)]
    shapes["mouthFunnel"] = lips[:, None] * np.c_[-0.3 * dx, 1.4 * dy, np.full_like(x, 0.08)]
    # jaw: everything below the mouth line drops, the chin most
    below = _smooth(y, _MOUTH_Y + 0.02, _MOUTH_Y - 0.06) * (is_("lips", "mouth", "tongue")[:, 0]
                                                           + is_("skin")[:, 0] * front * _smooth(z, 0.5, 0.8))
    chin = is_("skin")[:, 0] * front * _smooth(y, _MOUTH_Y - 0.05, -1.0) * _smooth(np.abs(x), 0.6, 0.2)
    drop = np.maximum(below, chin)
    shapes["jawOpen"] = drop[:, None] * [0, -0.3, -0.05]
    shapes["tongueOut"] = is_("tongue") * [0, -0.06, 0.32]
    targets = np.stack([np.broadcast_to(np.asarray(shapes[n], np.float32), verts.shape) for n in HEAD_CONTROLS])
    faces = np.concatenate(b.faces)
    colors = np.asarray(list(_PARTS.values()), np.float32)
    return BlendShapeMesh(verts, faces, targets.astype(np.float32), list(HEAD_CONTROLS),
                          np.asarray(b.part, np.int32), list(_PARTS), colors, "demo head (data/demo_world/head3d.py)")
