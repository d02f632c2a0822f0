"""What animate writes, and how it times itself: rig-curve CSVs, preview panels, step timings.

    timer = StepTimer(device); with timer("encode") as span: ...   # seconds per step; span[0] = this block
    panel = frame_panel(rgb, square, status, (w, h))               # the input frame with its track square
    frame = compose([panel, crop_panel, *avatar_panels], labels)   # one side-by-side preview frame
    write_curves(path, controls, curves, times, face_found, faces) # frame,time_s,<controls>,face_found,faces
"""
from __future__ import annotations

import contextlib
import csv
import time
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

STATUS_COLOUR = {"detected": (0, 255, 0), "held": (255, 200, 0), "missing": (255, 0, 0)}


class StepTimer:
    """Accumulates wall-clock seconds per named step (synchronising CUDA so GPU time lands in its step).

    Args:
        device: the torch device the models run on.
    """

    def __init__(self, device: torch.device):
        self.seconds: dict[str, float] = defaultdict(float)
        self.cuda = device.type == "cuda"

    @contextlib.contextmanager
    def __call__(self, name: str):
        if self.cuda:
            torch.cuda.synchronize()
        t0, span = time.perf_counter(), [0.0]
        try:
            yield span  # span[0] holds this block's seconds afterwards
        finally:
            if self.cuda:
                torch.cuda.synchronize()
            span[0] = time.perf_counter() - t0
            self.seconds[name] += span[0]


def fit(rgb: np.ndarray, w: int, h: int) -> tuple[np.ndarray, float, int, int]:
    """Letterbox (H0, W0, 3) into (h, w, 3); returns (panel, scale, x offset, y offset)."""
    s = min(w / rgb.shape[1], h / rgb.shape[0])
    nw, nh = max(1, round(rgb.shape[1] * s)), max(1, round(rgb.shape[0] * s))
    small = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    if (nw, nh) == (w, h):
        return small, s, 0, 0
    out = np.zeros((h, w, 3), np.uint8)
    x0, y0 = (w - nw) // 2, (h - nh) // 2
    out[y0:y0 + nh, x0:x0 + nw] = small
    return out, s, x0, y0


def frame_panel(rgb: np.ndarray, corners: tuple[int, int, int, int] | None, status: str,
                size: tuple[int, int]) -> np.ndarray:
    """The input frame letterboxed into `size` = (w, h), with the face square coloured by status."""
    panel, s, ox, oy = fit(rgb, *size)
    colour = STATUS_COLOUR[status]
    if corners is not None:
        x0, y0, x1, y1 = (round(v * s) for v in corners)
        cv2.rectangle(panel, (x0 + ox, y0 + oy), (x1 + ox - 1, y1 + oy - 1), colour, 2)
    cv2.putText(panel, status, (5, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1, cv2.LINE_AA)
    return panel


def square_panel(img: np.ndarray | None, size: int) -> np.ndarray:
    """(h, w, 3) uint8 -> (size, size, 3); None -> a grey panel (no face seen yet)."""
    if img is None:
        return np.full((size, size, 3), 64, np.uint8)
    if img.shape[:2] == (size, size):
        return img
    return cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA if img.shape[0] > size else cv2.INTER_LINEAR)


def compose(panels: list[np.ndarray], labels: list[str]) -> np.ndarray:
    """Panels of one height side by side, each labelled at its bottom-left corner -> (h, sum w, 3)."""
    out = np.concatenate(panels, axis=1)
    x, h = 0, out.shape[0]
    for p, label in zip(panels, labels):
        if label:
            cv2.putText(out, label, (x + 5, h - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
        x += p.shape[1]
    return out


def renders_to_uint8(img: torch.Tensor, size: int) -> np.ndarray:
    """(B, 3, H, W) renders in [0, 1] (any float dtype) -> (B, size, size, 3) uint8 on the CPU."""
    img = img.float()
    if img.shape[-1] != size:
        img = F.interpolate(img, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return (img.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def write_curves(path: Path, controls: list[str], curves: np.ndarray, times: np.ndarray, face_found: np.ndarray,
                 faces: np.ndarray) -> None:
    """One avatar's rig curves as CSV: `frame,time_s,<controls>,face_found,faces`.

    Args:
        curves: (T, n) values in [0, 1]; NaN rows (no face seen in the whole input) become empty cells.
        times: (T,) each frame's presentation time in seconds.
        face_found: (T,) bool; 0 marks a frame whose rig was kept from the last frame with a face.
        faces: (T,) faces seen in the frame (more than 1: another person was in view).
    """
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["frame", "time_s", *controls, "face_found", "faces"])
        for i, (row, t, found, n) in enumerate(zip(curves, times, face_found, faces)):
            vals = ["" if np.isnan(v) else f"{v:.5f}" for v in row]
            w.writerow([i, f"{t:.4f}", *vals, int(found), int(n)])
