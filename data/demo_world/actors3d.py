"""3-D shaded actors: the demo head (head3d.py) with ears, neck, shoulders and hair, reshaped per identity.

    idn = sample_identity3d(rng)                            # shape, colours, hair, light, background
    img, bbox = render_actor3d(idn, au, sample_pose3d(rng), 128)

Same contract as actors.render_actor; the expression is the AU vector through the head avatar's
ground-truth map `au_to_rig("head", au)`. An identity is a smooth map of space applied to the neutral
and to every neutral + delta (the deltas are recomputed), so every blend shape still fits the new face.
One MeshRenderer per process and size; identities, light and pose change it through `update`.
"""
import dataclasses
import functools

import numpy as np

from avatar3d.mesh import BlendShapeMesh
from avatar3d.render import MeshRenderer, RenderSettings

from .actors import HAIR, IRIS, SKIN
from .avatars import au_to_rig
from .head3d import _PARTS, _smooth, _sphere, build_head

PARTS = list(_PARTS) + ["hair", "shirt"]
_EXTRA = [  # (tag, part, centre, radii, nu, nv): rigid pieces with no blend shapes
    ("ear", "skin", (1.0, 0.02, -0.08), (0.1, 0.22, 0.13), 12, 8),
    ("ear", "skin", (-1.0, 0.02, -0.08), (0.1, 0.22, 0.13), 12, 8),
    ("neck", "skin", (0.0, -1.45, -0.15), (0.42, 0.75, 0.40), 20, 10),
    ("body", "shirt", (0.0, -2.45, -0.25), (1.7, 0.6, 0.75), 32, 12)]
STYLES = ("bald", "short", "receding", "fringe")
# the camera frames the plain head (half-height 1.25) at margin 1.3: the face box's half-height is near
# actors.FACE_HALF of the picture, with room for the largest identity, zoom and shift
ACTOR3D_RENDER = RenderSettings(size=128, margin=1.3)
# the face box is the projected front of the skull (crown to chin) scaled about its centre to the box
# YuNet, test mode's detector, puts on these heads: width 0.92, height 0.87 (150 random faces at 128 px,
# std 0.05; the centres agree on average, spread 0.03-0.04 of the face size). The drawn actors' outline
# boxes already agree with YuNet's (size 0.99), so both kinds of actor are framed as test mode frames a
# real face.
# tests/test_actors3d.py checks the agreement.
BOX_SCALE = (0.92, 0.87)
# what a world made with 3-D actors records (world.json `actors_3d_version`), so a run does not reuse a world
# of an older kind: 1 = skull-front boxes, 2 = boxes in YuNet's framing (BOX_SCALE)
ACTORS3D_VERSION = 2
NEUTRAL_POSE3D = dict(yaw=0.0, pitch=0.0, roll=0.0, dx=0.0, dy=0.0, scale=1.0, light=1.0, side=0.0)
_EYE = np.array([0.36, 0.22, 0.80])  # head3d's left eye centre; the right one mirrors it
_HAIR_P = np.array([3, 3, 2, 2, 1.5, 1, 1, 0.25, 0.25]) / 14  # actors.HAIR: natural colours mostly
_MESHES: dict[int, BlendShapeMesh] = {}


@functools.lru_cache(maxsize=1)
def _base() -> tuple[BlendShapeMesh, np.ndarray]:
    """The head with the extra pieces, and (V,) vertex tags: skull, eye, brow, nose, mouth, ear, neck, body."""
    head = build_head()
    vpart = np.zeros(len(head.vertices), np.int64)
    vpart[head.faces.ravel()] = np.repeat(head.face_part, 3)
    names = np.array(["skull", "eye", "eye", "eye", "brow", "nose", "mouth", "mouth", "mouth"])
    verts, faces, fpart, tags = [head.vertices], [head.faces], [head.face_part], [names[vpart]]
    n = len(head.vertices)
    for tag, part, c, r, nu, nv in _EXTRA:
        v, f = _sphere(c, r, nu, nv)
        verts.append(v)
        faces.append(f + n)
        fpart.append(np.full(len(f), PARTS.index(part), np.int32))
        tags.append(np.full(len(v), tag))
        n += len(v)
    verts = np.concatenate(verts)
    targets = np.zeros((len(head.target_names), len(verts), 3), np.float32)
    targets[:, :len(head.vertices)] = head.targets
    mesh = BlendShapeMesh(verts, np.concatenate(faces), targets, head.target_names, np.concatenate(fpart),
                          PARTS, np.zeros((len(PARTS), 3), np.float32), "demo 3-D actor")
    return mesh, np.concatenate(tags)


