"""The paper's claims on the demo world over seeds, decided by paired differences: docs/claims.md.

    make demo && .venv/bin/python scripts/claims.py        # about 70 min on 2 cores (docs/claims.md says)
    python scripts/claims.py --quick --demo D --doc O/claims.md   # the wiring on a tiny world (outputs/claims_quick)

Reuses the demo's world and its stage-1 (MAE), stage-2 (expression encoder) and stage-3a (renderer)
models from --demo (`scripts/demo.py`'s output folder) and trains, each in its own folder under --out:
  (a) MAE pretraining helps the expression encoder: stage-2 test-triplet accuracy from the demo's MAE
      and from random init with 2%, 10% and 100% of the training triplets (a fixed subset per
      fraction, repeated where one pass is shorter than an epoch), the same steps for every run; and
      from a stage 1 twice as long, at 10%.
  (b) The full stage-3b method beats the mean rig and the rig-only decoder on the test actors.
  (c) One multi-avatar decoder vs one decoder per avatar (the same budget in decoded pairs), with every
      render and with a fixed 10% of each avatar's renders.
  (d) Robustness: rig error on the test actors with their photos degraded as real footage is
      (`data.degrade`: blur, JPEG, noise, low light, low resolution, in-plane rotation, two strengths
      each), for the decoders of (b); goal: within 20% of clean at the milder strength. With --camera,
      also with a stage-2 encoder trained with `augment: camera` (the same families of degradation at
      random strengths, the demo's budget otherwise) under full-method decoders of its own.
Seeds change the model initialisation and the data order, never the world or the data subsets. Each
claim is decided on the per-seed paired difference (same seed, same data): "shown" when the 95%
confidence interval of its mean (Student t over the seeds) excludes zero. Choices (checkpoints) are made on
the validation actors; every figure is on the test actors (docs/claims.md says which older choices saw
them). A run whose folder is complete is not trained again, so an interrupted script resumes and a re-run
rewrites the same document; the runs' budget is stored in claims.json and a different one is refused.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from animate.config import Emb2RigCommand  # noqa: E402
from common.config import load_config  # noqa: E402
from common.run import write_json  # noqa: E402
from data.avatars import RIGS_FILE, load_avatars  # noqa: E402
from data.degrade import STRENGTHS, degrade  # noqa: E402
from data.face_track import read_face_boxes  # noqa: E402
from emb2rig.frozen import load_frozen  # noqa: E402
from expression_finetune.config import ExpressionConfig  # noqa: E402
from expression_finetune.main import main as train_expression  # noqa: E402
from mae_pretrain.config import MAEPretrainConfig  # noqa: E402
from mae_pretrain.main import main as train_mae  # noqa: E402
from scripts.claims_report import TYPES, document  # noqa: E402
from scripts.evaluate_transfer import (  # noqa: E402
    held_out_features,
    mean_rigs,
    predictions,
    read_eval,
    rig_errors,
    run_configs,
    train_all,
)


@dataclass
class Budget:
    seeds: list[int]
    fractions: list[float]  # shares of the training triplets for (a)
    long_fraction: float  # the fraction at which the longer stage 1 is tried
    stage2: list[str]  # overrides of configs/demo/expression.yaml for every (a) run
    mae_long: list[str]  # overrides of configs/demo/mae_pretrain.yaml: the longer stage 1
    emb2rig: list[str]  # overrides of configs/demo/emb2rig.yaml for every (b)/(c)/(d) run
    stage2_camera: list[str] | None  # overrides of configs/demo/expression.yaml for (d)'s camera-augmented
    # encoder; None = no such encoder (`--camera` adds it: about 15 min more)
    render_fraction: float  # (c): the share of each avatar's renders in the few-renders setting


# stage 2: 240 steps of 64 per run (the demo's run is 1200); stage 1 long: 32 epochs (the demo's is 16);
# stage 3b and the camera-augmented stage 2 (--camera): the demo's budgets (480 steps of 32; 1200 steps of 64)
FULL = Budget(seeds=[0, 1, 2], fractions=[0.02, 0.1, 1.0], long_fraction=0.1,
              stage2=["epochs=3", "steps_per_epoch=80"], mae_long=["epochs=32"], emb2rig=[], stage2_camera=None,
              render_fraction=0.1)
QUICK = Budget(seeds=[0, 1], fractions=[0.1, 1.0], long_fraction=0.1,
               stage2=["epochs=1", "steps_per_epoch=2", "batch_size=8", "num_workers=0"],
               mae_long=["epochs=2", "steps_per_epoch=2", "batch_size=8", "val_max_images=8", "grid_samples=2",
                         "num_workers=0"],
               emb2rig=["epochs=1", "steps_per_epoch=2", "batch_size=8", "val_samples=16", "avatars=[alien,head]"],
               stage2_camera=["epochs=1", "steps_per_epoch=2", "batch_size=8", "num_workers=0"], render_fraction=0.5)


def fixed_share(n: int, frac: float, at_least: int = 1) -> np.ndarray:
    """Sorted indices of a fixed `frac` of n rows (at least `at_least`), the same for every call: the data
    subsets depend on the fraction only, never on a run's seed."""
    return np.sort(np.random.default_rng(round(frac * 1e6)).choice(n, max(at_least, round(frac * n)), False))


