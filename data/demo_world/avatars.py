"""Stylised avatars: rig controls, the fixed AU->rig correspondence, and the rig prior.

Each avatar control has a neutral value; its ground-truth value for an actor expression is
`clip(neutral + sum_k w_k * au_k, 0, 1)` (`au_to_rig`). Controls with no weights are
"unmapped" (no AU drives them: they sit at their neutral value in ground truth).
"""
import numpy as np

from .expressions import AU_INDEX, sample_expression

# name -> list of (control, neutral, {au: weight}); the order is the rig order.
_RIGS = {
    "robot": [
        ("brow_l_height", 0.3, {"brow_raise_l": 0.7, "brow_lower": -0.3}),
        ("brow_r_height", 0.3, {"brow_raise_r": 0.7, "brow_lower": -0.3}),
        ("brow_tilt", 0.0, {"brow_lower": 1.0}),
        ("eye_l_open", 0.7, {"eye_wide": 0.3, "eye_close_l": -0.75}),
        ("eye_r_open", 0.7, {"eye_wide": 0.3, "eye_close_r": -0.75}),
        ("led_red", 0.0, {"brow_lower": 0.6, "nose_wrinkle": 0.5}),
        ("mouth_open", 0.0, {"lips_part": 0.35, "jaw_drop": 0.8}),
        ("mouth_width", 0.5, {"lip_stretch": 0.45, "smile_l": 0.12, "smile_r": 0.12, "lip_pucker": -0.5}),
        ("mouth_curve", 0.5, {"smile_l": 0.25, "smile_r": 0.25, "frown": -0.5}),
        ("mouth_tilt", 0.5, {"smile_l": 0.35, "smile_r": -0.35}),
        ("antenna_bend", 0.5, {}),
        ("antenna_blink", 0.0, {}),
    ],
    "cat": [
        ("ear_l_angle", 0.5, {"brow_raise_l": 0.3, "brow_lower": -0.45}),
        ("ear_r_angle", 0.5, {"brow_raise_r": 0.3, "brow_lower": -0.45}),
        ("ear_twitch_l", 0.0, {}),
        ("ear_twitch_r", 0.0, {}),
        ("brow_l", 0.2, {"brow_raise_l": 0.8}),
        ("brow_r", 0.2, {"brow_raise_r": 0.8}),
        ("brow_angry", 0.0, {"brow_lower": 1.0}),
        ("eye_l_open", 0.75, {"eye_wide": 0.25, "eye_close_l": -0.75}),
        ("eye_r_open", 0.75, {"eye_wide": 0.25, "eye_close_r": -0.75}),
        ("pupil_size", 0.4, {"eye_wide": 0.6, "brow_lower": -0.3}),
        ("nose_scrunch", 0.0, {"nose_wrinkle": 1.0}),
        ("whisker_raise", 0.5, {"smile_l": 0.25, "smile_r": 0.25, "frown": -0.4}),
        ("mouth_smile_l", 0.0, {"smile_l": 1.0}),
        ("mouth_smile_r", 0.0, {"smile_r": 1.0}),
        ("mouth_frown", 0.0, {"frown": 1.0}),
        ("mouth_open", 0.0, {"lips_part": 0.4, "jaw_drop": 0.9}),
        ("mouth_width", 0.5, {"lip_stretch": 0.45, "lip_pucker": -0.5}),
        ("tongue_out", 0.0, {}),
    ],
    "alien": [
        ("antenna_l_bend", 0.5, {}),
        ("antenna_r_bend", 0.5, {}),
        ("antenna_glow", 0.0, {}),
        ("brow_l_raise", 0.0, {"brow_raise_l": 1.0}),
        ("brow_r_raise", 0.0, {"brow_raise_r": 1.0}),
        ("brow_l_inner_down", 0.0, {"brow_lower": 1.0}),
        ("brow_r_inner_down", 0.0, {"brow_lower": 1.0}),
        ("eye_l_lid", 0.0, {"eye_close_l": 1.0}),
        ("eye_r_lid", 0.0, {"eye_close_r": 1.0}),
        ("eye_l_size", 0.4, {"eye_wide": 0.6}),
        ("eye_r_size", 0.4, {"eye_wide": 0.6}),
        ("third_eye_open", 0.0, {}),
        ("gaze_x", 0.5, {}),
        ("gaze_y", 0.5, {}),
        ("nose_wrinkle", 0.0, {"nose_wrinkle": 1.0}),
        ("cheek_blush", 0.0, {"smile_l": 0.5, "smile_r": 0.5}),
        ("mouth_corner_l_up", 0.0, {"smile_l": 1.0}),
        ("mouth_corner_r_up", 0.0, {"smile_r": 1.0}),
        ("mouth_corner_l_down", 0.0, {"frown": 1.0}),
        ("mouth_corner_r_down", 0.0, {"frown": 1.0}),
        ("lip_pucker", 0.0, {"lip_pucker": 1.0}),
        ("lip_stretch", 0.0, {"lip_stretch": 1.0}),
        ("upper_lip_raise", 0.0, {"nose_wrinkle": 0.6, "lips_part": 0.4}),
        ("jaw_open", 0.0, {"jaw_drop": 1.0, "lips_part": 0.2}),
        ("tongue_out", 0.0, {}),
        ("head_squash", 0.5, {}),
    ],
    # the 3-D head (`head3d.py`): ARKit-named blend shapes, the subject's own left/right as the AUs'
    "head": [
        ("browInnerUp", 0.0, {"brow_raise_l": 0.5, "brow_raise_r": 0.5}),
        ("browOuterUpLeft", 0.0, {"brow_raise_l": 1.0}),
        ("browOuterUpRight", 0.0, {"brow_raise_r": 1.0}),
        ("browDownLeft", 0.0, {"brow_lower": 1.0}),
        ("browDownRight", 0.0, {"brow_lower": 1.0}),
        ("eyeBlinkLeft", 0.0, {"eye_close_l": 1.0}),
        ("eyeBlinkRight", 0.0, {"eye_close_r": 1.0}),
        ("eyeWideLeft", 0.0, {"eye_wide": 1.0}),
        ("eyeWideRight", 0.0, {"eye_wide": 1.0}),
        ("eyeSquintLeft", 0.0, {"smile_l": 0.3}),
        ("eyeSquintRight", 0.0, {"smile_r": 0.3}),
        ("noseSneerLeft", 0.0, {"nose_wrinkle": 1.0}),
        ("noseSneerRight", 0.0, {"nose_wrinkle": 1.0}),
        ("cheekPuff", 0.0, {}),
        ("mouthSmileLeft", 0.0, {"smile_l": 1.0}),
        ("mouthSmileRight", 0.0, {"smile_r": 1.0}),
        ("mouthFrownLeft", 0.0, {"frown": 1.0}),
        ("mouthFrownRight", 0.0, {"frown": 1.0}),
        ("mouthStretchLeft", 0.0, {"lip_stretch": 1.0}),
        ("mouthStretchRight", 0.0, {"lip_stretch": 1.0}),
        ("mouthUpperUpLeft", 0.0, {"nose_wrinkle": 0.5, "lips_part": 0.3}),
        ("mouthUpperUpRight", 0.0, {"nose_wrinkle": 0.5, "lips_part": 0.3}),
        ("mouthPucker", 0.0, {"lip_pucker": 1.0}),
        ("mouthFunnel", 0.0, {"lip_pucker": 0.35}),
        ("jawOpen", 0.0, {"jaw_drop": 1.0, "lips_part": 0.25}),
        ("tongueOut", 0.0, {}),
    ],
}
_DISPLAY = {"robot": "Robo (square-head robot, LED face)", "cat": "Mochi (cartoon cat)",
            "alien": "Zib (round three-eyed alien)", "head": "Bo (3-D stylised head, ARKit blend shapes)"}
