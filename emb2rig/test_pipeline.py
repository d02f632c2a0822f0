"""The streamed test-mode pipeline: frames -> detection and crop -> batched encode / decode / smooth /
render -> preview frames. `emb2rig.test_mode.animate` wires it to the outputs.

    frames, fps, video, info = open_source("clip.mp4", cfg)
    anim = Animator(model, frozen, cfg, device, "bf16", fps, smooth=video, timer=StepTimer(device))
    items = prefetch(detect_frames(frames, detector, cfg, fps, video, timer), depth=32)  # background thread
    for preview in anim.process(items): ...
    curves = anim.curves()          # (T, A, max_n); anim.found (T,) bool; anim.distances per avatar

Every network call runs under one autocast; each frame is encoded once and each avatar rendered once
per frame with a face (frames without one reuse the last render).
"""
from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from common.device import autocast
from data.face_track import (
    DETECTED,
    MISSING,
    FaceTracker,
    crop_image,
    crop_square,
    detect_near,
    pick_main_face,
    square_from_box,
)
from data.smoothing import OneEuroFilter
from data.video import VIDEO_EXTS, VideoReader, is_video, iter_images
from emb2rig.test_outputs import StepTimer, compose, frame_panel, renders_to_uint8, square_panel

if TYPE_CHECKING:
    from emb2rig.test_mode import TestModeConfig


@dataclass
class Item:
    """One frame after detection: its index, status, crop (None when missing) and preview panel."""
    index: int
    status: str
    crop: np.ndarray | None
    panel: np.ndarray | None


def open_source(path: str | Path, cfg: TestModeConfig) -> tuple[Iterable[np.ndarray], float, bool, dict]:
    """(RGB frames, fps, is_video, info) of a video file or an image folder; for a folder, info's lists
    'images' (names, in frame order) and 'skipped' ('name: reason' of unreadable files) fill as it is read."""
    path = Path(path)
    if is_video(path):
        reader = VideoReader(path)
        return reader, reader.fps, True, {"images": [], "skipped": []}
    if path.is_dir():
        info: dict = {"images": [], "skipped": []}
        bad: list = []

        def frames():
            for p, rgb in iter_images(path, bad):
                info["images"].append(str(p.relative_to(path)))
                yield rgb
            info["skipped"] += [f"{p.relative_to(path)}: {why}" for p, why in bad]
        return frames(), cfg.image_fps, False, info
    raise ValueError(f"test.input '{path}' is neither a video ({', '.join(VIDEO_EXTS)}) nor a folder of images")


def detect_frames(frames: Iterable[np.ndarray], detector, cfg: TestModeConfig, fps: float, video: bool,
                  timer: StepTimer) -> Iterator[Item]:
    """Decode ('decode'), detect, track and crop ('detect') each frame, and draw its input panel ('panel').

    In a video with a tracked face, the detector first looks in a window around it
    (`cfg.detect_window`), and in the whole frame only when the window holds no usable face."""
    tracker, it, panel_wh = FaceTracker(cfg.crop, fps) if video else None, iter(frames), None
    for i in itertools.count():
        if cfg.max_frames and i >= cfg.max_frames:
            return
        with timer("decode"):
            rgb = next(it, None)
        if rgb is None:
            return
        with timer("detect"):
            boxes = []
            if video and tracker.last is not None and cfg.detect_window:  # near the tracked face first
                boxes = detect_near(detector, rgb, tracker.last, cfg.detect_window, cfg.detect_window_side)
            if pick_main_face(boxes, tracker.last if video else None, cfg.crop.min_face) is None:
                boxes = detector.detect(rgb)  # the whole frame: no window, or no usable face in it
            if video:
                res = tracker.update(boxes)
                status, sq = res.status, res.square
                crop = crop_square(rgb, sq, cfg.crop.size) if sq is not None else None
            else:
                crop, box = crop_image(rgb, boxes, cfg.crop)
                status = DETECTED if crop is not None else MISSING
                sq = square_from_box(box, cfg.crop.margin) if box is not None else None
        panel = None
        if cfg.preview:
            with timer("panel"):
                if panel_wh is None:  # the first frame fixes the panel's aspect
                    h = cfg.preview_size
                    panel_wh = (2 * round(h * rgb.shape[1] / rgb.shape[0] / 2), h)
                panel = frame_panel(rgb, sq.corners() if sq is not None else None, status, panel_wh)
        yield Item(i, status, crop, panel)


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

    th = threading.Thread(target=work, name="test-mode-prefetch", daemon=True)
    th.start()
    try:
        while (it := q.get()) is not end:
            if isinstance(it, BaseException):
                raise it
            yield it
    finally:
        stop.set()
        th.join(timeout=5)


