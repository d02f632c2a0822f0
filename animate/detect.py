"""Frames -> faces: detection, one face track and crops, and a background thread to run them ahead.

    items = prefetch(detect_frames(src.frames(), detector, cfg, src.fps, True, timer), depth=32)
    for it in items: it.t, it.status, it.crop, it.faces, it.new_track

`animate.pipeline.Animator` consumes the items.
"""
from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from animate.outputs import StepTimer, frame_panel
from data.face_track import (
    DETECTED,
    MISSING,
    FaceTracker,
    crop_image,
    crop_square,
    detect_near,
    square_from_box,
    usable_faces,
)

if TYPE_CHECKING:
    from animate.config import AnimateSettings


@dataclass
class Item:
    """One frame after detection.

    Attributes:
        index / t: frame number and presentation time (s). status: DETECTED, HELD or MISSING.
        crop: the face crop (None when missing). panel: the preview's input panel (None without preview).
        faces: faces seen (see `detect_frames`). new_track: this frame starts a new face track.
        frame: the whole RGB frame, kept only for `driver=mediapipe` (None otherwise).
    """
    index: int
    t: float
    status: str
    crop: np.ndarray | None
    panel: np.ndarray | None
    faces: int = 0
    new_track: bool = False
    frame: np.ndarray | None = None


def detect_frames(frames: Iterable[tuple[float, np.ndarray]], detector, cfg: AnimateSettings, fps: float,
                  video: bool, timer: StepTimer) -> Iterator[Item]:
    """Decode ('decode'), detect, track and crop ('detect') each (time, frame), and draw its input panel ('panel').

    Video: one face track (`data.face_track.FaceTracker`, policy `cfg.face`), which other faces never take
    over. Once a face is tracked the detector looks in a window around it (`cfg.detect_window`), and in
    the whole frame only when the window does not hold the tracked face, on the frame after one without
    it, and on every `cfg.count_faces_every`-th frame, so that other people are counted: `faces` is the
    number of usable faces in the last whole-frame search, or in the window when it holds more.
    Images: the face that `cfg.face` picks ('track' = 'largest'), every image on its own.
    """
    tracker = FaceTracker(cfg.crop, fps, pick=cfg.face) if video else None
    it, panel_wh, whole_count, status = iter(frames), None, 0, MISSING
    for i in itertools.count():
        if cfg.max_frames and i >= cfg.max_frames:
            return
        with timer("decode"):
            nxt = next(it, None)
        if nxt is None:
            return
        t, rgb = nxt
        with timer("detect"):
            near, matched, whole = [], False, True
            if video and tracker.last is not None and cfg.detect_window:  # near the tracked face first
                near = detect_near(detector, rgb, tracker.last, cfg.detect_window, cfg.detect_window_side)
                matched = tracker.match(near) is not None
                whole = (not matched or status != DETECTED  # lost, or back after a hold
                         or (cfg.count_faces_every > 0 and i % cfg.count_faces_every == 0))
            boxes = detector.detect(rgb) if whole else near
            n = len(usable_faces(boxes, cfg.crop.min_face))
            whole_count = n if whole else whole_count
            n = max(n, len(usable_faces(near, cfg.crop.min_face)))
            if matched:  # the window saw the tracked face (the whole frame, at a lower scale, may miss it)
                boxes = near
            if video:
                res = tracker.update(boxes, t=t, frame_size=(rgb.shape[1], rgb.shape[0]))
                status, sq, new_track = res.status, res.square, res.new_track
                crop = crop_square(rgb, sq, cfg.crop.size) if sq is not None else None
            else:
                crop, box = crop_image(rgb, boxes, cfg.crop, pick=cfg.face)
                status, new_track = (DETECTED if crop is not None else MISSING), True
                sq = square_from_box(box, cfg.crop.margin) if box is not None else None
        panel = None
        if cfg.preview:
            with timer("panel"):
                if panel_wh is None:  # the first frame fixes the panel's aspect
                    h = cfg.preview_size
                    panel_wh = (2 * round(h * rgb.shape[1] / rgb.shape[0] / 2), h)
                panel = frame_panel(rgb, sq.corners() if sq is not None else None, status, panel_wh)
        yield Item(i, t, status, crop, panel, max(n, whole_count), new_track,
                   rgb if cfg.driver == "mediapipe" else None)


PRODUCER_STEPS = ("decode", "detect", "panel")  # timed in the prefetch thread when there is one


def prefetch(items: Iterator[Item], depth: int) -> Iterator[Item]:
    """Run `items` (decode + detect) in a background thread, up to `depth` items ahead; 0 = inline.

    OpenCV decoding and the detectors release the GIL, so they overlap with the networks. An error in
    the thread is raised here; stopping early stops the thread."""
    if depth <= 0:
        yield from items
        return
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop, end = threading.Event(), object()

    def work():
        try:
            for it in items:
                while not stop.is_set():
                    try:
                        q.put(it, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(end)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            q.put(e)

    th = threading.Thread(target=work, name="animate-prefetch", daemon=True)
    th.start()
    try:
        while (it := q.get()) is not end:
            if isinstance(it, BaseException):
                raise it
            yield it
    finally:
        stop.set()
        th.join(timeout=5)