def sample_identity3d(rng: np.random.Generator) -> dict:
    """Random identity of a 3-D actor: head shape, feature sizes, hair, colours, light and background.

    Colours are RGB in [0, 1]; skin and hair come from actors.SKIN / HAIR like a drawn actor's.
    """
    skin = np.clip((np.array(SKIN[rng.integers(len(SKIN))]) + rng.normal(0, 8, 3)) / 255 * 0.88, 0, 1)
    hair = np.clip((np.array(HAIR[rng.choice(len(HAIR), p=_HAIR_P)]) + rng.normal(0, 6, 3)) / 255, 0, 1)
    grey = rng.uniform(0.15, 0.9)
    return dict(
        uid=int(rng.integers(2 ** 62)),  # cache key of the identity's mesh
        # shape: per-axis scale, jaw width, chin length, relief (brow ridge, cheekbones, chin), features
        scale=rng.uniform([0.88, 0.94, 0.9], [1.06, 1.06, 1.05]), jaw=rng.uniform(-0.16, 0.08),
        chin=rng.uniform(-0.06, 0.14), relief=rng.uniform(0, [0.07, 0.07, 0.1]),
        eye_gap=rng.uniform(-0.035, 0.035), eye_size=rng.uniform(0.85, 1.1), nose=rng.uniform(0.8, 1.3),
        nose_len=rng.uniform(0.8, 1.4), mouth_w=rng.uniform(0.85, 1.15),
        # hair: style, hairline shift, thickness
        style=STYLES[rng.choice(len(STYLES), p=[0.15, 0.45, 0.15, 0.25])], hairline=rng.uniform(-0.06, 0.06),
        hair_t=rng.uniform(0.03, 0.1),
        # colours, light, flat background (a muted random colour)
        skin=skin, hair=hair, iris=np.array(IRIS[rng.integers(len(IRIS))]) / 255,
        lips=skin * 0.75 + np.array([0.2, 0.02, 0.04]) * rng.uniform(0.3, 1.0), shirt=rng.uniform(0.1, 0.9, 3),
        background=tuple(0.4 * grey + 0.6 * rng.uniform(0.1, 0.9, 3)),
        light=(rng.uniform(-0.8, 0.8), rng.uniform(0.0, 0.9), 1.0), ambient=rng.uniform(0.15, 0.45),
        specular=rng.uniform(0.02, 0.15))


def sample_pose3d(rng: np.random.Generator) -> dict:
    """Per-image head turn (degrees), picture roll / shift / zoom and a light gain with a sideways ramp."""
    return dict(yaw=rng.uniform(-15, 15), pitch=rng.uniform(-10, 10), roll=rng.uniform(-10, 10),
                dx=rng.uniform(-0.04, 0.04), dy=rng.uniform(-0.03, 0.03), scale=rng.uniform(0.92, 1.06),
                light=rng.uniform(0.85, 1.1), side=rng.uniform(-0.3, 0.3))


def _hairline(idn: dict, p: np.ndarray) -> np.ndarray:
    """(..., 3) points -> height of the hairline above them: front, temples, over the ears, nape."""
    phi = np.arctan2(np.abs(p[..., 0]), p[..., 2])  # 0 = straight ahead, pi = the back
    front = {"short": 0.78, "receding": 1.0, "fringe": 0.62, "bald": 9.0}[idn["style"]] + idn["hairline"]
    knots = [front, front, max(front - 0.15, 0.42), 0.38, -0.5, -0.5]  # "bald" keeps a horseshoe at the back
    return np.interp(phi, [0, 0.3, 0.75, 1.35, 2.3, np.pi], knots)


def _deform(idn: dict, p: np.ndarray, tag: np.ndarray) -> np.ndarray:
    """The identity's map of space: (..., V, 3) points, tag (V,) per vertex -> (..., V, 3) float32.

    Feature sizes scale their part about its centre, then smooth fields of position move the eyes apart,
    narrow or widen the jaw and lengthen the chin (each monotonic, so nothing folds), then the whole scales.
    """
    p = p.astype(np.float64)
    out = p.copy()
    eye = (tag == "eye")[:, None]  # eyeballs, irises and lids grow about their eye's centre
    c = _EYE * np.where(p[..., :1] > 0, [1, 1, 1], [-1, 1, 1])  # (..., V, 3)
    out = np.where(eye, c + (p - c) * idn["eye_size"], out)
    nose_c = np.array([0.0, -0.05, 0.86])  # the nose grows out of the face from its root
    grown = nose_c + (p - nose_c) * [idn["nose"], idn["nose"], idn["nose_len"]]
    out = np.where((tag == "nose")[:, None], grown, out)
    out[..., 0] *= np.where(tag == "mouth", idn["mouth_w"], 1.0)
    head = ~np.isin(tag, ["neck", "body"])  # (V,)
    x, y = out[..., 0], out[..., 1]
    x = x + head * idn["eye_gap"] * np.tanh(x / 0.2) * np.exp(-((y - 0.22) / 0.35) ** 2)
    x = x * (1 + head * idn["jaw"] * _smooth(y, -0.1, -1.0))
    y = y - head * idn["chin"] * _smooth(y, -0.66, -1.2)
    brow, cheek, chin = idn["relief"]  # bumps forward: brow ridge, cheekbones, chin
    bump = (brow * np.exp(-(y - 0.45) ** 2 / 0.01 - x ** 2 / 0.25)
            + cheek * np.exp(-((np.abs(x) - 0.45) ** 2 + (y + 0.05) ** 2) / 0.02)
            + chin * np.exp(-x ** 2 / 0.04 - (y + 1.0) ** 2 / 0.03))
    z = out[..., 2] + head * (tag != "ear") * _smooth(out[..., 2], 0.3, 0.7) * bump
    return (np.stack([x, y, z], -1) * idn["scale"]).astype(np.float32)


