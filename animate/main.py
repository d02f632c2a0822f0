"""Animate: a face video, images or an image -> every avatar's rig curves, a preview video and a summary.

    python animate.py clip.mp4 --pretrained outputs/demo/emb2rig/checkpoint-best.pth [--out DIR] [key=value ...]
    python train_emb2rig_multichar.py configs/demo/emb2rig.yaml mode=test pretrained=CKPT test.input=clip.mp4

The stage-3b checkpoint decides the models (`animate.models.load_models`: the decoder, the encoder and
renderer it was trained through, checked before any frame is read), the avatars, their controls and the
face framing (the crop margin it was trained with, at the encoder's input size).

Streamed (a video is never held in memory): decode a frame -> detect faces -> follow one face (video:
`data.face_track.FaceTracker`; images: the face `face` picks) -> square crop -> batches of `batch_size`
crops -> encode once per frame under autocast -> decode every avatar's rig from that one feature ->
One-Euro smoothing per control at the frames' real times (video only) -> render each avatar once per
frame -> preview frame (input | crop | avatars) -> an H.264 preview at the source's nominal rate whose
frames follow the source's timestamps (`data.video.retime`). With `driver=mediapipe` the rigs come instead
from MediaPipe's blend-shape scores of the whole frame, retargeted by name (`animate.mediapipe_face`).

Frames without the tracked face (the tracker's 'held' and 'missing' frames) keep the last rig and the
last render and are marked: `face_found` 0 in every CSV, listed in `missing_frames` in summary.json.
Frames before the first face get the first face's rig (also marked); with no face at all the control
cells are empty. The smoothing filter restarts after every such gap and on a new track.

Outputs in `out_dir`: `<avatar>.csv` (`frame,time_s,<controls>,face_found,faces`), `preview.mp4` and
`summary.json` (frames decoded / expected and a warning when decoding stopped early, faces found,
frames with several faces, tracks, fps = end-to-end frames per second from decoded frame to written
curves and preview, mean expression distance per avatar, seconds per step, the models and settings).

expression_distance: Euclidean distance between the 16-d unit expression embeddings of the input crop
and of the avatar's render (0 = the same expression to the encoder, 2 = opposite). It costs one more
encoder pass per avatar, so it is measured only on frames whose index is a multiple of
`expression_distance_every` (and that have a face); 0 turns it off. The renders are encoded in the same
batch as the next frames' crops; those of the last batch are dropped when others were measured.
"""
from __future__ import annotations

import itertools
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from animate.config import AnimateConfig, AnimateSettings
from animate.detect import PRODUCER_STEPS, detect_frames, prefetch
from animate.exports import export_avatars, mesh_panels
from animate.inference import prepare
from animate.mediapipe_face import MediaPipeUnavailable
from animate.mediapipe_face import unavailable as mediapipe_unavailable
from animate.models import ModelMismatch, Models, load_models
from animate.outputs import StepTimer, write_curves
from animate.pipeline import Animator
from animate.sources import InputError, Source, open_source
from common.config import to_dict
from common.device import check_precision, pick_device, setup_cpu
from common.run import write_json
from data.face_detect import build_detector
from data.video import VideoError, retime, write_video


