"""Deterministic avatar renderers: rig (n_controls,) in [0,1] -> RGB image. No randomness."""
import dataclasses
import functools

import cv2
import numpy as np

from avatar3d.render import MeshRenderer

from .avatars import AVATARS, UNIT
from .draw import Xform, ellipse, fill, finish, gradient, lerp, line, superellipse, supersample, through
from .head3d import HEAD_RENDER, build_head

_BG = {"robot": ((40, 50, 70), (110, 120, 140)), "cat": ((250, 220, 170), (230, 150, 120)),
       "alien": ((30, 10, 60), (90, 40, 120))}
_BG_CACHE = {}


def _bg(name, size):
    key = (name, size)
    if key not in _BG_CACHE:
        S = size * supersample(size)
        _BG_CACHE[key] = cv2.resize(gradient(size, *_BG[name], 90.0), (S, S))
    return _BG_CACHE[key].copy()


def _robot(img, xf, r):
    metal, dark = (170, 175, 185), (25, 30, 40)
    led = lerp((60, 230, 255), (255, 50, 40), r["led_red"])
    tip = ((r["antenna_bend"] - 0.5) * 0.9, -1.38)
    line(img, xf, through((0, -0.85), (tip[0] * 0.3, -1.15), tip), metal, 0.06)
    fill(img, xf, ellipse(*tip, 0.1, 0.1), lerp((90, 90, 100), (255, 240, 60), r["antenna_blink"]))
    for s in (-1, 1):
        fill(img, xf, [(s * 0.85, -0.3), (s * 1.05, -0.3), (s * 1.05, 0.25), (s * 0.85, 0.25)], (120, 125, 135))
    fill(img, xf, superellipse(0, 0, 0.92, 0.92, 6), metal)
    fill(img, xf, superellipse(0, 0.02, 0.76, 0.8, 8), dark)
    for s, b in ((1, "brow_l_height"), (-1, "brow_r_height")):
        y = -0.42 - 0.22 * r[b]
        line(img, xf, [(s * 0.14, y + 0.2 * r["brow_tilt"]), (s * 0.56, y - 0.05 * r["brow_tilt"])], led, 0.07)
    for s, e in ((1, "eye_l_open"), (-1, "eye_r_open")):
        h = 0.03 + 0.2 * r[e]
        cx, cy = s * 0.35, -0.2
        for w, hh, col in ((0.2, h + 0.04, lerp(dark, led, 0.3)), (0.15, h, led)):  # glow, then LED
            fill(img, xf, [(cx - w, cy - hh), (cx + w, cy - hh), (cx + w, cy + hh), (cx - w, cy + hh)], col)
    hw = 0.2 + 0.38 * r["mouth_width"]
    c, t = (r["mouth_curve"] - 0.5) * 0.36, (r["mouth_tilt"] - 0.5) * 0.36
    cl, cr = (hw, 0.42 - c - t), (-hw, 0.42 - c + t)
    op = 0.04 + 0.34 * r["mouth_open"]
    up = through(cr, (0, 0.42 + c * 0.5 - op * 0.3), cl)
    lo = through(cl, (0, 0.42 + c * 0.5 + op * 0.7), cr)
    fill(img, xf, np.concatenate([up, lo]), lerp(dark, led, 0.35))
    line(img, xf, np.concatenate([up, lo]), led, 0.045, closed=True)