# eye/mouth boxes in avatar model units (centre 0, 1 unit = UNIT of the image side)
UNIT = 0.34
_BOXES = {
    "robot": ([(-0.62, -0.62, -0.1, 0.15), (0.1, -0.62, 0.62, 0.15)], (-0.66, 0.12, 0.66, 0.85)),
    "cat": ([(-0.6, -0.62, -0.1, 0.05), (0.1, -0.62, 0.6, 0.05)], (-0.6, 0.18, 0.6, 1.0)),
    "alien": ([(-0.66, -0.5, -0.08, 0.2), (0.08, -0.5, 0.66, 0.2)], (-0.6, 0.22, 0.6, 1.02)),
}


# the 3-D head's boxes are found by projection (avatar3d.avatar.region_boxes, default camera; a test keeps
# these in step with the mesh): normalised [x0, y0, x1, y1]
MESH_BOXES = {"head": ([[0.2878, 0.3259, 0.4708, 0.5266], [0.5292, 0.3259, 0.7122, 0.5266]],
                       [0.2833, 0.5398, 0.7167, 0.8162], [0.1701, 0.09, 0.8299, 0.91])}


def _norm_box(b):
    return [round(0.5 + UNIT * b[0], 4), round(0.5 + UNIT * b[1], 4),
            round(0.5 + UNIT * b[2], 4), round(0.5 + UNIT * b[3], 4)]


