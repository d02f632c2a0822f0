"""Rig-transfer accuracy on the demo world's held-out actors, next to baselines from the same run.

    python scripts/evaluate_transfer.py configs/demo/emb2rig.yaml
    python scripts/evaluate_transfer.py configs/demo/emb2rig.yaml --out outputs/demo/transfer_eval epochs=4

Trains (or resumes, or finds complete) four kinds of run with the same config and budget
(epochs, steps_per_epoch, batch_size), differing only as stated:
  full        the config as given (multi-avatar decoder, all its loss terms)
  rig_only    the same decoder with rig supervision only (weight_perceptual = pixel = gan = 0)
  per_avatar  one decoder per avatar (`avatars=[name]`); together they get the budget of the full run
              in decoded (sample, avatar) pairs: steps_per_epoch * min(T, A) / A each
and reports, per avatar, the mean absolute error between predicted and ground-truth rigs on the
held-out actors of `--split`: `test` (`eval/test_actors.csv`, ground truth `eval/gt_rigs/<avatar>.csv`;
the figures to report) or `val` (`eval/val_actors.csv`, `eval/gt_rigs_val/`; for choosing weights and
budgets, so the test actors stay untouched by every choice), with the mean training rig of
the avatar as a further baseline. Also reported: the MAE over the controls that some action unit
drives (`eval/au_to_rig.json`; the rest sit at neutral in the ground truth). Writes
`transfer.json` and `transfer.md` to --out. Only this script (evaluation) reads `eval/`.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from PIL.Image import Resampling

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from animate.config import Emb2RigCommand  # noqa: E402
from common.config import load_config  # noqa: E402
from common.metrics import read_metrics  # noqa: E402
from common.run import write_json  # noqa: E402
from data.avatars import is_held_out, load_avatars  # noqa: E402
from data.face_track import read_face_boxes  # noqa: E402
from data.images import frame_face, load_rgb  # noqa: E402
from emb2rig.config import Emb2RigConfig  # noqa: E402
from emb2rig.frozen import load_frozen  # noqa: E402
from emb2rig.main import main as train  # noqa: E402
from emb2rig.models import load_decoder  # noqa: E402


def run_configs(cfg: Emb2RigConfig, runs_root: Path, names: list[str], per_avatar: bool = True,
                rig_only: bool = True) -> dict[str, Emb2RigConfig]:
    """The full run (its own output_dir) and the trained baselines (under runs_root), same budget."""
    out = {"full": cfg}
    if rig_only:
        loss = dataclasses.replace(cfg.loss, weight_perceptual=0.0, weight_pixel=0.0, weight_gan=0.0,
                                   weight_rig=cfg.loss.weight_rig or 1.0)
        out["rig_only"] = dataclasses.replace(cfg, output_dir=str(runs_root / "rig_only"), loss=loss)
    # equal total budget in decoded (sample, avatar) pairs: the multi-avatar run decodes
    # min(T, A) avatars per sample, a per-avatar run one, and there are A per-avatar runs
    steps = cfg.steps_per_epoch
    if steps:
        steps = max(1, round(steps * min(cfg.targets_per_sample, len(names)) / len(names)))
    for n in names if per_avatar else []:
        out[f"per_avatar/{n}"] = dataclasses.replace(cfg, output_dir=str(runs_root / f"per_avatar_{n}"), avatars=[n],
                                                     steps_per_epoch=steps)
    return out


def train_all(cfgs: dict[str, Emb2RigConfig]) -> dict[str, float]:
    """Train every run that is not complete; returns each run's training minutes (from its metrics)."""
    minutes = {}
    for key, c in cfgs.items():
        t0 = time.time()
        print(f"\n[transfer] run {key}: {c.output_dir}", flush=True)
        train(c)
        minutes[key] = _train_minutes(read_metrics(Path(c.output_dir) / "metrics.jsonl"), time.time() - t0)
    return minutes


def _train_minutes(records: list[dict], fallback_s: float) -> float:
    """Training wall time: sum over the calls that wrote `records` (each call's clock restarts at 0)."""
    total, last = 0.0, 0.0
    for r in records:
        if r["time_s"] < last:  # a resumed call
            total += last
        last = r["time_s"]
    return round((total + last if records else fallback_s) / 60, 2)


EVAL_SPLITS = {"test": ("eval/test_actors.csv", "eval/gt_rigs"), "val": ("eval/val_actors.csv", "eval/gt_rigs_val")}


