"""ARKit blend-shape names, their mapping from an avatar's control names, and Live Link Face's CSV.

    arkit_map(["eyeBlink_L", "jawOpen", "cheekRaiser_L"])  # {'eyeBlink_L': 'eyeBlinkLeft', 'jawOpen': 'jawOpen'}
    write_livelink_csv("take.csv", times, {"jawOpen": curve, ...})  # Live Link Face's recording format

Controls map to ARKit names by name: exactly (`jawOpen`), ignoring the first letter's case
(`JawOpen`), or with ICT FaceKit's / Maya's side suffixes (`eyeBlink_L` -> `eyeBlinkLeft`). ARKit
names without a side (`browInnerUp`, `cheekPuff`) also take a sided pair (`browInnerUp_L`,
`browInnerUp_R`); the pair's mean is written. An `arkit_names:` map in `avatar.yaml` overrides.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

# The 52 ARKit blend shapes in Live Link Face's column order (PascalCase there, camelCase in ARKit).
LIVELINK_ORDER = [
    "EyeBlinkLeft", "EyeLookDownLeft", "EyeLookInLeft", "EyeLookOutLeft", "EyeLookUpLeft", "EyeSquintLeft",
    "EyeWideLeft", "EyeBlinkRight", "EyeLookDownRight", "EyeLookInRight", "EyeLookOutRight", "EyeLookUpRight",
    "EyeSquintRight", "EyeWideRight", "JawForward", "JawRight", "JawLeft", "JawOpen", "MouthClose", "MouthFunnel",
    "MouthPucker", "MouthRight", "MouthLeft", "MouthSmileLeft", "MouthSmileRight", "MouthFrownLeft",
    "MouthFrownRight", "MouthDimpleLeft", "MouthDimpleRight", "MouthStretchLeft", "MouthStretchRight",
    "MouthRollLower", "MouthRollUpper", "MouthShrugLower", "MouthShrugUpper", "MouthPressLeft", "MouthPressRight",
    "MouthLowerDownLeft", "MouthLowerDownRight", "MouthUpperUpLeft", "MouthUpperUpRight", "BrowDownLeft",
    "BrowDownRight", "BrowInnerUp", "BrowOuterUpLeft", "BrowOuterUpRight", "CheekPuff", "CheekSquintLeft",
    "CheekSquintRight", "NoseSneerLeft", "NoseSneerRight", "TongueOut"]
LIVELINK_ROTATIONS = ["HeadYaw", "HeadPitch", "HeadRoll", "LeftEyeYaw", "LeftEyePitch", "LeftEyeRoll",
                      "RightEyeYaw", "RightEyePitch", "RightEyeRoll"]
LIVELINK_HEADER = ["Timecode", "BlendShapeCount", *LIVELINK_ORDER, *LIVELINK_ROTATIONS]
ARKIT_NAMES = [n[0].lower() + n[1:] for n in LIVELINK_ORDER]
_SIDES = {"_L": "Left", "_R": "Right", ".L": "Left", ".R": "Right", "_l": "Left", "_r": "Right"}


def _lower_first(name: str) -> str:
    return name[:1].lower() + name[1:]


def arkit_name(control: str) -> str | None:
    """The ARKit name `control` stands for, or None."""
    base = _lower_first(control)
    if base in ARKIT_NAMES:
        return base
    for suffix, side in _SIDES.items():
        if base.endswith(suffix):
            stem = base[: -len(suffix)]
            if stem + side in ARKIT_NAMES:
                return stem + side
            if stem in ARKIT_NAMES:  # a sided pair of a one-sided ARKit shape (browInnerUp_L)
                return stem
    return None


def arkit_map(controls: list[str], overrides: dict[str, str] | None = None) -> dict[str, str]:
    """{control: ARKit name} for every control that maps (by name, or through `overrides`)."""
    out = {c: n for c in controls if (n := arkit_name(c)) is not None}
    for control, name in (overrides or {}).items():
        if control not in controls:
            raise KeyError(f"arkit_names: '{control}' is not one of the avatar's controls {controls}")
        if _lower_first(name) not in ARKIT_NAMES:
            raise KeyError(f"arkit_names: '{name}' is not an ARKit blend-shape name (one of {ARKIT_NAMES})")
        out[control] = _lower_first(name)
    return out


def to_arkit(curves: np.ndarray, controls: list[str], mapping: dict[str, str]) -> dict[str, np.ndarray]:
    """(N, n_controls) curves -> {ARKit name: (N,) curve}, the mean where several controls map to one."""
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(controls):
        if c in mapping:
            groups.setdefault(mapping[c], []).append(i)
    return {name: curves[:, idx].mean(1) for name, idx in groups.items()}


def livelink_timecode(t: float, fps: float) -> str:
    """`HH:MM:SS:FF.fff`: the frame FF within the second at `fps` and the fraction of a frame after it."""
    frames = t * fps
    whole = math.floor(frames + 1e-6)
    frac = max(frames - whole, 0.0)
    per_second = max(1, round(fps))
    seconds, ff = divmod(whole, per_second)
    hh, rem = divmod(seconds, 3600)
    mm, ss = divmod(rem, 60)
    milli = min(int(round(frac * 1000)), 999)
    return f"{hh:02d}:{mm:02d}:{ss:02d}:{ff:02d}.{milli:03d}"


def write_livelink_csv(path: str | Path, times: np.ndarray, shapes: dict[str, np.ndarray], fps: float) -> None:
    """A Live Link Face recording: header `Timecode,BlendShapeCount,EyeBlinkLeft,...,RightEyeRoll`, one row per
    frame; shapes not in `shapes` (ARKit camelCase names) and the head/eye rotations are 0."""
    unknown = sorted(set(shapes) - set(ARKIT_NAMES))
    if unknown:
        raise KeyError(f"not ARKit blend-shape names: {unknown}")
    n = len(times)
    table = np.zeros((n, len(LIVELINK_ORDER) + len(LIVELINK_ROTATIONS)), np.float64)
    for name, curve in shapes.items():
        table[:, ARKIT_NAMES.index(name)] = np.clip(np.asarray(curve, np.float64).reshape(n), 0.0, 1.0)
    with Path(path).open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(LIVELINK_HEADER)
        for t, row in zip(times, table):
            w.writerow([livelink_timecode(float(t), fps), len(LIVELINK_ORDER) + len(LIVELINK_ROTATIONS),
                        *(f"{v:.6g}" for v in row)])


def read_livelink_csv(path: str | Path) -> tuple[list[str], dict[str, np.ndarray]]:
    """Timecodes and {column: values} of a Live Link Face CSV (for checks and round trips)."""
    with Path(path).open(newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    return [r[0] for r in body], {h: np.asarray([float(r[i]) for r in body]) for i, h in enumerate(header) if i > 0}
