"""Synthetic actors: identities, head poses and an AU-driven face renderer.

Face model units: face centre (0, 0), +u = image right (the actor's LEFT), +v = down,
face half-height 1. `render_actor` maps them to pixels with a similarity transform (roll,
shift, scale); yaw is faked by shifting the inner features sideways.
"""
import cv2
import numpy as np

from .draw import Xform, ellipse, fill, finish, gradient, lerp, line, superellipse, supersample, through
from .expressions import AU_INDEX

SKIN = [(255, 224, 196), (241, 194, 160), (224, 172, 130), (198, 140, 100), (160, 105, 70),
        (120, 78, 52), (250, 210, 190)]
HAIR = [(30, 25, 20), (70, 45, 25), (120, 80, 40), (200, 160, 90), (170, 60, 30),
        (150, 150, 150), (235, 235, 225), (60, 30, 90), (40, 90, 140)]
IRIS = [(70, 45, 25), (60, 110, 170), (70, 130, 80), (110, 90, 50), (40, 40, 40)]
FACE_HALF = 0.34  # face half-height as a fraction of the image side


def sample_identity(rng: np.random.Generator) -> dict:
    """Random identity parameters (shape, colours, hair, accessories, background)."""
    sk = np.array(SKIN[rng.integers(len(SKIN))]) + rng.normal(0, 8, 3)
    hair = np.array(HAIR[rng.integers(len(HAIR))]) + rng.normal(0, 6, 3)
    bg0 = rng.uniform(40, 230, 3)
    return dict(
        face_w=rng.uniform(0.70, 0.86), face_p=rng.uniform(1.9, 2.7), skin=np.clip(sk, 0, 255),
        hair=np.clip(hair, 0, 255), hair_style=int(rng.integers(6)),
        eye_dx=rng.uniform(0.34, 0.41), eye_rx=rng.uniform(0.15, 0.18),
        eye_aspect=rng.uniform(0.55, 0.75), iris=IRIS[rng.integers(len(IRIS))],
        brow_t=rng.uniform(0.05, 0.085), nose_style=int(rng.integers(3)),
        nose_len=rng.uniform(0.22, 0.32), lip=lerp(sk * 0.8, (200, 70, 80), rng.uniform(0.3, 0.8)),
        lip_t=rng.uniform(0.05, 0.085), mouth_w=rng.uniform(0.25, 0.31),
        glasses=bool(rng.random() < 0.25), beard=bool(rng.random() < 0.2),
        hat=bool(rng.random() < 0.12), earrings=bool(rng.random() < 0.2),
        accent=tuple(rng.uniform(20, 240, 3)), shirt=tuple(rng.uniform(20, 240, 3)),
        bg0=tuple(bg0), bg1=tuple(np.clip(bg0 + rng.normal(0, 60, 3), 0, 255)),
        bg_angle=rng.uniform(0, 360), bg_radial=bool(rng.random() < 0.3),
    )


NEUTRAL_POSE = dict(roll=0.0, dx=0.0, dy=0.0, scale=1.0, yaw=0.0, light=1.0, side=0.0)


def sample_pose(rng: np.random.Generator) -> dict:
    """Small per-image head pose and lighting changes."""
    return dict(roll=rng.uniform(-10, 10), dx=rng.uniform(-0.04, 0.04), dy=rng.uniform(-0.03, 0.03),
                scale=rng.uniform(0.92, 1.06), yaw=rng.uniform(-1, 1), light=rng.uniform(0.8, 1.12),
                side=rng.uniform(-0.3, 0.3))


def _hair_cap(idn, fw, bangs):
    """Hair polygon covering the top of the head down to the hairline."""
    outer = ellipse(0, 0.02, fw * 1.1, 1.14, 180, 360, 30)
    mid_y = -0.5 if bangs else -0.66
    hairline = through((fw * 1.02, -0.15), (0, mid_y - (0 if bangs else 0.1)), (-fw * 1.02, -0.15), 20)
    if bangs:
        hairline = np.concatenate([[(fw * 1.02, -0.15), (fw * 0.8, mid_y)], [(-fw * 0.8, mid_y)],
                                   [(-fw * 1.02, -0.15)]])
    return np.concatenate([outer, hairline])