def _cat(img, xf, r):
    fur, light, pink, dark = (235, 140, 60), (255, 240, 225), (240, 130, 150), (40, 25, 20)
    for s, a, tw in ((1, "ear_l_angle", "ear_twitch_l"), (-1, "ear_r_angle", "ear_twitch_r")):
        ang = np.deg2rad(s * (10 + 55 * (0.5 - r[a]) + 40 * r[tw]))
        base = np.array([s * 0.55, -0.55])
        pts = np.array([(-0.3 * s, 0.1), (0.02 * s, -0.62 + 0.2 * r[tw]), (0.28 * s, 0.15)])
        R = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
        fill(img, xf, base + pts @ R.T, fur)
        fill(img, xf, base + (pts * 0.6 + (0, 0.02)) @ R.T, lerp(pink, fur, 0.4 * r[tw]))
    fill(img, xf, ellipse(0, 0.05, 0.95, 0.82), fur)
    fill(img, xf, ellipse(0, 0.45, 0.5, 0.38), light)
    for s, e, b in ((1, "eye_l_open", "brow_l"), (-1, "eye_r_open", "brow_r")):
        cx, cy = s * 0.36, -0.2
        h = 0.22 * r[e]
        if h > 0.02:
            fill(img, xf, ellipse(cx, cy, 0.2, h), (150, 220, 90))
            fill(img, xf, ellipse(cx, cy, 0.03 + 0.11 * r["pupil_size"], min(h, 0.18)), dark)
            line(img, xf, ellipse(cx, cy, 0.2, h, 180, 360, 16), dark, 0.035)
        else:
            line(img, xf, ellipse(cx, cy - 0.03, 0.2, 0.06, 10, 170, 16), dark, 0.05)
        y = cy - 0.3 - 0.22 * r[b]
        line(img, xf, [(s * 0.2, y + 0.16 * r["brow_angry"]), (s * 0.48, y - 0.04 * r["brow_angry"])], dark, 0.06)
    ns = r["nose_scrunch"]
    for k in range(2):
        line(img, xf, [(-0.1, 0.05 - 0.06 * k), (0.1, 0.05 - 0.06 * k)], lerp(fur, dark, ns), 0.03)
    fill(img, xf, [(-0.09 - 0.04 * ns, 0.18 - 0.05 * ns), (0.09 + 0.04 * ns, 0.18 - 0.05 * ns), (0, 0.28 - 0.05 * ns)],
         pink)
    wr = (r["whisker_raise"] - 0.5) * 0.5
    for s in (-1, 1):
        for k in (-1, 0, 1):
            line(img, xf, [(s * 0.3, 0.38 + 0.06 * k), (s * 1.1, 0.38 + 0.14 * k - wr)], dark, 0.02)
    hw = 0.16 + 0.22 * r["mouth_width"]
    op = 0.3 * r["mouth_open"]
    cl = (hw, 0.44 - 0.2 * r["mouth_smile_l"] + 0.16 * r["mouth_frown"])
    cr = (-hw, 0.44 - 0.2 * r["mouth_smile_r"] + 0.16 * r["mouth_frown"])
    if op > 0.02:
        fill(img, xf, np.concatenate([through(cr, (0, 0.36), cl), through(cl, (0, 0.4 + op), cr)]), (120, 30, 40))
    if r["tongue_out"] > 0.05:
        fill(img, xf, ellipse(0, 0.43 + op + 0.1 * r["tongue_out"], 0.1, 0.06 + 0.14 * r["tongue_out"]),
             (250, 100, 120))
    line(img, xf, [(0, 0.27), (0, 0.36)], dark, 0.035)
    for s, c in ((1, cl), (-1, cr)):
        line(img, xf, through((0, 0.36), (s * hw * 0.5, 0.44 + 0.04), c), dark, 0.035)


