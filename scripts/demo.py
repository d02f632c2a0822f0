"""The main job: the whole pipeline on the synthetic demo world, resumable stage by stage.

    python scripts/demo.py                 # everything under outputs/demo/
    python scripts/demo.py --preset tiny   # a quick smoke run

Each step runs as its own process (the same command a user would type). A step whose output
says it is complete is skipped, so an interrupted demo continues where it stopped.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(cmd: list[str]) -> float:
    """Run one step in the repo root; return its wall time in minutes (raises on failure)."""
    print("\n$ " + " ".join(cmd), flush=True)
    t0 = time.time()
    subprocess.run(cmd, cwd=ROOT, check=True)
    return (time.time() - t0) / 60


def make_world(out: Path, preset: str, seed: int) -> dict:
    info = out / "world.json"
    if info.is_file():
        world = json.loads(info.read_text())
        if world.get("preset") == preset and world.get("seed") == seed:
            print(f"[demo] demo world already at {out} ({preset}, seed {seed}); skipping generation")
            return world
    run([sys.executable, "scripts/make_demo_data.py", "--out", str(out), "--preset", preset, "--seed", str(seed)])
    return json.loads(info.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="outputs/demo", help="output folder (relative to the repo root)")
    ap.add_argument("--preset", default="small", choices=["tiny", "small"])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out = ROOT / args.out
    world = make_world(out / "world", args.preset, args.seed)
    print(f"\n[demo] world: {out / 'world'}")
    for key in sorted(world.get("counts", {})):
        print(f"  {key}: {world['counts'][key]}")
    print(f"  contact sheet: {out / 'world' / 'contact_sheet.png'}")


if __name__ == "__main__":
    main()
