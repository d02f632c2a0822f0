"""One-Euro filter: removes jitter at rest, follows a step within a few frames, per control."""
from __future__ import annotations

import numpy as np
import pytest

from data.smoothing import OneEuroFilter, SmoothingConfig, smooth_curves

FPS = 30.0


def noisy_step(T=120, C=6, at=60, noise=0.02, seed=0):
    """(T, C) curves in [0, 1]: controls step from 0.2 to 0.2 + height at frame ``at``."""
    rng = np.random.default_rng(seed)
    clean = np.full((T, C), 0.2)
    heights = np.linspace(0.3, 0.8, C)  # different step sizes per control
    clean[at:] += heights
    return clean, clean + rng.normal(0, noise, clean.shape), heights


def test_step_lag_is_at_most_three_frames():
    clean, noisy, heights = noisy_step()
    out = smooth_curves(noisy, FPS, SmoothingConfig())
    for c, h in enumerate(heights):
        reached = np.nonzero(out[60:, c] >= 0.2 + 0.9 * h)[0]
        assert reached.size and reached[0] <= 3, f"control {c} lags {reached[:1]} frames"
    # no big overshoot either
    assert (out[60:] - clean[60:]).max() < 0.1


def test_jitter_is_removed_at_rest():
    clean, noisy, _ = noisy_step()
    out = smooth_curves(noisy, FPS, SmoothingConfig())
    rest = np.r_[10:58, 75:120]  # away from the step and its settling
    before = (noisy[rest] - clean[rest]).std()
    after = (out[rest] - clean[rest]).std()
    assert after < before / 2.5, (before, after)
    # frame-to-frame jitter (what a viewer sees) drops even more
    assert np.abs(np.diff(out[rest[:40]], axis=0)).mean() < \
        np.abs(np.diff(noisy[rest[:40]], axis=0)).mean() / 3


def test_controls_are_filtered_independently():
    _, noisy, _ = noisy_step(C=4)
    together = smooth_curves(noisy, FPS, SmoothingConfig())
    for c in range(4):
        alone = smooth_curves(noisy[:, c:c + 1], FPS, SmoothingConfig())
        np.testing.assert_allclose(together[:, c:c + 1], alone)


def test_lower_min_cutoff_smooths_more_and_beta_reduces_lag():
    clean, noisy, _ = noisy_step()
    rest = np.r_[10:58]
    err = lambda cfg: (smooth_curves(noisy, FPS, cfg)[rest] - clean[rest]).std()
    assert err(SmoothingConfig(min_cutoff=0.3)) < err(SmoothingConfig(min_cutoff=3.0))
    lag = lambda cfg: np.abs(smooth_curves(clean, FPS, cfg)[60:66] - clean[60:66]).sum()
    assert lag(SmoothingConfig(beta=5.0)) < lag(SmoothingConfig(beta=0.0))


def test_invalid_frames_reset_and_disabled_passes_through():
    x = np.r_[np.zeros(10), np.ones(10)][:, None]  # (20, 1)
    valid = np.ones(20, bool)
    valid[10] = False  # a lost face right at the change
    out = smooth_curves(x, FPS, SmoothingConfig(min_cutoff=0.1, beta=0.0), valid=valid)
    assert out[11, 0] == 1.0  # restarted at the new value, no glide from stale state
    np.testing.assert_array_equal(smooth_curves(x, FPS, SmoothingConfig(enabled=False)), x)


def test_timestamps_and_bad_config():
    f = OneEuroFilter(fps=30, min_cutoff=1.0, beta=0.0)
    f(np.zeros(2), t=0.0)
    slow = f(np.ones(2), t=1 / 30)[0]
    f.reset()
    f(np.zeros(2), t=0.0)
    assert f(np.ones(2), t=1.0)[0] > slow  # a longer gap lets the value move further
    with pytest.raises(ValueError, match="min_cutoff"):
        SmoothingConfig(min_cutoff=0)
    with pytest.raises(ValueError, match="beta"):
        SmoothingConfig(beta=-1)
