"""Action units (AUs) and the expression prior of the demo world.

An expression is a vector of 14 AU intensities in [0, 1] (order of `AU_NAMES`); left/right are
the actor's own left/right (the image's right/left). A sample comes from one class prototype,
scaled by a random intensity, plus small noise and occasional sparse extra AUs.
"""
import numpy as np

AU_NAMES = [
    "brow_raise_l", "brow_raise_r", "brow_lower", "eye_wide", "eye_close_l", "eye_close_r",
    "nose_wrinkle", "smile_l", "smile_r", "frown", "lip_pucker", "lip_stretch", "lips_part",
    "jaw_drop",
]
AU_INDEX = {n: i for i, n in enumerate(AU_NAMES)}

_PROTOTYPES = {  # class -> {AU: intensity}; unlisted AUs are 0
    "neutral": {},
    "happy": {"smile_l": 0.95, "smile_r": 0.95, "lips_part": 0.45, "eye_close_l": 0.3,
              "eye_close_r": 0.3},
    "sad": {"frown": 0.95, "brow_raise_l": 0.4, "brow_raise_r": 0.4, "eye_close_l": 0.35,
            "eye_close_r": 0.35, "lip_pucker": 0.25},
    "surprise": {"brow_raise_l": 1.0, "brow_raise_r": 1.0, "eye_wide": 0.9, "jaw_drop": 0.85,
                 "lips_part": 0.6},
    "angry": {"brow_lower": 1.0, "frown": 0.45, "lip_stretch": 0.45, "nose_wrinkle": 0.3,
              "eye_wide": 0.3},
    "disgust": {"nose_wrinkle": 1.0, "brow_lower": 0.45, "frown": 0.55, "eye_close_l": 0.3,
                "eye_close_r": 0.3, "lips_part": 0.3},
    "fear": {"brow_raise_l": 0.7, "brow_raise_r": 0.7, "eye_wide": 1.0, "lip_stretch": 0.95,
             "lips_part": 0.55},
    "wink": {"eye_close_l": 1.0, "smile_l": 0.6, "smile_r": 0.25, "brow_raise_r": 0.3},
    "smirk": {"smile_r": 0.95, "brow_raise_l": 0.35, "eye_close_r": 0.2},
    "kiss": {"lip_pucker": 1.0, "eye_close_l": 0.45, "eye_close_r": 0.45, "brow_raise_l": 0.2,
             "brow_raise_r": 0.2},
}
EXPRESSION_CLASSES = list(_PROTOTYPES)
_CLASS_WEIGHTS = np.array([1.6] + [1.0] * (len(EXPRESSION_CLASSES) - 1))
CLASS_PROBS = _CLASS_WEIGHTS / _CLASS_WEIGHTS.sum()


def prototype(cls) -> np.ndarray:
    """(14,) float32 AU prototype of a class (name or index)."""
    name = EXPRESSION_CLASSES[cls] if isinstance(cls, (int, np.integer)) else cls
    v = np.zeros(len(AU_NAMES), np.float32)
    for k, x in _PROTOTYPES[name].items():
        v[AU_INDEX[k]] = x
    return v


PROTOTYPES = np.stack([prototype(c) for c in EXPRESSION_CLASSES])  # (n_classes, 14)


def sample_expression(rng: np.random.Generator, cls: int | None = None):
    """Draw (class_index, au (14,) float32) from the expression prior."""
    if cls is None:
        cls = int(rng.choice(len(EXPRESSION_CLASSES), p=CLASS_PROBS))
    scale = rng.uniform(0.6, 1.1)
    au = PROTOTYPES[cls] * scale + rng.normal(0.0, 0.04, len(AU_NAMES))
    if rng.random() < 0.3:  # sparse extra AUs, kept low so the class stays readable
        idx = rng.choice(len(AU_NAMES), size=int(rng.integers(1, 3)), replace=False)
        au[idx] += rng.uniform(0.1, 0.35, len(idx))
    return int(cls), np.clip(au, 0.0, 1.0).astype(np.float32)
