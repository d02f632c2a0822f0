"""One-Euro filter (Casiez, Roussel & Vogel, CHI 2012) for rig curves and face tracks.

A low-pass filter whose cutoff rises with the signal's speed: when a control is still, the
cutoff stays at ``min_cutoff`` and jitter is removed; when it moves fast, the cutoff grows by
``beta * |speed|`` so the curve follows with little lag. Vectorised: one call filters all C
controls of a frame at once, each with its own adaptive cutoff.

Tuning (both in ``SmoothingConfig``): lower ``min_cutoff`` (Hz) removes more jitter at rest;
raise ``beta`` until fast motions stop lagging. Units of ``beta`` are 1 / (signal unit), so it
depends on the signal's scale: rig controls are in [0, 1], track boxes in pixels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class SmoothingConfig:
    """Args:
        enabled: False passes curves through unchanged.
        min_cutoff: cutoff frequency in Hz when the signal is still (less = smoother).
        beta: speed coefficient (more = less lag on fast motion).
        d_cutoff: cutoff in Hz for the speed estimate itself.
    """
    enabled: bool = True
    min_cutoff: float = 1.0
    beta: float = 1.5
    d_cutoff: float = 1.0

    def __post_init__(self):
        for k in ("min_cutoff", "d_cutoff"):
            if not getattr(self, k) > 0:
                raise ValueError(f"SmoothingConfig.{k} must be > 0, got {getattr(self, k)}")
        if self.beta < 0:
            raise ValueError(f"SmoothingConfig.beta must be >= 0, got {self.beta}")


def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
    """Smoothing factor of an exponential filter with the given cutoff (Hz) and step (s)."""
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """Stateful One-Euro filter over a vector of C controls.

    Args:
        fps: sample rate used when ``__call__`` gets no timestamp.
        min_cutoff, beta, d_cutoff: see ``SmoothingConfig``.
    Call with x of shape (C,) (or any shape, filtered elementwise) and optionally the sample
    time t in seconds; returns the filtered array of the same shape. ``reset()`` forgets the
    state (use it after a cut or a lost track).
    """

    def __init__(self, fps: float = 30.0, min_cutoff: float = 1.0, beta: float = 1.5,
                 d_cutoff: float = 1.0):
        if not fps > 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        self.fps, self.min_cutoff, self.beta, self.d_cutoff = fps, min_cutoff, beta, d_cutoff
        self.reset()

    @classmethod
    def from_config(cls, cfg: SmoothingConfig, fps: float) -> OneEuroFilter:
        return cls(fps, cfg.min_cutoff, cfg.beta, cfg.d_cutoff)

    def reset(self) -> None:
        self._x: np.ndarray | None = None   # last filtered value, (C,)
        self._dx: np.ndarray | None = None  # last filtered speed, (C,)
        self._t: float | None = None

    def __call__(self, x: np.ndarray, t: float | None = None) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self._x is None:
            self._x, self._dx = x.copy(), np.zeros_like(x)
            self._t = 0.0 if t is None else t
            return x.copy()
        if t is None:
            dt = 1.0 / self.fps
            t = self._t + dt
        else:
            dt = t - self._t
            if dt <= 0:  # repeated or out-of-order timestamp: fall back to one frame
                dt = 1.0 / self.fps
        dx = (x - self._x) / dt
        self._dx = self._dx + _alpha(self.d_cutoff, dt) * (dx - self._dx)
        cutoff = self.min_cutoff + self.beta * np.abs(self._dx)  # (C,) per-control cutoff
        self._x = self._x + _alpha(cutoff, dt) * (x - self._x)
        self._t = t
        return self._x.copy()


def smooth_curves(curves: np.ndarray, fps: float, cfg: SmoothingConfig,
                  valid: np.ndarray | None = None) -> np.ndarray:
    """Filter whole curves offline.

    Args:
        curves: (T, C) values per frame and control.
        fps: frame rate of the curves.
        cfg: filter parameters; ``cfg.enabled=False`` returns a copy.
        valid: optional (T,) bool; at an invalid frame the filter is reset, so a lost face
            never drags the next good frame towards stale values (invalid rows pass through).
    Returns:
        (T, C) filtered curves, float64.
    """
    curves = np.asarray(curves, dtype=np.float64)
    if curves.ndim != 2:
        raise ValueError(f"curves must be (T, C), got shape {curves.shape}")
    out = curves.copy()
    if not cfg.enabled:
        return out
    f = OneEuroFilter.from_config(cfg, fps)
    for i in range(len(curves)):
        if valid is not None and not valid[i]:
            f.reset()
            continue
        out[i] = f(curves[i])
    return out