class Claims:
    def __init__(self, demo: Path, out: Path, budget: Budget):
        self.demo, self.out, self.b = demo, out, budget
        self.world = demo / "world"
        self.mae = demo / "mae" / "checkpoint-last.pth"  # what the demo's stage 2 starts from
        self.encoder = demo / "expression" / "checkpoint-best.pth"
        self.renderer = demo / "rig2img" / "checkpoint-best.pth"
        missing = [p for p in (self.world / "world.json", self.mae, self.encoder, self.renderer) if not p.is_file()]
        if missing:
            raise SystemExit(f"[claims] {missing[0]} is missing: run the demo first (make demo, or "
                             f"python scripts/demo.py --no-baselines --out {demo}), then this script")
        if not (self.world / "eval/val_actors.csv").is_file():
            raise SystemExit(f"[claims] {self.world} has no validation / test actor split (world version < 5): "
                             f"delete it and re-run the demo")
        self.minutes: dict[str, float] = {}

    def timed(self, key: str, fn, *args, recorded=None):
        """fn(*args), its minutes added to claim `key`: the wall time, or what the run recorded of its own
        training (`recorded(result)`) when that is longer (a run found complete costs nothing now)."""
        t0 = time.time()
        r = fn(*args)
        spent = max((time.time() - t0) / 60, recorded(r) if recorded else 0.0)
        self.minutes[key] = self.minutes.get(key, 0.0) + spent
        return r

    # ---- (a) label efficiency ---------------------------------------------------------------------------
    def subset(self, frac: float, rows_per_epoch: int) -> str:
        """A fixed share of the raw FEC training rows (the same rows for every seed and init), repeated
        until one pass holds `rows_per_epoch` rows, so that every fraction trains for the same steps."""
        src = self.world / "triplets/fec_train.csv"
        if frac >= 1:
            return str(src)
        dst = self.out / "a" / f"fec_train_{frac:g}_{rows_per_epoch}rows.csv"
        if not dst.is_file():
            rows = src.read_text().splitlines(keepends=True)
            keep = fixed_share(len(rows), frac)
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_text("".join(rows[i] for i in keep) * -(-rows_per_epoch // len(keep)))
        return str(dst)

    def stage2(self, init: str, pretrained: Path | None, frac: float, seed: int) -> dict:
        cfg = load_config(ExpressionConfig, [
            "configs/demo/expression.yaml", f"output_dir={self.out / 'a' / f'{init}_{frac:g}_s{seed}'}",
            f"data_root={self.world}", f"pretrained={pretrained or 'null'}", f"seed={seed}", *self.b.stage2])
        cfg.train_csv = self.subset(frac, cfg.steps_per_epoch * cfg.batch_size)
        test = self.timed("a", train_expression, cfg, recorded=lambda r: r["train_wall_s"] / 60)["test"]
        return {"acc": test["triplet_acc"], **{t: test["per_type"][t] for t in TYPES}}

    def claim_a(self) -> dict:
        long_mae = self.out / "a" / "mae_long"
        cfg = load_config(MAEPretrainConfig, [
            "configs/demo/mae_pretrain.yaml", f"output_dir={long_mae}", f"train_roots=[{self.world / 'faces/train'}]",
            f"val_roots=[{self.world / 'faces/val'}]", *self.b.mae_long])
        self.timed("a", train_mae, cfg, recorded=lambda r: r["train_minutes"])
        runs = {}
        for seed in self.b.seeds:
            for frac in self.b.fractions:
                for init, ckpt in (("mae", self.mae), ("random", None)):
                    runs[f"{init}/{frac:g}/{seed}"] = self.stage2(init, ckpt, frac, seed)
            f = self.b.long_fraction
            runs[f"mae_long/{f:g}/{seed}"] = self.stage2("mae_long", long_mae / "checkpoint-last.pth", f, seed)
        return runs

    # ---- (b), (c) transfer runs ---------------------------------------------------------------------------
    def emb2rig(self, folder: str, seed: int, avatars_root: Path | None = None, encoder: Path | None = None):
        over = [f"output_dir={self.out / folder / 'full'}", f"data_root={self.world}",
                f"encoder={encoder or self.encoder}",
                f"renderer={self.renderer}", f"seed={seed}", *self.b.emb2rig]
        if avatars_root is not None:
            over.append(f"avatars_root={avatars_root}")
        return load_config(Emb2RigCommand, ["configs/demo/emb2rig.yaml", *over])

    def few_renders(self) -> Path:
        """Avatar folders that list a fixed `render_fraction` of each avatar's rows (images shared by links)."""
        dst = self.out / "c" / f"avatars_{self.b.render_fraction:g}"
        for a in load_avatars(self.world / "avatars"):
            d = dst / a.name
            if (d / RIGS_FILE).is_file():
                continue
            d.mkdir(parents=True, exist_ok=True)
            for p in a.root.iterdir():
                if p.name != RIGS_FILE and not (d / p.name).exists():
                    os.symlink(p.resolve(), d / p.name)
            lines = (a.root / RIGS_FILE).read_text().splitlines(keepends=True)
            keep = fixed_share(len(lines) - 1, self.b.render_fraction, at_least=2)
            (d / RIGS_FILE).write_text(lines[0] + "".join(lines[1 + i] for i in keep))
        return dst

    def avatars(self) -> list:
        """The avatars the stage-3b runs decode (all of the world's unless the budget names some)."""
        return load_avatars(self.world / "avatars", self.emb2rig("b", 0).avatars or None)

    def transfer_runs(self) -> dict[str, dict]:
        """Every (b)/(c) run config: 'b/<seed>' full + rig-only + per-avatar; 'c/<seed>' full + per-avatar
        with few renders."""
        names = [a.name for a in self.avatars()]
        few = self.few_renders()
        runs = {}
        for seed in self.b.seeds:
            cfg = self.emb2rig(f"b/s{seed}", seed)
            runs[f"b/{seed}"] = run_configs(cfg, self.out / f"b/s{seed}", names)
            cfg = self.emb2rig(f"c/s{seed}", seed, few)
            runs[f"c/{seed}"] = run_configs(cfg, self.out / f"c/s{seed}", names, rig_only=False)
        if self.b.stage2_camera is not None:
            camera = self.camera_encoder()
            for seed in self.b.seeds:
                runs[f"d/{seed}"] = {"full": self.emb2rig(f"d/s{seed}", seed, encoder=camera)}
        for key, cfgs in runs.items():
            self.timed(key[0], train_all, cfgs, recorded=lambda r: sum(r.values()))
        return runs

    def camera_encoder(self) -> Path:
        """(d): the demo's stage 2 (MAE start, seed 0) trained with `augment: camera`."""
        out = self.out / "d" / "expression_camera"
        cfg = load_config(ExpressionConfig, [
            "configs/demo/expression.yaml", f"output_dir={out}", f"data_root={self.world}",
            f"pretrained={self.mae}", "augment=camera", *self.b.stage2_camera])
        summary = self.timed("d", train_expression, cfg, recorded=lambda r: r["train_wall_s"] / 60)
        self.camera_acc = summary["test"]["triplet_acc"]
        return out / "checkpoint-best.pth"

    def claims_bcd(self, runs: dict[str, dict]) -> tuple[dict, dict, dict]:
        avatars = self.avatars()
        names = [a.name for a in avatars]
        cfg = runs[f"b/{self.b.seeds[0]}"]["full"]
        images, gts, _ = read_eval(self.world, names, "test")
        frozen = load_frozen(str(self.encoder), str(self.renderer), names, [a.controls for a in avatars],
                             torch.device("cpu"), [a.face_box for a in avatars], cfg.crop_margin)
        boxes = read_face_boxes(self.world / "faces/test")
        centers = [((b[0] + b[2]) / 2, (b[1] + b[3]) / 2) for b in (boxes[self.world / i] for i in images)]
        conditions = [("clean", 0)] + [(k, s) for k, ss in STRENGTHS.items() for s in ss]
        mean_rig = mean_rigs(avatars, cfg.val_fraction, len(images))
        camera = None if f"d/{self.b.seeds[0]}" not in runs else load_frozen(
            str(runs[f"d/{self.b.seeds[0]}"]["full"].encoder), str(self.renderer), names, [a.controls for a in avatars],
            torch.device("cpu"), [a.face_box for a in avatars], cfg.crop_margin)
        cols = ["full", "rig_only", "per_avatar", "mean_rig"] + (["camera"] if camera else [])
        b, c, d = {}, {}, {}
        for kind, strength in conditions:
            t0 = time.time()
            fn = None if kind == "clean" else \
                (lambda img, i, k=kind, s=strength: degrade(img, k, s, seed=i, center=centers[i]))
            feats = held_out_features(frozen, self.world, images, "test", cfg.crop_margin, fn)
            feats_camera = camera and held_out_features(camera, self.world, images, "test", cfg.crop_margin, fn)
            for seed in self.b.seeds:
                preds = predictions(runs[f"b/{seed}"], feats, names) | {"mean_rig": mean_rig}
                if camera:
                    preds["camera"] = predictions(runs[f"d/{seed}"], feats_camera, names)["full"]
                err = rig_errors(preds, gts, names, cols)
                d[f"{kind}/{strength:g}/{seed}"] = {k: v["mean"] for k, v in err.items()}
                if kind == "clean":
                    b[seed] = {k: err[k] for k in ("full", "rig_only", "per_avatar", "mean_rig")}
                    few = rig_errors(predictions(runs[f"c/{seed}"], feats, names), gts, names, ["full", "per_avatar"])
                    c[seed] = {"all": {k: err[k] for k in ("full", "per_avatar")}, "few": few}
            self.minutes["d"] = self.minutes.get("d", 0.0) + (time.time() - t0) / 60
        return b, c, d


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demo", type=Path, default=ROOT / "outputs/demo", help="the demo's output folder")
    ap.add_argument("--out", type=Path, default=None,
                    help="the runs' folder (default outputs/claims, or outputs/claims_quick with --quick)")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs/claims.md", help="the document (plots beside it)")
    ap.add_argument("--quick", action="store_true", help="tiny budgets: checks the wiring, not the claims")
    ap.add_argument("--camera", action="store_true",
                    help="(d) also with a stage-2 encoder trained with augment: camera (about 15 min more)")
    args = ap.parse_args()
    b = QUICK if args.quick else FULL
    if args.camera and b.stage2_camera is None:
        b = dataclasses.replace(b, stage2_camera=[])
    out = args.out or ROOT / ("outputs/claims_quick" if args.quick else "outputs/claims")
    cl = Claims(args.demo.resolve(), out.resolve(), b)
    res_path = cl.out / "claims.json"
    prev = json.loads(res_path.read_text()) if res_path.is_file() else {}
    same = lambda x, y: {**x, "stage2_camera": None} == {**y, "stage2_camera": None}  # noqa: E731
    if prev and not same(prev["budget"], dataclasses.asdict(b)):
        raise SystemExit(f"[claims] the runs under {cl.out} were made with another budget ({res_path}); "
                         "give another --out, or delete that folder to start afresh")
    prev = prev.get("minutes", {})
    a = cl.claim_a()
    runs = cl.transfer_runs()
    bres, cres, d = cl.claims_bcd(runs)
    minutes = {k: round(max(v, prev.get(k, 0.0)), 2) for k, v in cl.minutes.items()}  # a re-run finds runs done
    demo_acc = json.loads((cl.demo / "expression" / "summary.json").read_text())["test"]["triplet_acc"]
    res = {"a": a, "b": bres, "c": cres, "d": d, "minutes": minutes, "budget": dataclasses.asdict(b),
           "stage2_acc": {"demo": demo_acc, **({"camera": cl.camera_acc} if b.stage2_camera is not None else {})}}
    write_json(res_path, res)
    res = json.loads(res_path.read_text())  # the document is made from what the file holds
    names = [av.name for av in cl.avatars()]
    args.doc.parent.mkdir(parents=True, exist_ok=True)
    args.doc.write_text(document(res, b, names, args.doc, args.quick) + "\n")
    write_json(args.doc.parent / "claims" / "claims.json", res)
    print(f"[claims] wrote {args.doc} ({sum(minutes.values()):.1f} min of runs)")


if __name__ == "__main__":
    main()