def _eye(img, xf, idn, a, side, cx, cy, sz):
    """One eye; side=+1 is the actor's left (image right)."""
    close = a["eye_close_l" if side > 0 else "eye_close_r"]
    wide = a["eye_wide"]
    rx, ry0 = idn["eye_rx"] * sz, idn["eye_rx"] * idn["eye_aspect"] * sz
    ry_full = ry0 * (1 + 0.75 * wide)
    ry = ry_full * (1 - 0.93 * close)
    cy2 = cy + (ry_full - ry) * 0.55
    dark = (25, 20, 20)
    if ry > 0.012:
        fill(img, xf, ellipse(cx, cy2, rx, ry), (250, 250, 248))
        ri = ry0 * 0.95
        fill(img, xf, ellipse(cx, cy2, ri * 0.95, min(ri, ry * 0.98)), idn["iris"])
        fill(img, xf, ellipse(cx, cy2, ri * 0.45, min(ri * 0.5, ry * 0.5)), dark)
        line(img, xf, ellipse(cx, cy2, rx, ry, 180, 360, 20), dark, 0.035)  # upper lid
    else:
        line(img, xf, ellipse(cx, cy2 - 0.02, rx, ry0 * 0.5, 10, 170, 20), dark, 0.04)


def _mouth(img, xf, idn, a, mx, my):
    sl, sr, fr, pu, st = a["smile_l"], a["smile_r"], a["frown"], a["lip_pucker"], a["lip_stretch"]
    hw = idn["mouth_w"] * (1 + 0.35 * st + 0.12 * (sl + sr) - 0.55 * pu)
    gap = 0.07 * a["lips_part"] + 0.30 * a["jaw_drop"] + 0.03 * pu
    lt = idn["lip_t"] * (1 + 1.3 * pu)
    cl = np.array([mx + hw, my - 0.17 * sl + 0.14 * fr - 0.03 * st])  # actor's left corner
    cr = np.array([mx - hw, my - 0.17 * sr + 0.14 * fr - 0.03 * st])
    up_in = my - 0.3 * gap - 0.05 * a["nose_wrinkle"] + 0.02 * (sl + sr)
    lo_in = my + 0.7 * gap + 0.02 * (sl + sr)
    up_out = through(cr, (mx, up_in - lt - 0.01 * pu), cl)
    lo_out = through(cl, (mx, lo_in + lt * 1.25), cr)
    fill(img, xf, np.concatenate([up_out, lo_out]), idn["lip"])
    if gap > 0.015:
        up = through(cr, (mx, up_in), cl)
        lo = through(cl, (mx, lo_in), cr)
        fill(img, xf, np.concatenate([up, lo]), (70, 20, 30))
        teeth = np.concatenate([up, through(cl, (mx, up_in + min(0.5 * gap, 0.07)), cr)])
        fill(img, xf, teeth, (245, 245, 240))
    else:
        line(img, xf, through(cr, (mx, (up_in + lo_in) / 2), cl), (90, 30, 40), 0.025)


