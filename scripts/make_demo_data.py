"""Write the synthetic demo world: python scripts/make_demo_data.py --out DIR --preset tiny --seed 0"""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from data.demo_world import make_world  # noqa: E402

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", required=True, help="output folder (the world root)")
    ap.add_argument("--preset", default="tiny", choices=["tiny", "small"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=64, help="avatar render side in pixels")
    ap.add_argument("--face-size", type=int, default=None, help="actor photo side in pixels (default: the preset's)")
    ap.add_argument("--actors-3d", type=float, default=0.0,
                    help="share of the actors rendered as shaded 3-D heads (default 0: all drawn)")
    ap.add_argument("--workers", type=int, default=None, help="render processes (default 2)")
    a = ap.parse_args()
    t0 = time.time()
    s = make_world(a.out, a.preset, a.seed, a.size, a.workers, a.face_size, a.actors_3d)
    c = s["counts"]
    print(f"wrote {a.out}: {c['faces_train']}+{c['faces_test']} faces, triplets "
          f"{c['triplets']['train']['total']}/{c['triplets']['test']['total']}, "
          f"{sum(c['avatar_pairs'].values())} avatar pairs in {time.time() - t0:.1f}s")
