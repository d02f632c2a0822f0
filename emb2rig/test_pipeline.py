"""The streamed test-mode pipeline: frames -> detection and crop -> batched encode / decode / smooth /
render -> preview frames. `emb2rig.test_mode.animate` wires it to the outputs.

    frames, fps, video, names = open_source("clip.mp4", cfg)
    anim = Animator(model, frozen, cfg, device, "bf16", fps, smooth=video, timer=StepTimer(device))
    for preview in anim.process(detect_frames(frames, detector, cfg, fps, video, timer)): ...
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
from data.face_track import DETECTED, MISSING, FaceTracker, crop_image, crop_square, square_from_box
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


def open_source(path: str | Path, cfg: TestModeConfig) -> tuple[Iterable[np.ndarray], float, bool, list[str]]:
    """(RGB frames, fps, is_video, image names) of a video file or an image folder."""
    path = Path(path)
    if is_video(path):
        reader = VideoReader(path)
        return reader, reader.fps, True, []
    if path.is_dir():
        names: list[str] = []
        frames = (names.append(str(p.relative_to(path))) or rgb for p, rgb in iter_images(path))
        return frames, cfg.image_fps, False, names
    raise ValueError(f"test.input '{path}' is neither a video ({', '.join(VIDEO_EXTS)}) nor a folder of images")


def detect_frames(frames: Iterable[np.ndarray], detector, cfg: TestModeConfig, fps: float, video: bool,
                  timer: StepTimer) -> Iterator[Item]:
    """Decode ('decode'), detect, track and crop ('detect') each frame, and draw its input panel ('panel')."""
    tracker, it, panel_wh = FaceTracker(cfg.crop, fps) if video else None, iter(frames), None
    for i in itertools.count():
        if cfg.max_frames and i >= cfg.max_frames:
            return
        with timer("decode"):
            rgb = next(it, None)
        if rgb is None:
            return
        with timer("detect"):
            boxes = detector.detect(rgb)
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
        frozen: emb2rig.frozen.Frozen holding the encoder and the renderer.
        cfg: TestModeConfig.
        device / precision: where and how ('fp32' | 'bf16' | 'fp16') the networks run.
        fps: frame rate of the input (for the smoothing filter).
        smooth: filter the rig curves (video input with `cfg.smoothing.enabled`).
        timer: StepTimer collecting seconds per step.
    After `process` is exhausted: `rigs` (T, A, max_n) float32 (NaN before any face), `found` (T,) bool,
    `distances` list per avatar of per-frame expression distances.
    """

    def __init__(self, model, frozen, cfg: TestModeConfig, device: torch.device, precision: str, fps: float,
                 smooth: bool, timer: StepTimer):
        self.model, self.frozen, self.cfg, self.device, self.precision = model, frozen, cfg, device, precision
        self.A, self.timer = len(frozen.names), timer
        frozen.renderer.to(memory_format=torch.channels_last)  # transposed convs: ~1.5x faster on CPU, same output
        self.filter = OneEuroFilter.from_config(cfg.smoothing, fps) if smooth else None
        self.last: np.ndarray | None = None  # (A, max_n) rig of the last frame with a face
        self.last_panels: list[np.ndarray | None] = [None] * self.A
        self.rig_rows: list[np.ndarray | None] = []
        self.found: list[bool] = []
        self.distances: list[list[float]] = [[] for _ in range(self.A)]
        self._queued: list[tuple[torch.Tensor, torch.Tensor]] = []  # renders waiting for the distance

    def _encode_decode(self, crops: np.ndarray) -> tuple[np.ndarray, torch.Tensor]:
        """(B, S, S, 3) uint8 crops -> rigs (B, A, max_n) float32 numpy and embeddings (B, E)."""
        x = torch.from_numpy(crops).to(self.device).permute(0, 3, 1, 2).float().div_(255)  # (B, 3, S, S)
        with self.timer("encode"), autocast(self.device, self.precision):
            feat, emb = self.frozen.encode(x)  # (B, D), (B, E)
        with self.timer("decode_rigs"), autocast(self.device, self.precision):
            B = len(x)
            avatar = torch.arange(self.A, device=self.device).repeat(B)  # (B * A,) frame-major
            rig = self.model(feat.float().repeat_interleave(self.A, 0), avatar)  # (B * A, max_n)
            rig = rig.float().view(B, self.A, -1).cpu().numpy()
        return rig, emb.float()

    def _render(self, rigs: np.ndarray) -> torch.Tensor:
        """(m, A, max_n) rigs -> (m * A, 3, R, R) renders, frame-major (each avatar once per frame)."""
        m = len(rigs)
        with self.timer("render"), autocast(self.device, self.precision):
            avatar = torch.arange(self.A, device=self.device).repeat(m)
            return self.frozen.render(torch.from_numpy(rigs).to(self.device).flatten(0, 1), avatar)

    def _distance(self, renders: torch.Tensor | None, emb_in: torch.Tensor | None, flush: bool = False) -> None:
        """Queue renders (m * A, 3, R, R) with their input embeddings (m, E); once `batch_size` renders
        wait (or on `flush`), encode them together (tiny batches run far below the encoder's throughput)
        and append each avatar's distances."""
        if renders is not None:
            self._queued.append((renders.float().contiguous(), emb_in))  # channels_last -> NCHW for the ViT
        n = sum(len(r) for r, _ in self._queued)
        if n == 0 or (n < self.cfg.batch_size and not flush):
            return
        renders, emb_in = torch.cat([r for r, _ in self._queued]), torch.cat([e for _, e in self._queued])
        self._queued = []
        with self.timer("expression_distance"), autocast(self.device, self.precision):
            emb_r = self.frozen.encode(renders)[1].float().view(len(emb_in), self.A, -1)  # (m, A, E)
        d = (emb_r - emb_in[:, None]).norm(dim=-1).cpu()  # (m, A)
        for a in range(self.A):
            self.distances[a] += d[:, a].tolist()

    def _step(self, batch: list[Item]) -> list[np.ndarray]:
        det = [it for it in batch if it.status == DETECTED]
        if det:
            raw, emb = self._encode_decode(np.stack([it.crop for it in det]))
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
                self._distance(renders[idx], emb[torch.tensor([f[2] for f in measure])])
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
        self._distance(None, None, flush=True)

    def curves(self) -> np.ndarray:
        """(T, A, max_n) float32; frames before the first face take its rig; NaN when there was none."""
        first = next((r for r in self.rig_rows if r is not None), None)
        if first is None:
            return np.full((len(self.rig_rows), self.A, self.model.max_controls), np.nan, np.float32)
        return np.stack([first if r is None else r for r in self.rig_rows])