def _alien(img, xf, r):
    skin, dark, glow = (120, 220, 110), (15, 30, 15), (255, 255, 120)
    sq = (r["head_squash"] - 0.5) * 0.3
    for s, b in ((1, "antenna_l_bend"), (-1, "antenna_r_bend")):
        tip = (s * 0.35 + (r[b] - 0.5) * 0.8, -1.35)
        line(img, xf, through((s * 0.25, -0.7), (s * 0.32, -1.05), tip), skin, 0.05)
        fill(img, xf, ellipse(*tip, 0.09, 0.09), lerp((200, 120, 220), glow, r["antenna_glow"]))
    fill(img, xf, ellipse(0, 0.05, 0.95 * (1 + sq), 0.92 * (1 - sq)), skin)
    t = r["third_eye_open"]
    if t > 0.05:
        fill(img, xf, ellipse(0, -0.55, 0.1, 0.1 * t), (255, 255, 255))
        fill(img, xf, ellipse(0, -0.55, 0.05, 0.05 * t), (200, 30, 60))
    line(img, xf, ellipse(0, -0.55, 0.11, 0.04, 10, 170, 10), dark, 0.025)
    gx, gy = (r["gaze_x"] - 0.5) * 0.12, (r["gaze_y"] - 0.5) * 0.1
    for s, k in ((1, "l"), (-1, "r")):
        cx, cy = s * 0.36, -0.15
        rx, ry = 0.15 + 0.1 * r[f"eye_{k}_size"], 0.13 + 0.12 * r[f"eye_{k}_size"]
        fill(img, xf, ellipse(cx, cy, rx, ry), (10, 10, 20))
        fill(img, xf, ellipse(cx + gx + 0.05, cy + gy - 0.05, 0.05, 0.05), (250, 250, 250))
        lid = r[f"eye_{k}_lid"]
        if lid > 0.02:
            e = ellipse(cx, cy, rx + 0.01, ry + 0.01)
            cut = cy - ry + 2 * (ry + 0.01) * lid
            e[:, 1] = np.minimum(e[:, 1], cut)
            fill(img, xf, e, lerp(skin, dark, 0.15))
            line(img, xf, [(cx - rx, min(cut, cy)), (cx + rx, min(cut, cy))], dark, 0.03)
        up, inn = r[f"brow_{k}_raise"], r[f"brow_{k}_inner_down"]
        y = cy - ry - 0.1 - 0.2 * up
        line(img, xf, [(s * 0.18, y + 0.16 * inn), (s * 0.58, y - 0.04 * inn)], dark, 0.055)
    for s in (-1, 1):
        fill(img, xf, ellipse(s * 0.62, 0.28, 0.16, 0.1), lerp(skin, (255, 110, 150), r["cheek_blush"]))
        fill(img, xf, ellipse(s * 0.06 * (1 + 0.4 * r["nose_wrinkle"]), 0.12 - 0.04 * r["nose_wrinkle"], 0.025, 0.02),
             dark)
    for k in range(3):
        line(img, xf, [(-0.08, 0.0 - 0.05 * k), (0.08, 0.0 - 0.05 * k)], lerp(skin, dark, r["nose_wrinkle"]), 0.025)
    hw = 0.32 * (1 + 0.5 * r["lip_stretch"] - 0.55 * r["lip_pucker"])
    my = 0.45
    cl = (hw, my - 0.2 * r["mouth_corner_l_up"] + 0.16 * r["mouth_corner_l_down"])
    cr = (-hw, my - 0.2 * r["mouth_corner_r_up"] + 0.16 * r["mouth_corner_r_down"])
    op = 0.04 * r["upper_lip_raise"] + 0.4 * r["jaw_open"] + 0.04 * r["lip_pucker"]
    up = through(cr, (0, my - 0.1 * r["upper_lip_raise"]), cl)
    lo = through(cl, (0, my + 0.02 + op), cr)
    fill(img, xf, np.concatenate([up, lo]), (60, 10, 30))
    if r["tongue_out"] > 0.05:
        fill(img, xf, ellipse(0, my + op * 0.6 + 0.12 * r["tongue_out"], 0.09, 0.05 + 0.13 * r["tongue_out"]),
             (240, 90, 120))
    line(img, xf, np.concatenate([up, lo]), dark, 0.03 + 0.05 * r["lip_pucker"], closed=True)


_DRAW = {"robot": _robot, "cat": _cat, "alien": _alien}


@functools.lru_cache(maxsize=2)
def _mesh_renderer(size: int):
    """The 3-D head's renderer in this process (an OpenGL context is made per process, on first use)."""
    return MeshRenderer(build_head(), dataclasses.replace(HEAD_RENDER, size=size))


def render_avatar(name: str, rig, size: int = 64) -> np.ndarray:
    """Render avatar `name` at rig (n_controls,) in [0,1] -> (size, size, 3) uint8 RGB."""
    ctrl = AVATARS[name]["controls"]
    rig = np.asarray(rig, np.float32).reshape(-1)
    if rig.shape[0] != len(ctrl):
        raise ValueError(f"avatar {name!r} has {len(ctrl)} controls, got a rig of {rig.shape[0]}")
    if AVATARS[name]["mesh"]:
        return _mesh_renderer(size).render(np.clip(rig, 0, 1))
    r = {c: float(np.clip(v, 0, 1)) for c, v in zip(ctrl, rig)}
    img = _bg(name, size)
    S = img.shape[0]
    _DRAW[name](img, Xform(S / 2, S / 2, S * UNIT), r)
    return finish(img, size)