def read_eval(world: Path, names: list[str], split: str = "test"
              ) -> tuple[list[str], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Held-out images of `split` ('test' | 'val' actors), per-avatar ground-truth rigs (N, n_a), and
    per-avatar masks of AU-driven controls."""
    images_csv, gt_dir = EVAL_SPLITS[split]
    if not (world / images_csv).is_file():
        raise FileNotFoundError(f"{world / images_csv} not found: the demo world of version 5 or later has "
                                f"validation and test actors; re-make it (python scripts/make_demo_data.py)")
    with open(world / images_csv, newline="") as f:
        images = [row["image"] for row in csv.DictReader(f)]
    corr = json.loads((world / "eval/au_to_rig.json").read_text())
    gts, mapped = {}, {}
    for n in names:
        with open(world / gt_dir / f"{n}.csv", newline="") as f:
            rows = list(csv.reader(f))
        by_image = {r[0]: [float(v) for v in r[1:]] for r in rows[1:]}
        gts[n] = np.asarray([by_image[i] for i in images], np.float32)
        mapped[n] = np.asarray([c not in corr[n]["unmapped"] for c in rows[0][1:]])
    return images, gts, mapped


@functools.cache
def _decoder(ckpt: Path):
    """`load_decoder`, once per checkpoint: scripts/claims.py decodes the same runs under 13 conditions."""
    return load_decoder(ckpt)


@torch.no_grad()
def predict(ckpt: Path, feats: torch.Tensor, names: list[str]) -> dict[str, np.ndarray]:
    """Decoded rigs (N, n_a) for each avatar of `names` the checkpoint knows."""
    model, meta = _decoder(Path(ckpt))
    out = {}
    for n in names:
        if n in meta["avatars"]:
            k = meta["avatars"].index(n)
            av = torch.full((len(feats),), k, dtype=torch.long)
            rig = torch.cat([model(f, a) for f, a in zip(feats.split(256), av.split(256))])  # (N, max_n)
            out[n] = rig[:, :len(meta["controls"][k])].numpy()
    return out


def held_out_features(frozen, world: Path, images: list[str], split: str, margin: float,
                      degrade: Callable[[Image.Image, int], Image.Image] | None = None) -> torch.Tensor:
    """Encoder features (N, D) of held-out photos, framed as in training (their face_boxes.csv crop);
    `degrade(photo, i)`, when given, changes the i-th whole photo before the crop, as a camera would."""
    size, boxes = frozen.image_size, read_face_boxes(world / "faces" / split)
    faces = []
    for i, rel in enumerate(images):
        photo = load_rgb(world / rel)
        photo = degrade(photo, i) if degrade else photo
        faces.append(np.asarray(frame_face(photo, boxes.get(world / rel), margin).resize((size, size), Resampling.BOX)))
    x = torch.from_numpy(np.stack(faces)).permute(0, 3, 1, 2).float() / 255  # (N, 3, S, S) in [0, 1]
    with torch.no_grad():
        return torch.cat([frozen.encode(b)[0].float() for b in x.split(256)])


def predictions(cfgs: dict[str, Emb2RigConfig], feats: torch.Tensor, names: list[str]) -> dict[str, dict]:
    """Decoded rigs per run kind ('full', 'rig_only', 'per_avatar') and avatar, from each run's
    checkpoint-best.pth (the per-avatar runs pooled into one kind)."""
    preds = {k: predict(Path(cfgs[k].output_dir) / "checkpoint-best.pth", feats, names)
             for k in ("full", "rig_only") if k in cfgs}
    preds["per_avatar"] = {}
    for n in names:
        if f"per_avatar/{n}" in cfgs:
            preds["per_avatar"].update(predict(Path(cfgs[f"per_avatar/{n}"].output_dir) / "checkpoint-best.pth",
                                               feats, [n]))
    return preds


def mean_rigs(avatars: list, val_fraction: float, n: int) -> dict[str, np.ndarray]:
    """The baseline that ignores the face: each avatar's mean training rig, repeated n times."""
    out = {}
    for a in avatars:
        rows = a.rigs[[not is_held_out(p.relative_to(a.root).as_posix(), val_fraction) for p in a.images]]
        out[a.name] = np.repeat(rows.mean(0, keepdims=True), n, 0)
    return out


def rig_errors(preds: dict, gts: dict[str, np.ndarray], names: list[str], cols: list[str],
               mapped: dict[str, np.ndarray] | None = None) -> dict[str, dict[str, float]]:
    """Mean absolute rig error per run kind and avatar (over `mapped` controls only when given), with
    'mean' = the mean over avatars."""
    out = {}
    for c in cols:
        err = {n: np.abs(preds[c][n] - gts[n]) for n in names}
        out[c] = {n: float((e[:, mapped[n]] if mapped else e).mean()) for n, e in err.items()}
        out[c]["mean"] = float(np.mean([out[c][n] for n in names]))
    return out


def markdown(table: dict, names: list[str], cols: list[str], title: str) -> str:
    lines = [f"**{title}**", "", "| avatar | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for n in names + ["mean"]:
        vals = [table[c][n] for c in cols]
        best = min(vals)
        lines.append(f"| {n} | " + " | ".join(f"**{v:.4f}**" if v == best else f"{v:.4f}" for v in vals) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", help="the stage-3b config of the full method, e.g. configs/demo/emb2rig.yaml")
    ap.add_argument("overrides", nargs="*", help="key=value config overrides, applied to every run")
    ap.add_argument("--out", default=None,
                    help="report folder (default: <output_dir>_transfer; <output_dir>_transfer_val with --split val)")
    ap.add_argument("--runs-root", default=None, help="baseline run folders (default: <out>/runs)")
    ap.add_argument("--split", default="test", choices=sorted(EVAL_SPLITS),
                    help="held-out actors to score: test (the figures to report) or val (for choosing settings)")
    ap.add_argument("--no-train", action="store_true", help="only evaluate existing checkpoint-best.pth files")
    ap.add_argument("--no-per-avatar", action="store_true", help="skip the per-avatar decoders (quick comparisons)")
    ap.add_argument("--no-baselines", action="store_true",
                    help="train no baseline (implies --no-per-avatar); only the full method and the mean rig")
    args = ap.parse_args()
    cfg = load_config(Emb2RigCommand, [args.config, *args.overrides])  # the stage-3b YAML (its test: unused)
    out = Path(args.out or cfg.output_dir.rstrip("/") + ("_transfer" if args.split == "test" else "_transfer_val"))
    runs_root = Path(args.runs_root) if args.runs_root else out / "runs"
    world = Path(cfg.data_root)
    avatars = load_avatars(world / cfg.avatars_root, cfg.avatars or None)
    names = [a.name for a in avatars]
    args.no_per_avatar |= args.no_baselines
    cfgs = run_configs(cfg, runs_root, names, not args.no_per_avatar, not args.no_baselines)
    minutes = {} if args.no_train else train_all(cfgs)

    images, gts, mapped = read_eval(world, names, args.split)
    frozen = load_frozen(cfg.encoder, cfg.renderer, names, [a.controls for a in avatars], torch.device("cpu"),
                         [a.face_box for a in avatars], cfg.crop_margin)
    feats = held_out_features(frozen, world, images, args.split, cfg.crop_margin)
    preds = predictions(cfgs, feats, names)
    preds["mean_rig"] = mean_rigs(avatars, cfg.val_fraction, len(images))
    cols = ["full", "mean_rig"] + (["rig_only"] if "rig_only" in cfgs else []) \
        + ([] if args.no_per_avatar else ["per_avatar"])
    mae, mae_mapped = rig_errors(preds, gts, names, cols), rig_errors(preds, gts, names, cols, mapped)
    beats = {n: all(mae["full"][n] < mae[c][n] for c in ("mean_rig", "rig_only") if c in mae) for n in names}
    report = {"split": args.split, "test_images": len(images), "avatars": names, "mae": mae,
              "mae_driven_controls": mae_mapped,
              "full_beats_mean_rig_and_rig_only": beats, "train_minutes": minutes,
              "runs": {k: c.output_dir for k, c in cfgs.items()},
              "budget": {"epochs": cfg.epochs, "steps_per_epoch": cfg.steps_per_epoch, "batch_size": cfg.batch_size},
              "config": args.config, "overrides": args.overrides}
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "transfer.json", report)
    md = "\n\n".join([f"Held-out {args.split} actors: {len(images)} images, MAE of rigs in [0, 1] (lower is better).",
                      markdown(mae, names, cols, "all controls"),
                      markdown(mae_mapped, names, cols, "AU-driven controls only"),
                      f"training minutes per run: {minutes}" if minutes else ""])
    (out / "transfer.md").write_text(md + "\n")
    print("\n" + md + f"\n\n[transfer] wrote {out / 'transfer.json'} and {out / 'transfer.md'}")


if __name__ == "__main__":
    main()