def render_actor(idn: dict, au, pose: dict | None = None, size: int = 64):
    """Render one face. Args: identity dict, au (14,) in [0,1], pose dict, output side.

    Returns (img (size, size, 3) uint8 RGB, bbox (tl_col, br_col, tl_row, br_row) in [0,1]).
    """
    a = {k: float(au[i]) for k, i in AU_INDEX.items()}
    p = NEUTRAL_POSE if pose is None else pose
    S = size * supersample(size)
    img = cv2.resize(gradient(size, idn["bg0"], idn["bg1"], idn["bg_angle"], idn["bg_radial"]), (S, S))
    xf = Xform(S * (0.5 + p["dx"]), S * (0.5 + p["dy"]), S * FACE_HALF * p["scale"], p["roll"])
    fw, skin, hair = idn["face_w"], idn["skin"], idn["hair"]
    shade = lerp(skin, (60, 30, 20), 0.35)
    yaw = 0.1 * p["yaw"]
    if idn["hair_style"] == 2:  # long hair behind the head
        back = np.concatenate([ellipse(0, 0.05, fw * 1.22, 1.2, 180, 360), [(fw * 1.3, 1.35), (-fw * 1.3, 1.35)]])
        fill(img, xf, back, hair)
    fill(img, xf, ellipse(0, 2.0, 1.9, 0.75, 180, 360), idn["shirt"])
    fill(img, xf, [(-0.33 * fw, 0.6), (0.33 * fw, 0.6), (0.38 * fw, 1.35), (-0.38 * fw, 1.35)], shade)
    for s in (-1, 1):
        fill(img, xf, ellipse(s * fw * 0.98, -0.02, 0.12, 0.2), lerp(skin, shade, 0.4))
        if idn["earrings"]:
            fill(img, xf, ellipse(s * fw * 0.98, 0.22, 0.045, 0.045), (235, 200, 60))
    jaw = 1 + 0.14 * a["jaw_drop"]
    face = superellipse(0, 0, fw, 1.0, idn["face_p"], ry_low=jaw)
    fill(img, xf, face, skin)
    # AU-weighted creases (invisible at 0): forehead lines under the hair, then nose and smile lines
    raise_ = (a["brow_raise_l"] + a["brow_raise_r"]) / 2
    for y in (-0.5, -0.58):
        line(img, xf, through((-0.3 + yaw, y), (yaw, y - 0.04), (0.3 + yaw, y)), lerp(skin, shade, raise_), 0.03)
    if idn["beard"]:
        bx = np.concatenate([superellipse(0, 0, fw, 1.0, idn["face_p"], ry_low=jaw)[7:30]])
        fill(img, xf, np.concatenate([bx[bx[:, 1] > 0.25], [(-fw * 0.9, 0.25), (fw * 0.9, 0.25)]]),
             lerp(skin, hair, 0.75))
    st = idn["hair_style"]
    if st in (1, 2, 3, 5):
        fill(img, xf, _hair_cap(idn, fw, st == 3), hair)
    elif st == 0:
        fill(img, xf, _hair_cap(idn, fw * 0.97, False)[:30], lerp(skin, hair, 0.5))
    else:  # curly
        for k in range(9):
            t = np.deg2rad(180 + k * 22.5)
            fill(img, xf, ellipse(fw * 0.95 * np.cos(t), -0.1 + 1.0 * np.sin(t), 0.26, 0.26), hair)
    if st == 5:
        fill(img, xf, ellipse(0, -1.18, 0.28, 0.22), hair)
    ey, ex = -0.12, idn["eye_dx"] * fw / 0.78
    nw = a["nose_wrinkle"]
    for y in (-0.02, 0.05):
        line(img, xf, [(yaw * 1.3 - 0.09, y), (yaw * 1.3 + 0.09, y)], lerp(skin, shade, nw), 0.03)
    for s, key in ((1, "smile_l"), (-1, "smile_r")):
        v = a[key]
        line(img, xf,
             through((s * 0.2 + yaw, 0.22), (s * (0.42 + 0.05 * v) + yaw, 0.42), (s * 0.38 + yaw, 0.66 - 0.1 * v)),
             lerp(skin, shade, min(1, 1.2 * v)), 0.035)
    for s in (-1, 1):
        sz = 1 + 0.08 * s * p["yaw"]
        _eye(img, xf, idn, a, s, s * ex + yaw, ey, sz)
    if idn["glasses"]:
        for s in (-1, 1):
            line(img, xf, ellipse(s * ex + yaw, ey, idn["eye_rx"] * 1.5, idn["eye_rx"] * 1.2), idn["accent"], 0.035,
                 True)
        line(img, xf, [(-ex + yaw + idn["eye_rx"] * 1.5, ey), (ex + yaw - idn["eye_rx"] * 1.5, ey)], idn["accent"],
             0.035)
    bc = lerp(hair, (20, 15, 10), 0.5)
    for s, key in ((1, "brow_raise_l"), (-1, "brow_raise_r")):
        r, lo = a[key], a["brow_lower"]
        by = ey - 0.24 - 0.2 * r + 0.09 * lo
        inner = (s * (ex - 0.17 + 0.05 * lo) + yaw, by + 0.11 * lo - 0.03 * r)
        outer = (s * (ex + 0.19) + yaw, by + 0.03 - 0.03 * lo)
        mid = (s * ex + yaw, by - 0.04 - 0.06 * r)
        line(img, xf, through(inner, mid, outer, 12), bc, idn["brow_t"])
    nx, nl = 1.5 * yaw, idn["nose_len"]
    flare = 1 + 0.5 * nw
    if idn["nose_style"] == 0:
        line(img, xf, [(nx + 0.02, 0.0), (nx + 0.06, nl), (nx - 0.06 * flare, nl + 0.02)], shade, 0.03)
    else:
        for s in (-1, 1):
            fill(img, xf, ellipse(nx + s * 0.07 * flare, nl - 0.02 * nw, 0.045 * flare, 0.03), shade)
        if idn["nose_style"] == 2:
            line(img, xf, ellipse(nx, nl - 0.05, 0.1 * flare, 0.08, 200, 340, 12), shade, 0.025)
    _mouth(img, xf, idn, a, 1.3 * yaw, 0.56 + 0.05 * a["jaw_drop"])
    if idn["hat"]:
        fill(img, xf, np.concatenate([ellipse(0, -0.75, fw * 1.0, 0.75, 180, 360, 24)]), idn["accent"])
        line(img, xf, [(-fw * 1.35, -0.72), (fw * 1.35, -0.72)], lerp(idn["accent"], (0, 0, 0), 0.3), 0.1)
    out = finish(img, size)
    # lighting: global gain times a sideways gradient
    g = p["light"] * (1 + p["side"] * np.linspace(-0.5, 0.5, size, dtype=np.float32))
    out = np.clip(out.astype(np.float32) * g[None, :, None], 0, 255).astype(np.uint8)
    pts = xf.px(face) / S
    bbox = np.clip([pts[:, 0].min(), pts[:, 0].max(), pts[:, 1].min(), pts[:, 1].max()], 0, 1)
    return out, bbox