class Animator:
    """Batches detected frames through encoder -> decoder -> smoothing -> renderer -> preview frames.

    Args:
        model: the trained Emb2Rig (eval mode).
        frozen: emb2rig.frozen.Frozen holding the encoder and the renderer; prepared in place for
            `precision` and `cfg.quantize` (`Frozen.for_inference`), so it serves no other setting after.
        cfg: TestModeConfig.
        device / precision: where and how ('fp32' | 'bf16' | 'fp16') the networks run.
        fps: frame rate of the input (for the smoothing filter).
        smooth: filter the rig curves (video input with `cfg.smoothing.enabled`).
        timer: StepTimer collecting seconds per step.
    After `process` is exhausted: `curves()` (T, A, max_n) float32, `found` (T,) bool (a face was detected),
    `distances` per avatar: the expression distances of the measured frames.
    """

    def __init__(self, model, frozen, cfg: TestModeConfig, device: torch.device, precision: str, fps: float,
                 smooth: bool, timer: StepTimer):
        self.model, self.frozen, self.cfg, self.device, self.precision = model, frozen, cfg, device, precision
        self.A, self.timer = len(frozen.names), timer
        frozen.for_inference(precision, cfg.quantize)  # in place: BatchNorm folded, weights cast or int8
        self.filter = OneEuroFilter.from_config(cfg.smoothing, fps) if smooth else None
        self.last: np.ndarray | None = None  # (A, max_n) rig of the last frame with a face
        self.last_panels: list[np.ndarray | None] = [None] * self.A
        self.rig_rows: list[np.ndarray | None] = []
        self.found: list[bool] = []
        self.distances: list[list[float]] = [[] for _ in range(self.A)]
        self._queued: list[tuple[torch.Tensor, torch.Tensor]] = []  # (renders, input embeddings) to encode

    def _encode(self, crops: np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Encode (B, S, S, 3) uint8 crops (or none) in one batch with the renders queued for the
        expression distance (separate small batches run far below the encoder's throughput); append
        the renders' distances and return the crops' (feature (B, D), embedding (B, E))."""
        enc, parts = self.frozen.encoder, []
        if crops is not None:
            x = torch.from_numpy(crops).to(self.device).permute(0, 3, 1, 2).float().div_(255)  # (B, 3, S, S)
            parts.append(enc.preprocess(x))
        parts += [r for r, _ in self._queued]
        if not parts:
            return None
        n_crops = len(crops) if crops is not None else 0
        with self.timer("encode") as span, autocast(self.device, self.precision):
            feat, emb = enc(torch.cat(parts))  # (B + n, D), (B + n, E)
        if self._queued:  # book the renders' share of the call as 'expression_distance'
            share = span[0] * (1 - n_crops / len(feat))
            self.timer.seconds["encode"] -= share
            self.timer.seconds["expression_distance"] += share
            emb_in = torch.cat([e for _, e in self._queued])  # (m, E) input embedding per render
            d = (emb[n_crops:].float() - emb_in).norm(dim=-1).view(-1, self.A).cpu()  # (m / A, A)
            for a in range(self.A):
                self.distances[a] += d[:, a].tolist()
            self._queued = []
        return feat[:n_crops], emb[:n_crops].float()

    def _decode(self, feat: torch.Tensor) -> np.ndarray:
        """(B, D) features -> every avatar's rig (B, A, max_n) float32 numpy (one decoder call)."""
        with self.timer("decode_rigs"), autocast(self.device, self.precision):
            B = len(feat)
            avatar = torch.arange(self.A, device=self.device).repeat(B)  # (B * A,) frame-major
            rig = self.model(feat.float().repeat_interleave(self.A, 0), avatar)  # (B * A, max_n)
            return rig.float().view(B, self.A, -1).cpu().numpy()

    def _render(self, rigs: np.ndarray) -> torch.Tensor:
        """(m, A, max_n) rigs -> (m * A, 3, R, R) renders, frame-major (each avatar once per frame)."""
        m = len(rigs)
        with self.timer("render"), autocast(self.device, self.precision):
            avatar = torch.arange(self.A, device=self.device).repeat(m)
            return self.frozen.render(torch.from_numpy(rigs).to(self.device).flatten(0, 1), avatar)

    def _queue_distance(self, renders: torch.Tensor, emb_in: torch.Tensor) -> None:
        """Queue renders (m * A, 3, R, R) of m frames with the frames' input embeddings (m, E); they are
        encoded with the next batch of crops (or at the end)."""
        avatar = torch.arange(self.A, device=renders.device).repeat(len(renders) // self.A)
        x = self.frozen.encoder_input(renders.float().contiguous(), avatar)  # (m * A, 3, S, S) face crops
        self._queued.append((x, emb_in.repeat_interleave(self.A, 0)))

    def _step(self, batch: list[Item]) -> list[np.ndarray]:
        """One batch in frame order: encode + decode the frames with a face, smooth, keep the last rig on
        the others, render each avatar once per new rig, queue distances; returns the preview frames."""
        det = [it for it in batch if it.status == DETECTED]
        if det:
            feat, emb = self._encode(np.stack([it.crop for it in det]))
            raw = self._decode(feat)
        fresh, j = [], 0  # fresh: (item, smoothed rig, row in det) of frames with a new rig
        for it in batch:
            if it.status == DETECTED:
                r = raw[j] if self.filter is None else self.filter(raw[j]).astype(np.float32)
                self.last, j = r, j + 1
                fresh.append((it, r, j - 1))
            elif self.filter is not None:
                self.filter.reset()  # the next face starts the curves afresh
            self.rig_rows.append(self.last)
            self.found.append(it.status == DETECTED)
        every = self.cfg.expression_distance_every
        measured = lambda f: every > 0 and f[0].index % every == 0  # noqa: E731
        measure = [f for f in fresh if measured(f)]
        todo = fresh if self.cfg.preview else measure  # frames to render
        if todo:
            renders = self._render(np.stack([r for _, r, _ in todo]))  # (m * A, 3, R, R)
            if measure:
                sel = [k for k, f in enumerate(todo) if measured(f)]
                idx = torch.tensor([a + self.A * k for k in sel for a in range(self.A)])
                self._queue_distance(renders[idx], emb[torch.tensor([f[2] for f in measure])])
        if not self.cfg.preview:
            return []
        out, P = [], self.cfg.preview_size
        with self.timer("preview"):
            panels = renders_to_uint8(renders, P) if todo else None  # (m * A, P, P, 3)
            k = 0
            for it in batch:
                if k < len(todo) and todo[k][0] is it:
                    self.last_panels = list(panels[k * self.A:(k + 1) * self.A])
                    k += 1
                out.append(compose([it.panel, square_panel(it.crop, P), *map(lambda p: square_panel(p, P),
                                   self.last_panels)], ["", "crop", *self.frozen.names]))
        return out

    @torch.inference_mode()
    def process(self, items: Iterable[Item]) -> Iterator[np.ndarray]:
        """Consume detected frames in order; yield preview frames (nothing when preview is off)."""
        batch: list[Item] = []
        for it in items:
            batch.append(it)
            if len(batch) == self.cfg.batch_size:
                yield from self._step(batch)
                batch = []
        if batch:
            yield from self._step(batch)
        if not self.distances[0]:  # renders still queued: encode them alone only if nothing was measured
            self._encode(None)       # (a lone small batch costs several times more per image)

    def curves(self) -> np.ndarray:
        """(T, A, max_n) float32; frames before the first face take its rig; NaN when there was none."""
        first = next((r for r in self.rig_rows if r is not None), None)
        if first is None:
            return np.full((len(self.rig_rows), self.A, self.model.max_controls), np.nan, np.float32)
        return np.stack([first if r is None else r for r in self.rig_rows])