def _identity_mesh(idn: dict) -> BlendShapeMesh:
    """The identity's mesh (cached by its uid): deformed neutral and deltas, hair, part colours."""
    if idn["uid"] in _MESHES:
        return _MESHES[idn["uid"]]
    base, tag = _base()
    pts = np.concatenate([base.vertices[None], base.vertices[None] + base.targets])  # (1 + T, V, 3)
    pts = _deform(idn, pts, tag)
    skull = tag == "skull"
    above = base.vertices[:, 1] - _hairline(idn, base.vertices)  # (V,) height over the hairline
    lift = idn["hair_t"] * _smooth(above, 0.0, 0.2) * skull  # hair thickness: a constant offset per vertex
    centre = np.array([0, 0.1, 0], np.float32)
    radial = (base.vertices - centre) / np.linalg.norm(base.vertices - centre, axis=1, keepdims=True)
    pts = pts + (lift[:, None] * radial * idn["scale"]).astype(np.float32)
    fpart = base.face_part.copy()
    cen = base.vertices[base.faces].mean(1)  # (F, 3) triangle centres
    fpart[(fpart == 0) & (cen[:, 1] > _hairline(idn, cen))] = PARTS.index("hair")
    skin, hair = idn["skin"], idn["hair"]
    colors = {"skin": skin, "eye_white": (0.93, 0.93, 0.9), "iris": idn["iris"], "lid": skin * 0.92,
              "brow": hair * 0.6, "nose": skin * [1.02, 0.96, 0.95],
              "lips": idn["lips"], "mouth": (0.18, 0.05, 0.06), "tongue": (0.8, 0.4, 0.42), "hair": hair,
              "shirt": idn["shirt"]}
    mesh = BlendShapeMesh(pts[0], base.faces, pts[1:] - pts[0], base.target_names, fpart, PARTS,
                          np.clip([colors[p] for p in PARTS], 0, 1).astype(np.float32), base.source)
    if len(_MESHES) > 16:
        _MESHES.clear()
    _MESHES[idn["uid"]] = mesh
    return mesh


@functools.lru_cache(maxsize=2)
def _renderer(size: int) -> MeshRenderer:
    """The process's renderer for this size (one OpenGL context, made on first use)."""
    return MeshRenderer(build_head(), dataclasses.replace(ACTOR3D_RENDER, size=size))


def render_actor3d(idn: dict, au, pose: dict | None = None, size: int = 128):
    """Render one 3-D face.

    Args:
        idn: from `sample_identity3d`. au: (14,) AU intensities in [0, 1]. pose: from `sample_pose3d`
            (None: frontal, centred). size: output side in pixels.

    Returns (img (size, size, 3) uint8 RGB, bbox (tl_col, br_col, tl_row, br_row) in [0, 1]): the box
    of the front of the skull as the picture shows it, scaled by BOX_SCALE to YuNet's framing.
    """
    p = NEUTRAL_POSE3D if pose is None else pose
    r, mesh = _renderer(size), _identity_mesh(idn)
    s = dataclasses.replace(r.s, background=idn["background"], light=idn["light"], ambient=idn["ambient"],
                            specular=idn["specular"], yaw_deg=p["yaw"], pitch_deg=p["pitch"])
    a = np.deg2rad(p["roll"])
    rot = p["scale"] * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])  # about the picture's centre
    screen = np.c_[rot, 0.5 + np.array([p["dx"], p["dy"]]) - rot @ [0.5, 0.5]]  # (2, 3) roll, zoom, shift
    r.update(mesh=None if r.mesh is mesh else mesh, settings=s, screen=screen)
    weights = au_to_rig("head", au)  # (26,) ARKit weights of the head
    img = r.render(weights)
    gain = p["light"] * (1 + p["side"] * np.linspace(-0.5, 0.5, size, dtype=np.float32))  # (size,) per column
    img = np.clip(img * gain[None, :, None], 0, 255).astype(np.uint8)
    _, tag = _base()
    verts = mesh.deformed(weights)[(tag == "skull") & (mesh.vertices[:, 2] > 0)]
    xy = r.project(verts)  # (N, 2)
    lo, hi = xy.min(0), xy.max(0)
    centre, half = (lo + hi) / 2, (hi - lo) / 2 * BOX_SCALE
    bbox = np.clip([centre[0] - half[0], centre[0] + half[0], centre[1] - half[1], centre[1] + half[1]], 0, 1)
    return img, bbox