def auto_precision(precision: str, device: torch.device) -> str:
    """'auto' -> bf16 on CUDA and on CPUs with native bf16, else fp32; other values pass through."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"


def animate(source: Source, models: Models, detector, cfg: AnimateSettings, device: torch.device, precision: str,
            out_dir: str | Path, driver=None) -> dict:
    """Run the pipeline on `source` with prepared `models` and write CSVs + preview into `out_dir`;
    returns the summary (not yet written). `driver`: see `animate.pipeline.Animator` (None = the decoder)."""
    video = source.kind == "video"
    timer = StepTimer(device)
    t0 = time.perf_counter()
    depth = cfg.prefetch if cfg.prefetch >= 0 else (32 if device.type == "cuda" else 0)
    frames = source.frames()
    first = next(frames, None)  # nothing readable at all: say so before any output is started
    if first is None:
        skipped = source.report().get("skipped", [])
        raise InputError(f"nothing could be read from {source.spec}: " + "; ".join(skipped[:5]))
    frames = itertools.chain([first], frames)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    avatars_root = cfg.avatars_root or models.avatars_root
    panels, preview_notes, release = mesh_panels(models.names, models.controls, avatars_root, cfg.preview_size) \
        if cfg.preview and cfg.preview_mesh and avatars_root else ({}, [], lambda: None)
    anim = Animator(models.decoder, models.frozen, cfg, device, precision, source.fps, video and cfg.smoothing.enabled,
                    timer, driver, panels)
    previews = anim.process(prefetch(detect_frames(frames, detector, cfg, source.fps, video, timer), depth))
    try:
        if cfg.preview:  # (time, frame) pairs; a video's preview shows at each 1 / fps the frame of that moment
            timed = _timed_sink(previews, timer)
            fps = preview_fps(source.fps)
            write_video(out_dir / "preview.mp4", retime(timed, fps) if video else (f for _, f in timed), fps)
        else:
            for _ in previews:
                pass
    finally:
        release()  # the mesh renderers' OpenGL contexts
    read = source.report()
    curves, found = anim.curves(), np.array(anim.found, bool)
    times, faces = np.array(anim.times), np.array(anim.faces)
    with timer("write_csv"):
        for a, (name, ctrl) in enumerate(zip(models.names, models.controls)):
            write_curves(out_dir / f"{name}.csv", ctrl, curves[:, a, :len(ctrl)], times, found, faces)
    with timer("write_exports"):
        exports, notes = export_avatars(out_dir, models.names, models.controls, curves, times,
                                        preview_fps(source.fps), avatars_root)
    wall = time.perf_counter() - t0
    steps = {k: round(v, 3) for k, v in timer.seconds.items()}
    main_thread = [v for k, v in timer.seconds.items() if depth == 0 or k not in PRODUCER_STEPS]
    steps["other"] = round(wall - sum(main_thread), 3)  # decode / detect / panel overlap when prefetching
    several = np.flatnonzero(faces > 1)
    return {"input": source.spec, "kind": source.kind, "frames": int(len(found)), **read,
            "faces_found": int(found.sum()), "faces_found_pct": round(100 * found.mean(), 2),
            "missing_frames": np.flatnonzero(~found).tolist(), "frames_with_several_faces": int(len(several)),
            "first_frames_with_several_faces": several[:20].tolist(), "tracks": anim.tracks,
            "fps": round(len(found) / wall, 3), "source_fps": source.fps, "last_time_s": round(float(times[-1]), 4),
            "seconds": round(wall, 3), "seconds_per_step": steps,
            "expression_distance": {n: (round(float(np.mean(d)), 4) if d else None)
                                    for n, d in zip(models.names, anim.distances)},
            "expression_distance_frames": len(anim.distances[0]), "avatars": list(models.names),
            "outputs": {"csv": [f"{n}.csv" for n in models.names], **exports,
                        "preview": "preview.mp4" if cfg.preview else None},
            "export_notes": notes, "preview_mesh": [models.names[a] for a in panels], "preview_notes": preview_notes,
            "driver": cfg.driver,
            **({"driver_missed_frames": driver.missed} if driver is not None else {}),
            "detector": getattr(detector, "name", type(detector).__name__), "device": str(device),
            "precision": precision, "prefetch": depth, "smoothed": video and cfg.smoothing.enabled,
            "settings": to_dict(cfg)}


def _timed_sink(frames: Iterator, timer: StepTimer) -> Iterator:
    """Pass items on; the time until the consumer asks for the next one is booked as 'write_video'."""
    for f in frames:
        t0 = time.perf_counter()
        yield f
        timer.seconds["write_video"] += time.perf_counter() - t0


def preview_fps(fps: float) -> float:
    """The preview's frame rate: the source's, at most 60 (some containers report 1000 for a variable rate;
    `data.video.retime` places each source frame at its own time whatever the rate)."""
    return min(fps, 60.0)


def run(cfg: AnimateConfig, key_prefix: str = "") -> dict:
    """Load the stage-3b checkpoint and its frozen networks, animate every avatar it knows from `cfg.input`,
    and write the outputs and summary.json; returns the summary. `key_prefix` spells the settings in
    messages ('test.' for the stage-3b script's test mode)."""
    source = open_source(cfg.input, cfg.image_fps)  # a missing or empty input fails before any loading
    if cfg.driver == "mediapipe" and (why := mediapipe_unavailable(cfg.mediapipe_model)):
        raise MediaPipeUnavailable(f"driver=mediapipe: {why}")  # before the models load
    device = pick_device(cfg.device)
    if cfg.quantize == "int8" and device.type != "cpu":
        raise ValueError(f"{key_prefix}quantize=int8 runs on CPU only, not on {device}: set device=cpu or "
                         f"{key_prefix}quantize=none")
    precision = auto_precision(cfg.precision, device)
    check_precision(precision, device)
    threads = setup_cpu(device, cfg.threads)
    models = load_models(cfg.pretrained, device, cfg.encoder, cfg.renderer, key_prefix)
    cfg.crop.margin = models.crop_margin  # frame faces as the decoder saw them in training,
    cfg.crop.size = models.frozen.encoder.image_size  # at the encoder's input size
    prepare(models.frozen, precision, cfg.quantize)
    detector = build_detector(cfg.detector.name, cfg.detector)
    out_dir = cfg.resolved_out_dir()
    driver = None
    if cfg.driver == "mediapipe":
        from animate.mediapipe_face import MediaPipeDriver, arkit_maps
        maps = arkit_maps(models.names, models.controls, cfg.avatars_root or models.avatars_root)
        driver = MediaPipeDriver(models.controls, maps, models.decoder.max_controls, cfg.mediapipe_model,
                                 video=source.kind == "video")
    try:
        summary = animate(source, models, detector, cfg, device, precision, out_dir, driver)
    finally:
        if driver is not None:
            driver.close()
    summary.update(pretrained=cfg.pretrained, encoder=models.encoder_path, renderer=models.renderer_path,
                   models_checked=models.checked, threads=threads)
    write_json(out_dir / "summary.json", summary)
    for w in summary["warnings"]:
        print(f"[animate] warning: {w}")
    for note in summary["export_notes"]:
        print(f"[animate] export: {note}")
    if summary["faces_found"] == 0:
        print(f"[animate] warning: no face found in {cfg.input}; the CSVs have empty control cells "
              f"(try detector.max_side=640 for small faces, or another detector)")
    print(f"[animate] {summary['frames']} frames, face in {summary['faces_found_pct']}%, "
          f"{summary['frames_with_several_faces']} with several faces, {summary['fps']:.2f} fps end to end "
          f"-> {out_dir}")
    return summary


def run_cli(cfg: AnimateConfig, key_prefix: str = "") -> dict:
    """`run` for the entry scripts: a problem with the user's input or models prints one line naming the
    file and the fix, and exits with status 2 (anything else keeps its traceback)."""
    try:
        return run(cfg, key_prefix)
    except (InputError, ModelMismatch, FileNotFoundError, VideoError, MediaPipeUnavailable) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
