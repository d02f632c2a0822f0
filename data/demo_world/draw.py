"""Anti-aliased drawing helpers: shapes are float point arrays, drawn on a supersampled canvas."""
import cv2
import numpy as np

SHIFT = 3  # cv2 fractional bits: sub-pixel precision of 1/8 canvas pixel
_F = 1 << SHIFT


def supersample(size: int) -> int:
    """Canvas scale factor: the canvas is about 256 px (at least 2x) and is area-downsampled."""
    return max(2, int(np.ceil(256 / size)))


def ellipse(cx, cy, rx, ry, a0=0.0, a1=360.0, n=40) -> np.ndarray:
    """(n, 2) points on an ellipse arc, angles in degrees (0 = +x, 90 = +y i.e. down)."""
    t = np.deg2rad(np.linspace(a0, a1, n))
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], 1)


def superellipse(cx, cy, rx, ry, p, ry_low=None, n=72) -> np.ndarray:
    """(n, 2) closed superellipse |x/rx|^p + |y/ry|^p = 1; ry_low stretches the lower half."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    c, s = np.cos(t), np.sin(t)
    x = rx * np.sign(c) * np.abs(c) ** (2 / p)
    y = np.sign(s) * np.abs(s) ** (2 / p)
    y = y * np.where(y > 0, ry if ry_low is None else ry_low, ry)
    return np.stack([cx + x, cy + y], 1)


def bezier(p0, p1, p2, n=16) -> np.ndarray:
    """(n, 2) quadratic Bezier; p1 is the control point."""
    t = np.linspace(0, 1, n)[:, None]
    p0, p1, p2 = (np.asarray(p, float) for p in (p0, p1, p2))
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t ** 2 * p2


def through(p0, mid, p2, n=16) -> np.ndarray:
    """(n, 2) quadratic curve from p0 to p2 passing through `mid` at t=0.5."""
    p0, mid, p2 = (np.asarray(p, float) for p in (p0, mid, p2))
    return bezier(p0, 2 * mid - (p0 + p2) / 2, p2, n)


class Xform:
    """Similarity transform from model units to canvas pixels: p = c + s * R(roll) @ q."""

    def __init__(self, cx, cy, scale, roll_deg=0.0):
        a = np.deg2rad(roll_deg)
        self.m = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        self.c = np.array([cx, cy], float)
        self.scale = scale

    def __call__(self, pts) -> np.ndarray:
        """(n, 2) model points -> (n, 2) int32 fixed-point canvas points."""
        p = np.asarray(pts, float).reshape(-1, 2) @ self.m.T + self.c
        return np.round(p * _F).astype(np.int32)

    def px(self, pts) -> np.ndarray:
        return np.asarray(pts, float).reshape(-1, 2) @ self.m.T + self.c


def fill(img, xf, pts, color):
    cv2.fillPoly(img, [xf(pts)], _c(color), cv2.LINE_AA, SHIFT)


def line(img, xf, pts, color, thick, closed=False):
    """Polyline; `thick` in model units."""
    t = max(1, int(round(thick * xf.scale)))
    cv2.polylines(img, [xf(pts)], closed, _c(color), t, cv2.LINE_AA, SHIFT)


def _c(color):
    return tuple(float(v) for v in color)


def lerp(a, b, t):
    return tuple(float(x + (y - x) * t) for x, y in zip(a, b))


def gradient(size, c0, c1, angle_deg, radial=False) -> np.ndarray:
    """(size, size, 3) uint8 linear (or radial) gradient from c0 to c1."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1) - 0.5
    if radial:
        t = np.clip(np.sqrt(x * x + y * y) * 1.4, 0, 1)
    else:
        a = np.deg2rad(angle_deg)
        t = np.clip(x * np.cos(a) + y * np.sin(a) + 0.5, 0, 1)
    c0, c1 = np.asarray(c0, np.float32), np.asarray(c1, np.float32)
    return (c0 + (c1 - c0) * t[..., None]).astype(np.uint8)


def finish(canvas, size) -> np.ndarray:
    """Area-downsample the supersampled canvas to (size, size, 3) uint8."""
    return cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA)
