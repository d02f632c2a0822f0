"""Stage-3b test mode: a video or a folder of images -> per-avatar rig curves, a preview video, a summary.

    python train_emb2rig_multichar.py configs/demo/emb2rig.yaml mode=test \
        pretrained=outputs/demo/emb2rig/checkpoint-best.pth test.input=clip.mp4
    python scripts/animate.py clip.mp4 --pretrained outputs/demo/emb2rig/checkpoint-best.pth --out DIR

Streamed pipeline (a video is never held in memory): decode a frame -> detect faces -> track the main
face (video: smoothed square, `data.face_track`; images: the largest face) -> square crop -> batches of
`batch_size` crops -> encode once per frame under autocast -> decode every avatar's rig from that one
feature -> One-Euro smoothing per control (video only, `smoothing`) -> render each avatar once per
frame -> preview frame (input | crop | avatars) piped into an H.264 writer at the source fps.

Frames without a detected face (the tracker's 'held' and 'missing' frames) keep the last rig and the
last render and are marked: `face_found` 0 in every CSV, listed in `missing_frames` in summary.json.
Frames before the first face get the first face's rig (also marked); with no face at all the control
cells are empty. The smoothing filter restarts after every such gap (no glide from stale values).

Outputs in `out_dir` (default `<output_dir>/test/<input name>`): `<avatar>.csv` with
`frame,time_s,<control names>,face_found`, `preview.mp4`, and `summary.json` (frames, faces_found,
fps = end-to-end frames per second from decoded frame to written curves and preview, mean
expression_distance per avatar, missing frames, seconds per step, settings).

expression_distance: Euclidean distance between the 16-d unit expression embeddings of the input crop
and of the avatar's render (0 = the same expression to the encoder, 2 = opposite). It costs one more
encoder pass per avatar, so it is measured only on frames whose index is a multiple of
`expression_distance_every` (and that have a face); 0 turns it off. The renders are encoded in the same
batch as the next frames' crops; those of the last batch are dropped when others were measured.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from common.config import to_dict
from common.device import keep_freed_memory, pick_device
from common.run import write_json
from data.face_detect import DetectorConfig, build_detector
from data.face_track import CropConfig
from data.smoothing import SmoothingConfig
from data.video import write_video
from emb2rig.frozen import QUANTIZE, load_frozen
from emb2rig.models import load_decoder
from emb2rig.test_outputs import StepTimer, write_curves
from emb2rig.test_pipeline import PRODUCER_STEPS, Animator, detect_frames, open_source, prefetch


@dataclass
class TestModeConfig:
    """The `test:` section of the stage-3b config (used when `mode: test`).

    Args:
        input: a video file or a folder of images (sorted by path, one "frame" each).
        out_dir: where outputs go; '' = `<output_dir>/test/<input name>`.
        batch_size: face crops encoded (and avatars decoded / rendered) together.
        detector: face detector ('auto' | 'mediapipe' | 'yunet' | 'haar') and its settings; frames are
            detected at `max_side` 320 px (4x cheaper than 640 for YuNet; small faces in wide shots
            may be missed: raise it for those).
        detect_window: in a video, once a face is tracked, detect in a window this many track-square
            sides wide around it, scaled to at most `detect_window_side` px (`data.face_track.detect_near`),
            and in the whole frame only when the window holds no usable face (0 = the whole frame every
            frame). YuNet on the two 640x360 face videos: 1.9-2.8 ms per frame against 5.6-5.8 for
            the whole frame at 320 px, with the tracked square as close to a 640 px whole-frame
            track (0.6-2.3% of its side, mean per coordinate) as the 320 px one (0.8-2.8%).
        crop: square face crop and video face track (size = the encoder's input size is cheapest).
        smoothing: One-Euro filter on the rig curves (video only; image folders are never smoothed).
        expression_distance_every: measure the expression distance on every k-th frame (0 = never).
        prefetch: frames decoded and detected ahead in a background thread (0 = in the main thread;
            -1 = auto: 32 on CUDA, 0 on CPU, where the thread would compete with the networks for the
            cores: at paper size on 2 cores, 7.9-8.8 fps with it against 9.1-9.4 without, side by side).
        preview: write preview.mp4.
        preview_size: height in pixels of the preview's panels.
        image_fps: frame rate given to an image folder (time_s and the preview video).
        max_frames: stop after this many frames (0 = all).
        quantize: 'none', or 'int8' for a dynamic int8 encoder on CPU (`ExpressionEncoder.quantize_int8_`,
            its attention core in the precision's autocast dtype): at paper size on 2 cores, 11.6-13.5
            fps against 8.4-10.0 in bf16 (alternating runs); rigs differ by ~0.001 on the demo
            (`scripts/compare_int8.py`; README, "Test-mode speed on CPU").
    """
    __test__ = False  # not a pytest test class

    input: str = ""
    out_dir: str = ""
    batch_size: int = 16
    detector: DetectorConfig = field(default_factory=lambda: DetectorConfig(max_side=320))
    detect_window: float = 1.5
    detect_window_side: int = 160
    crop: CropConfig = field(default_factory=CropConfig)
    smoothing: SmoothingConfig = field(default_factory=SmoothingConfig)
    expression_distance_every: int = 30
    prefetch: int = -1
    preview: bool = True
    preview_size: int = 256
    image_fps: float = 30.0
    max_frames: int = 0
    quantize: str = "none"

    def __post_init__(self):
        if self.batch_size < 1 or min(self.expression_distance_every, self.max_frames, self.prefetch + 1) < 0:
            raise ValueError("'test.batch_size' must be >= 1, 'test.expression_distance_every' and "
                             "'test.max_frames' >= 0, 'test.prefetch' >= -1 (auto)")
        if not (self.detect_window == 0 or self.detect_window >= 1) or self.detect_window_side < 32:
            raise ValueError(f"'test.detect_window' must be 0 (off) or >= 1 and 'test.detect_window_side' >= 32, "
                             f"got {self.detect_window}, {self.detect_window_side}")
        if self.quantize not in QUANTIZE:
            raise ValueError(f"'test.quantize' must be 'none' or 'int8', got {self.quantize!r}")
        if self.preview_size < 16 or not self.image_fps > 0:
            raise ValueError(f"'test.preview_size' must be >= 16 and 'test.image_fps' > 0, got "
                             f"{self.preview_size}, {self.image_fps}")


def animate(source: str | Path, model, frozen, controls: list[list[str]], detector, cfg: TestModeConfig,
            device: torch.device, precision: str, out_dir: str | Path) -> dict:
    """Run the test-mode pipeline on `source` and write CSVs + preview into `out_dir`; returns the summary."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frames, fps, video, info = open_source(source, cfg)
    timer = StepTimer(device)
    anim = Animator(model, frozen, cfg, device, precision, fps, video and cfg.smoothing.enabled, timer)
    t0 = time.perf_counter()
    depth = cfg.prefetch if cfg.prefetch >= 0 else (32 if device.type == "cuda" else 0)
    previews = anim.process(prefetch(detect_frames(frames, detector, cfg, fps, video, timer), depth))
    if cfg.preview:
        write_video(out_dir / "preview.mp4", _timed_sink(previews, timer), fps)
    else:
        for _ in previews:
            pass
    curves, found = anim.curves(), np.array(anim.found, bool)
    if not len(found):
        raise ValueError(f"no frames could be read from {source}")
    with timer("write_csv"):
        for a, (name, ctrl) in enumerate(zip(frozen.names, controls)):
            write_curves(out_dir / f"{name}.csv", ctrl, curves[:, a, :len(ctrl)], fps, found)
    wall = time.perf_counter() - t0
    steps = {k: round(v, 3) for k, v in timer.seconds.items()}
    main_thread = [v for k, v in timer.seconds.items() if depth == 0 or k not in PRODUCER_STEPS]
    steps["other"] = round(wall - sum(main_thread), 3)  # decode / detect / panel overlap when prefetching
    return {"input": str(source), "kind": "video" if video else "images", "frames": int(len(found)),
            "faces_found": int(found.sum()), "faces_found_pct": round(100 * found.mean(), 2),
            "missing_frames": np.flatnonzero(~found).tolist(), "fps": round(len(found) / wall, 3),
            "source_fps": fps, "seconds": round(wall, 3), "seconds_per_step": steps,
            "expression_distance": {n: (round(float(np.mean(d)), 4) if d else None)
                                    for n, d in zip(frozen.names, anim.distances)},
            "expression_distance_frames": len(anim.distances[0]), "avatars": list(frozen.names),
            "outputs": {"csv": [f"{n}.csv" for n in frozen.names], "preview": "preview.mp4" if cfg.preview else None},
            "images": info["images"], "skipped": info["skipped"],
            "detector": getattr(detector, "name", type(detector).__name__), "device": str(device),
            "precision": precision, "prefetch": depth, "smoothed": video and cfg.smoothing.enabled,
            "settings": to_dict(cfg)}


def _timed_sink(frames: Iterator[np.ndarray], timer: StepTimer) -> Iterator[np.ndarray]:
    """Pass frames on; the time until the consumer asks for the next one is booked as 'write_video'."""
    for f in frames:
        t0 = time.perf_counter()
        yield f
        timer.seconds["write_video"] += time.perf_counter() - t0


def run_test_mode(cfg) -> dict:
    """`mode: test` of an Emb2RigConfig: load the stage-3b checkpoint, its encoder and renderer, and
    animate every avatar the checkpoint knows from `cfg.test.input`. Writes summary.json; returns it."""
    t: TestModeConfig = cfg.test
    if not t.input:
        raise ValueError("test mode needs an input: test.input=<video file or folder of images>")
    if not Path(t.input).exists():
        raise FileNotFoundError(f"test.input not found: {t.input}")
    device = pick_device(cfg.device)
    if t.quantize == "int8" and device.type != "cpu":
        raise ValueError(f"test.quantize=int8 runs on CPU only, not on {device}: set device=cpu or test.quantize=none")
    if device.type == "cpu":
        keep_freed_memory()
    model, meta = load_decoder(cfg.pretrained, device)
    frozen = load_frozen(cfg.encoder, cfg.renderer, meta["avatars"], meta["controls"], device,
                         meta["face_boxes"], meta["crop_margin"])
    t.crop.margin = meta["crop_margin"]  # frame faces as the decoder saw them in training
    detector = build_detector(t.detector.name, t.detector)
    out_dir = Path(t.out_dir) if t.out_dir else Path(cfg.output_dir) / "test" / Path(t.input).stem
    summary = animate(t.input, model, frozen, meta["controls"], detector, t, device, cfg.precision, out_dir)
    summary.update(pretrained=cfg.pretrained, encoder=cfg.encoder, renderer=cfg.renderer)
    write_json(out_dir / "summary.json", summary)
    if summary["faces_found"] == 0:
        print(f"[test] warning: no face found in {t.input}; the CSVs have empty control cells "
              f"(try test.detector.max_side=640 for small faces, or another detector)")
    if summary["skipped"]:
        print(f"[test] skipped {len(summary['skipped'])} unreadable images (listed in summary.json)")
    print(f"[test] {summary['frames']} frames, face in {summary['faces_found_pct']}%, "
          f"{summary['fps']:.2f} fps end to end -> {out_dir}")
    return summary
