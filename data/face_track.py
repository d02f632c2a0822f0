"""Square face crops from photos, and a smoothed face track over video frames.

A crop is a square around the main face: centred on the detector box, with side
``sqrt(w * h) * (1 + 2 * margin)`` (the geometric mean keeps the crop scale similar across
detectors whose boxes have different aspect ratios), resized to ``CropConfig.size``. Parts
outside the image are black.

Every stage frames faces this way: stage 2 crops FEC boxes, stage 3b crops actor faces (boxes
from a ``face_boxes.csv`` beside them) and avatar renders (``face_box`` in ``avatar.yaml``), and
animate crops detector boxes, each with the margin its config gives (``crop_face``).

Over a video, ``FaceTracker`` follows ONE person. Only faces of at least ``min_face`` pixels
count ("usable"). While a track exists, the only face that updates it is one whose centre lies
within one track side of the last square (the nearest, if several); every other face is ignored,
however large. A frame without such a face is HELD (last square kept) for up to ``max_missing``
frames; on the next one the track ends, and a new one starts at once on a usable face if there
is one, else frames are MISSING until a face appears. Which face starts a track is the policy
``pick`` (``FACE_PICKS``): 'largest', 'center' (nearest the frame centre) or 'track' (largest
for the first track, then the face most like the lost one). Centre and side are smoothed by a
One-Euro filter in units of the face size (so the parameters do not depend on resolution); it
restarts with every new track, so the crop jumps to the new person rather than gliding.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from common.config import check_choice
from data.face_detect import Box
from data.smoothing import OneEuroFilter, SmoothingConfig

DETECTED, HELD, MISSING = "detected", "held", "missing"
FACE_PICKS = ("track", "largest", "center")  # how the face that starts a track is chosen


def _track_smoothing() -> SmoothingConfig:
    return SmoothingConfig(min_cutoff=1.0, beta=2.0, d_cutoff=1.0)


@dataclass
class CropConfig:
    """Args:
        size: output side in pixels (the stage's input size, e.g. 224).
        margin: added on each side of the face, as a fraction of the face size.
        max_missing: frames to keep the last square after the face is lost.
        min_face: faces smaller than this (pixels, sqrt(w * h)) are ignored.
        track: One-Euro parameters for the track, in face sizes (beta per face size / s).
    """
    size: int = 224
    margin: float = 0.3
    max_missing: int = 5
    min_face: float = 20.0
    track: SmoothingConfig = field(default_factory=_track_smoothing)

    def __post_init__(self):
        if isinstance(self.track, dict):  # from YAML
            self.track = SmoothingConfig(**self.track)
        if self.size < 8 or self.margin < 0 or self.max_missing < 0:
            raise ValueError(f"bad CropConfig: size={self.size} margin={self.margin} "
                             f"max_missing={self.max_missing}")


@dataclass
class Square:
    """A square region in image pixels: centre (cx, cy) and side length."""
    cx: float
    cy: float
    side: float

    def corners(self) -> tuple[int, int, int, int]:
        """Integer (x0, y0, x1, y1), x1/y1 exclusive."""
        s = max(int(round(self.side)), 1)
        x0, y0 = int(round(self.cx - s / 2)), int(round(self.cy - s / 2))
        return x0, y0, x0 + s, y0 + s


@dataclass
class TrackResult:
    """One frame of a track.

    Args:
        status: DETECTED, HELD or MISSING (then square is None).
        square: the smoothed crop square.
        box: the raw detection used (DETECTED only).
        n_faces: usable faces (side >= min_face) among the frame's detections.
        new_track: True on the frame a track starts (first acquisition or re-acquisition).
    """
    status: str
    square: Square | None
    box: Box | None = None
    n_faces: int = 0
    new_track: bool = False


def face_size(box: Box) -> float:
    return math.sqrt(max(box.area, 0.0))


def square_from_box(box: Box, margin: float) -> Square:
    cx, cy = box.center
    return Square(cx, cy, face_size(box) * (1 + 2 * margin))


def crop_square(rgb: np.ndarray, sq: Square, size: int | None) -> np.ndarray:
    """(H, W, 3) uint8 -> (size, size, 3) uint8 (size None: the square's own side); outside the
    image is black."""
    h, w = rgb.shape[:2]
    x0, y0, x1, y1 = sq.corners()
    s = x1 - x0
    out = np.zeros((s, s, 3), dtype=rgb.dtype)
    ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if ix1 > ix0 and iy1 > iy0:
        out[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0] = rgb[iy0:iy1, ix0:ix1]
    if size is None or size == s:
        return out
    interp = cv2.INTER_AREA if s > size else cv2.INTER_LINEAR
    return cv2.resize(out, (size, size), interpolation=interp)


def square_from_norm_box(box, width: int, height: int, margin: float) -> Square:
    """The face square of a normalised (x0, y0, x1, y1) box in a `width` x `height` image."""
    return square_from_box(Box(box[0] * width, box[1] * height, box[2] * width, box[3] * height), margin)


def crop_face(img: Image.Image, box: tuple[float, float, float, float], margin: float) -> Image.Image:
    """PIL image + normalised (x0, y0, x1, y1) face box -> the square face crop at its native side."""
    return Image.fromarray(crop_square(np.asarray(img), square_from_norm_box(box, *img.size, margin), None))


FACE_BOXES_FILE = "face_boxes.csv"


def read_face_boxes(folders: str | Path | list) -> dict[Path, tuple[float, float, float, float]]:
    """``<folder>/face_boxes.csv`` of one folder or several (header ``image,x0,y0,x1,y1``; image paths
    relative to the folder, boxes normalised to [0, 1]) -> {image file: box}; a folder without such
    a file adds nothing (its images are then taken as face crops already)."""
    if isinstance(folders, (list, tuple)):
        return {k: v for f in folders for k, v in read_face_boxes(f).items()}
    folder = folders
    path = Path(folder) / FACE_BOXES_FILE
    if not path.is_file():
        return {}
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows or [c.strip() for c in rows[0]] != ["image", "x0", "y0", "x1", "y1"]:
        raise ValueError(f"{path}: header must be 'image,x0,y0,x1,y1' (normalised face boxes)")
    out = {}
    for line, row in enumerate(rows[1:], start=2):
        try:
            x0, y0, x1, y1 = (float(v) for v in row[1:5])
        except (ValueError, IndexError):
            raise ValueError(f"{path}, line {line}: expected image,x0,y0,x1,y1 with numbers, got {row}") from None
        if len(row) != 5 or not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
            raise ValueError(f"{path}, line {line}: need 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1, got {row}")
        out[Path(folder) / row[0].strip()] = (x0, y0, x1, y1)
    return out


def usable_faces(boxes: list[Box], min_face: float) -> list[Box]:
    """The boxes whose face size (sqrt(w * h)) is at least `min_face` pixels."""
    return [b for b in boxes if face_size(b) >= min_face]


def continuing_face(boxes: list[Box], sq: Square) -> Box | None:
    """The box whose centre is nearest to `sq`'s, if within one side of it; else None."""
    if not boxes:
        return None
    dist = [math.hypot(b.center[0] - sq.cx, b.center[1] - sq.cy) for b in boxes]
    i = int(np.argmin(dist))
    return boxes[i] if dist[i] < sq.side else None


def largest_face(boxes: list[Box]) -> Box:
    """The box with the largest area * score (the most prominent confident face)."""
    return max(boxes, key=lambda b: b.area * b.score)


def most_central_face(boxes: list[Box], frame_size: tuple[int, int] | None) -> Box:
    """The box whose centre is nearest the centre of a (width, height) frame."""
    if frame_size is None:
        raise ValueError("face pick 'center' needs the frame size (width, height)")
    fx, fy = frame_size[0] / 2, frame_size[1] / 2
    return min(boxes, key=lambda b: math.hypot(b.center[0] - fx, b.center[1] - fy))


def most_similar_face(boxes: list[Box], lost: Square, margin: float) -> Box:
    """The box most like the lost track: centre distance in lost sides + |log(side / lost side)|."""
    def unlikeness(b: Box) -> float:
        sq = square_from_box(b, margin)
        dist = math.hypot(sq.cx - lost.cx, sq.cy - lost.cy) / lost.side
        return dist + abs(math.log(max(sq.side, 1e-6) / lost.side))
    return min(boxes, key=unlikeness)


def choose_face(boxes: list[Box], pick: str, frame_size: tuple[int, int] | None = None,
                lost: Square | None = None, margin: float = 0.0) -> Box | None:
    """The face that starts a track, by policy; None when `boxes` is empty.

    Args:
        boxes: usable faces of the frame.
        pick: one of FACE_PICKS.
        frame_size: (width, height) of the frame, needed by 'center'.
        lost: last square of the previous track, if any ('track' prefers a face like it).
        margin: crop margin, to compare a box's square with `lost`.
    """
    check_choice("face pick", pick, FACE_PICKS)
    if not boxes:
        return None
    if pick == "center":
        return most_central_face(boxes, frame_size)
    if pick == "track" and lost is not None:
        return most_similar_face(boxes, lost, margin)
    return largest_face(boxes)


def detect_near(detector, rgb: np.ndarray, sq: Square, scale: float, side: int) -> list[Box]:
    """Faces in a window of `scale` times the side of `sq` centred on it, in frame pixels.

    The part of the window inside the frame is resized by the factor that makes the whole window
    `side` pixels (never enlarged), so a tracked face reaches the detector at a fixed size whatever
    the frame size. Cheaper than the whole frame (YuNet on 640x360 video: ~2-3 ms at 160 px
    against ~6 for the whole frame at 320)."""
    x0, y0, x1, y1 = Square(sq.cx, sq.cy, sq.side * scale).corners()
    h, w = rgb.shape[:2]
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    f = max(sq.side * scale / side, 1.0)  # frame pixels per detector pixel
    if min(x1 - x0, y1 - y0) < 8 * f:  # (almost) all of the window is outside the frame
        return []
    part = rgb[y0:y1, x0:x1]
    if f > 1:  # given as factors, OpenCV maps pixel x of the result to exactly x * f in `part`
        part = cv2.resize(part, None, fx=1 / f, fy=1 / f, interpolation=cv2.INTER_AREA)
    return [b.scaled(f, x0, y0) for b in detector.detect(part)]


def crop_image(rgb: np.ndarray, boxes: list[Box], cfg: CropConfig, pick: str = "largest"
               ) -> tuple[np.ndarray | None, Box | None]:
    """Crop the main face of a single photo; (None, None) when no usable face.

    Args:
        rgb: (H, W, 3) uint8 image.
        boxes: its detections.
        cfg: crop settings (size, margin, min_face).
        pick: one of FACE_PICKS ('track' means 'largest' for a single image).
    """
    box = choose_face(usable_faces(boxes, cfg.min_face), pick, (rgb.shape[1], rgb.shape[0]))
    if box is None:
        return None, None
    return crop_square(rgb, square_from_box(box, cfg.margin), cfg.size), box


class FaceTracker:
    """Smoothed square track of ONE main face over consecutive frames.

    Args:
        cfg: crop settings (margin, max_missing, min_face, track smoothing).
        fps: frame rate of the video (the filter works in seconds; the step when no time is given).
        pick: one of FACE_PICKS, how the face that starts a track is chosen.
    Call ``update(boxes, t, frame_size)`` once per frame, in order, with that frame's detections.
    """

    def __init__(self, cfg: CropConfig, fps: float, pick: str = "track"):
        check_choice("face pick", pick, FACE_PICKS)
        self.cfg, self.pick = cfg, pick
        self.filter = OneEuroFilter.from_config(cfg.track, fps)
        self.last: Square | None = None  # last smoothed square of the current track (None: no track)
        self.lost: Square | None = None  # last square of the previous track ('track' re-acquisition)
        self.missing = 0                 # consecutive frames without the tracked face
        self.ref = 1.0                   # face-size unit of the filter state (pixels)

    def match(self, boxes: list[Box]) -> Box | None:
        """The usable box that would continue the current track; None without a track or near face."""
        if self.last is None:
            return None
        return continuing_face(usable_faces(boxes, self.cfg.min_face), self.last)

    def update(self, boxes: list[Box], t: float | None = None,
               frame_size: tuple[int, int] | None = None) -> TrackResult:
        """Advance the track by one frame.

        Args:
            boxes: the frame's detections, in frame pixels.
            t: presentation time of the frame in seconds (None: one 1 / fps step after the last
                detected frame of the track).
            frame_size: (width, height) of the frame; needed by pick='center'.
        """
        faces = usable_faces(boxes, self.cfg.min_face)
        if self.last is not None:
            box = continuing_face(faces, self.last)
            if box is not None:
                return self._follow(box, t, len(faces))
            self.missing += 1
            if self.missing <= self.cfg.max_missing:
                return TrackResult(HELD, self.last, None, len(faces))
            self.lost, self.last = self.last, None  # the hold ran out: the track ends here
        box = choose_face(faces, self.pick, frame_size, self.lost, self.cfg.margin)
        if box is None:
            return TrackResult(MISSING, None, None, len(faces))
        return self._start(box, t, len(faces))

    def _start(self, box: Box, t: float | None, n_faces: int) -> TrackResult:
        """A new track on `box`: the filter restarts in its units and the square is its raw one."""
        raw = square_from_box(box, self.cfg.margin)
        self.filter.reset()
        self.ref = raw.side
        self.filter(np.array([raw.cx, raw.cy, raw.side]) / self.ref, t)  # (3,) seeds the state
        self.missing, self.last = 0, raw
        return TrackResult(DETECTED, raw, box, n_faces, new_track=True)

    def _follow(self, box: Box, t: float | None, n_faces: int) -> TrackResult:
        """Continue the track with `box`, smoothed."""
        raw = square_from_box(box, self.cfg.margin)
        sq = raw
        if self.cfg.track.enabled:
            v = self.filter(np.array([raw.cx, raw.cy, raw.side]) / self.ref, t)  # (3,) in face sizes
            sq = Square(*(float(x) for x in v * self.ref))
        self.missing, self.last = 0, sq
        return TrackResult(DETECTED, sq, box, n_faces)


def preview_frame(rgb: np.ndarray, res: TrackResult, crop: np.ndarray | None) -> np.ndarray:
    """Side-by-side (H, W + H, 3): the frame with the track square | the crop at height H."""
    h = rgb.shape[0]
    left = np.ascontiguousarray(rgb.copy())
    colour = {DETECTED: (0, 255, 0), HELD: (255, 200, 0), MISSING: (255, 0, 0)}[res.status]
    t = max(1, h // 180)
    if res.box is not None:
        b = res.box
        cv2.rectangle(left, (int(b.x0), int(b.y0)), (int(b.x1), int(b.y1)), (255, 255, 255), 1)
    if res.square is not None:
        x0, y0, x1, y1 = res.square.corners()
        cv2.rectangle(left, (x0, y0), (x1 - 1, y1 - 1), colour, t)
    cv2.putText(left, res.status, (5, max(12, h // 16)), cv2.FONT_HERSHEY_SIMPLEX,
                max(0.35, h / 720), colour, t)
    right = np.zeros((h, h, 3), np.uint8) if crop is None else cv2.resize(crop, (h, h))
    return np.concatenate([left, right], axis=1)