def _spec(name):
    ctrl = _RIGS[name]
    W = np.zeros((len(ctrl), len(AU_INDEX)), np.float32)  # (n_controls, 14)
    for i, (_, _, w) in enumerate(ctrl):
        for au, x in w.items():
            W[i, AU_INDEX[au]] = x
    if name in MESH_BOXES:
        eye_boxes, mouth_box, _ = MESH_BOXES[name]
    else:
        eyes, mouth = _BOXES[name]
        eye_boxes, mouth_box = [_norm_box(b) for b in eyes], _norm_box(mouth)
    return dict(name=name, display_name=_DISPLAY[name], controls=[c[0] for c in ctrl],
                neutral=np.array([c[1] for c in ctrl], np.float32), W=W,
                unmapped=[c[0] for c in ctrl if not c[2]], weights={c[0]: dict(c[2]) for c in ctrl},
                eye_boxes=eye_boxes, mouth_box=mouth_box, mesh=name in MESH_BOXES)


AVATARS = {n: _spec(n) for n in _RIGS}


def au_to_rig(name: str, au) -> np.ndarray:
    """Ground-truth rig of avatar `name` for AU vector(s): (..., 14) -> (..., n_controls)."""
    s = AVATARS[name]
    return np.clip(s["neutral"] + np.asarray(au, np.float32) @ s["W"].T, 0.0, 1.0).astype(np.float32)


def sample_rig(name: str, rng: np.random.Generator):
    """Draw a rig from the avatar's prior: mapped AU prior + noise + unmapped/independent moves.

    Returns (class_index, rig (n_controls,) float32 in [0,1]).
    """
    s = AVATARS[name]
    cls, au = sample_expression(rng)
    rig = au_to_rig(name, au) + rng.normal(0, 0.04, len(s["controls"]))
    for i, c in enumerate(s["controls"]):
        if c in s["unmapped"] and rng.random() < 0.3:
            rig[i] = rng.uniform(0, 1)
    if rng.random() < 0.2:  # independent perturbations so the renderer sees the whole space
        idx = rng.choice(len(rig), size=int(rng.integers(1, 4)), replace=False)
        rig[idx] = rng.uniform(0, 1, len(idx))
    return cls, np.clip(rig, 0, 1).astype(np.float32)


def correspondence_json() -> dict:
    """The AU->rig correspondence of every avatar, for DIR/eval/au_to_rig.json."""
    return {n: {"formula": "rig[c] = clip(neutral[c] + sum_au weight[c][au] * au, 0, 1)",
                "controls": s["controls"], "unmapped": s["unmapped"],
                "neutral": {c: float(v) for c, v in zip(s["controls"], s["neutral"])},
                "weights": s["weights"]} for n, s in AVATARS.items()}
