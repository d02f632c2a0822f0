"""The streamed animate pipeline: detected frames (`animate.detect`) -> batched encode / decode / smooth /
render -> preview frames. `animate.main.animate` wires it to a source and the outputs.

    src = open_source("clip.mp4")
    anim = Animator(decoder, frozen, cfg, device, "bf16", src.fps, smooth=True, timer=StepTimer(device))
    items = prefetch(detect_frames(src.frames(), detector, cfg, src.fps, True, timer), depth=32)  # a thread
    for t, preview in anim.process(items): ...
    curves = anim.curves()   # (T, A, max_n); anim.found (T,) bool; anim.times, anim.faces; anim.distances

Every network call runs under one autocast; each frame is encoded once and each avatar rendered once
per frame with a face (frames without one reuse the last render). `frozen` must have been made ready
with `animate.inference.prepare`.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import numpy as np
import torch

from animate.detect import Item
from animate.outputs import StepTimer, compose, renders_to_uint8, square_panel
from common.device import autocast
from data.face_track import DETECTED
from data.smoothing import OneEuroFilter

if TYPE_CHECKING:
    from animate.config import AnimateSettings


class Animator:
    """Batches detected frames through encoder -> decoder -> smoothing -> renderer -> preview frames.

    Args:
        model: the trained Emb2Rig (eval mode).
        frozen: emb2rig.frozen.Frozen holding the encoder and the renderer, made ready for `precision`
            with `animate.inference.prepare`.
        cfg: AnimateSettings.
        device / precision: where and how ('fp32' | 'bf16' | 'fp16') the networks run.
        fps: nominal frame rate (the smoothing filter's step when frames carry no time).
        smooth: filter the rig curves (video input with `cfg.smoothing.enabled`), at the frames' times.
        timer: StepTimer collecting seconds per step.
        driver: None (the decoder makes the rigs), or a callable: the frames with a face (`Item`s) ->
            (B, A, max_n) rigs, e.g. `animate.mediapipe_face.MediaPipeDriver`; the crops are still encoded
            for the expression distance.
        mesh_panels: {avatar index: rig (n_controls,) -> image} for the avatars whose preview panel shows
            their mesh (`animate.exports.mesh_panels`); the others show the neural renderer's image, which
            the expression distance always uses.
    After `process` is exhausted: `curves()` (T, A, max_n) float32, `found` (T,) bool (a face was detected),
    `times` (T,) s, `faces` (T,) faces seen, `tracks` (face tracks started), `distances` per avatar: the
    expression distances of the measured frames.
    """

    def __init__(self, model, frozen, cfg: AnimateSettings, device: torch.device, precision: str, fps: float,
                 smooth: bool, timer: StepTimer, driver=None, mesh_panels: dict | None = None):
        self.model, self.frozen, self.cfg, self.device, self.precision = model, frozen, cfg, device, precision
        self.driver, self.mesh_panels = driver, mesh_panels or {}
        self.A, self.timer = len(frozen.names), timer
        self.filter = OneEuroFilter.from_config(cfg.smoothing, fps) if smooth else None
        self.last: np.ndarray | None = None  # (A, max_n) rig of the last frame with a face
        self.last_panels: list[np.ndarray | None] = [None] * self.A
        self.rig_rows: list[np.ndarray | None] = []
        self.found: list[bool] = []
        self.times: list[float] = []
        self.faces: list[int] = []
        self.tracks = 0
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

    def _render(self, rigs: np.ndarray, need: torch.Tensor) -> torch.Tensor:
        """(m, A, max_n) rigs -> (k, 3, R, R) renders of the k (frame, avatar) pairs where the frame-major
        (m * A,) mask `need` is set, in that order."""
        with self.timer("render"), autocast(self.device, self.precision):
            avatar = torch.arange(self.A, device=self.device).repeat(len(rigs))[need]
            return self.frozen.render(torch.from_numpy(rigs).to(self.device).flatten(0, 1)[need], avatar)

    def _queue_distance(self, renders: torch.Tensor, emb_in: torch.Tensor) -> None:
        """Queue renders (m * A, 3, R, R) of m frames with the frames' input embeddings (m, E); they are
        encoded with the next batch of crops (or at the end)."""
        avatar = torch.arange(self.A, device=renders.device).repeat(len(renders) // self.A)
        x = self.frozen.encoder_input(renders.float().contiguous(), avatar)  # (m * A, 3, S, S) face crops
        self._queued.append((x, emb_in.repeat_interleave(self.A, 0)))

    def _step(self, batch: list[Item]) -> list[tuple[float, np.ndarray]]:
        """One batch in frame order: encode + decode the frames with a face, smooth, keep the last rig on
        the others, render the avatars once per new rig (a mesh avatar's panel from its mesh: the renderer draws it on
        measured frames only), queue distances; returns (time, preview frame) pairs."""
        det = [it for it in batch if it.status == DETECTED]
        if det:
            feat, emb = self._encode(np.stack([it.crop for it in det]))
            if self.driver is None:
                raw = self._decode(feat)
            else:
                with self.timer("driver"):
                    raw = self.driver(det)
        fresh, j = [], 0  # fresh: (item, smoothed rig, row in det) of frames with a new rig
        for it in batch:
            if self.filter is not None and (it.status != DETECTED or it.new_track):
                self.filter.reset()  # after a gap or on another face the curves start afresh
            self.tracks += it.new_track and it.status == DETECTED
            if it.status == DETECTED:
                r = raw[j] if self.filter is None else self.filter(raw[j], it.t).astype(np.float32)
                self.last, j = r, j + 1
                fresh.append((it, r, j - 1))
            self.rig_rows.append(self.last)
            self.found.append(it.status == DETECTED)
            self.times.append(it.t)
            self.faces.append(it.faces)
        every = self.cfg.expression_distance_every
        measured = lambda f: every > 0 and f[0].index % every == 0  # noqa: E731
        measure = [f for f in fresh if measured(f)]
        todo = fresh if self.cfg.preview else measure  # frames to render
        # the renderer draws every avatar of a measured frame (its expression distance) and, for the preview,
        # the avatars whose panel is not their mesh
        sel = [k for k, f in enumerate(todo) if measured(f)]  # rows of `todo` that are measured
        need = torch.ones(len(todo), self.A, dtype=torch.bool)
        need[:, list(self.mesh_panels)] = False
        need[sel] = True
        need = need.flatten()  # frame-major, as the rigs
        at = need.cumsum(0) - 1  # row of a needed (frame, avatar) pair in `renders`
        if need.any():
            renders = self._render(np.stack([r for _, r, _ in todo]), need)  # (need.sum(), 3, R, R)
            if measure:
                idx = at[[a + self.A * k for k in sel for a in range(self.A)]]
                self._queue_distance(renders[idx], emb[torch.tensor([f[2] for f in measure])])
        if not self.cfg.preview:
            return []
        out, P = [], self.cfg.preview_size
        with self.timer("preview"):
            drawn = list(renders_to_uint8(renders, P)) if need.any() else []  # (P, P, 3) per needed pair
            panels = [drawn[i] if needed else None for needed, i in zip(need.tolist(), at.tolist())]  # m * A
            for k, (_, rig, _) in enumerate(todo):
                for a, draw in self.mesh_panels.items():
                    panels[k * self.A + a] = draw(rig[a, :self.frozen.n_controls[a]])
            k = 0
            for it in batch:
                if k < len(todo) and todo[k][0] is it:
                    self.last_panels = panels[k * self.A:(k + 1) * self.A]
                    k += 1
                out.append((it.t, compose([it.panel, square_panel(it.crop, P), *map(lambda p: square_panel(p, P),
                                   self.last_panels)], ["", "crop", *self.frozen.names])))
        return out

    @torch.inference_mode()
    def process(self, items: Iterable[Item]) -> Iterator[tuple[float, np.ndarray]]:
        """Consume detected frames in order; yield (time, preview frame) (nothing when preview is off)."""
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
