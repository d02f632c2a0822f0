"""Turn a folder of photos or a video into a folder of square face crops.

    python scripts/crop_faces.py INPUT --out DIR [--detector auto] [--size 224] [--preview]

INPUT is a video (mp4/mov/avi/...) or a folder tree of images. Writes:
  DIR/<name>.jpg         one crop per photo (same relative path) or per video frame (000123.jpg)
  DIR/track.csv          video only: frame,time_s,status,cx,cy,side of the smoothed track
  DIR/preview.mp4        with --preview (video only): frame with track square | crop
  DIR/summary.json       frames, faces_found, held, missing, crops_written, skipped (why),
                         detection_rate, ms_per_frame (detection), detector, settings
Frames without a face keep the last square for --max-missing frames ("held"), then are
marked "missing" and get no crop. Nothing is downloaded; see data/face_detect.py for the
detectors.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere

from data.face_detect import DetectorConfig, build_detector  # noqa: E402
from data.face_track import DETECTED, HELD, MISSING, CropConfig, FaceTracker, crop_image, crop_square, preview_frame  # noqa: E402
from data.smoothing import SmoothingConfig  # noqa: E402
from data.video import VideoError, VideoReader, is_video, iter_images, write_video  # noqa: E402

MAX_LISTED = 500  # skipped items listed by name in summary.json (all are counted)


def save_rgb(path: Path, rgb, ext: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if ext == "jpg" else []
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params):
        raise OSError(f"cannot write {path}")


def run_images(src: Path, out: Path, det, cfg: CropConfig, ext: str) -> dict:
    skipped, counts, t_det = [], {"frames": 0, "faces_found": 0, "multi_face": 0}, 0.0
    bad: list = []
    for path, rgb in iter_images(src, bad):
        counts["frames"] += 1
        t0 = time.perf_counter()
        boxes = det.detect(rgb)
        t_det += time.perf_counter() - t0
        crop, box = crop_image(rgb, boxes, cfg)
        if crop is None:
            skipped.append({"item": str(path.relative_to(src)), "reason": "no face found"})
            continue
        counts["faces_found"] += 1
        counts["multi_face"] += len(boxes) > 1
        save_rgb((out / path.relative_to(src)).with_suffix("." + ext), crop, ext)
    skipped += [{"item": str(p.relative_to(src)), "reason": r} for p, r in bad]
    counts["frames"] += len(bad)
    return {"kind": "images", **counts, "crops_written": counts["faces_found"],
            "ms_per_frame": 1000 * t_det / max(counts["frames"] - len(bad), 1),
            "skipped": skipped}


def run_video(src: Path, out: Path, det, cfg: CropConfig, ext: str, preview: bool,
              limit: int) -> dict:
    reader = VideoReader(src)
    tracker = FaceTracker(cfg, reader.fps)
    counts = {DETECTED: 0, HELD: 0, MISSING: 0}
    skipped, t_det, written = [], 0.0, 0
    out.mkdir(parents=True, exist_ok=True)
    rows = []

    def frames():  # generator so the preview is streamed, never held in memory
        nonlocal t_det, written
        for i, rgb in enumerate(reader):
            if limit and i >= limit:
                break
            t0 = time.perf_counter()
            boxes = det.detect(rgb)
            t_det += time.perf_counter() - t0
            res = tracker.update(boxes)
            counts[res.status] += 1
            crop = None
            if res.square is not None:
                crop = crop_square(rgb, res.square, cfg.size)
                save_rgb(out / f"{i:06d}.{ext}", crop, ext)
                written += 1
            if res.status != DETECTED:
                skipped.append({"item": i, "reason": "no face (kept last box)" if
                                res.status == HELD else "no face (frame marked missing)"})
            sq = res.square
            rows.append([i, f"{i / reader.fps:.4f}", res.status] +
                        ([f"{sq.cx:.1f}", f"{sq.cy:.1f}", f"{sq.side:.1f}"] if sq else ["", "", ""]))
            if preview:
                yield preview_frame(rgb, res, crop)

    if preview:
        write_video(out / "preview.mp4", frames(), reader.fps)
    else:
        for _ in frames():
            pass
    with open(out / "track.csv", "w", newline="") as f:
        csv.writer(f).writerows([["frame", "time_s", "status", "cx", "cy", "side"]] + rows)
    n = len(rows)
    return {"kind": "video", "fps": reader.fps, "size": list(reader.size), "frames": n,
            "declared_frames": reader.frame_count, "truncated": reader.truncated,
            "faces_found": counts[DETECTED], "held": counts[HELD], "missing": counts[MISSING],
            "crops_written": written, "ms_per_frame": 1000 * t_det / max(n, 1),
            "skipped": skipped}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Crop faces from a video or a photo folder.")
    ap.add_argument("input", type=Path, help="video file or folder of images")
    ap.add_argument("--out", type=Path, required=True, help="output folder")
    ap.add_argument("--detector", default="auto", help="auto | mediapipe | yunet | haar")
    ap.add_argument("--size", type=int, default=224, help="crop side in pixels")
    ap.add_argument("--margin", type=float, default=0.3, help="margin per side / face size")
    ap.add_argument("--max-missing", type=int, default=5, help="frames to hold a lost box")
    ap.add_argument("--min-face", type=float, default=20.0, help="smallest face (pixels)")
    ap.add_argument("--min-cutoff", type=float, default=1.0, help="track One-Euro min_cutoff")
    ap.add_argument("--beta", type=float, default=2.0, help="track One-Euro beta")
    ap.add_argument("--ext", choices=("jpg", "png"), default="jpg")
    ap.add_argument("--preview", action="store_true", help="write DIR/preview.mp4 (video)")
    ap.add_argument("--limit", type=int, default=0, help="stop after N frames (0 = all)")
    args = ap.parse_args(argv)

    cfg = CropConfig(size=args.size, margin=args.margin, max_missing=args.max_missing,
                     min_face=args.min_face,
                     track=SmoothingConfig(min_cutoff=args.min_cutoff, beta=args.beta))
    det = build_detector(args.detector, DetectorConfig(name=args.detector))
    t0 = time.perf_counter()
    try:
        if args.input.is_dir():
            summary = run_images(args.input, args.out, det, cfg, args.ext)
        elif is_video(args.input) or args.input.is_file():
            summary = run_video(args.input, args.out, det, cfg, args.ext, args.preview,
                                args.limit)
        else:
            raise FileNotFoundError(f"input not found: {args.input}")
    except (VideoError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    n_skipped = len(summary["skipped"])
    summary.update(input=str(args.input), detector=det.name, crop=asdict(cfg),
                   detection_rate=summary["faces_found"] / max(summary["frames"], 1),
                   seconds=time.perf_counter() - t0, skipped_count=n_skipped,
                   skipped=summary["skipped"][:MAX_LISTED])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"{args.input}: {summary['faces_found']}/{summary['frames']} frames with a face "
          f"({100 * summary['detection_rate']:.1f}%), {summary['crops_written']} crops, "
          f"{summary['ms_per_frame']:.1f} ms/frame detection [{det.name}] -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
