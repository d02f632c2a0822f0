"""Benchmark each stage's data pipeline: decode throughput per DataLoader worker and the peak resident
memory of the training process (main process + workers), on generated folders of N images at 256 px.

    python scripts/bench_data.py --root /path/to/scratch --n 2000 20000 --workers 2
    python scripts/bench_data.py --root /path/to/scratch --n 2000 --stages 3a --delete   # then remove the folders
    python scripts/bench_data.py --root /path/to/scratch --listing 1000000               # time listing 1M files

One pass (an epoch) over each stage's training set, with the paper config's transform and batch size,
each in a fresh process: stage 1 `FaceImages` (RandomResizedCrop to 224), stage 2 `TripletDataset`
(N / 3 triplets, timm RandAugment at 224), stage 3a `AvatarRigDataset` (per-avatar batches of 128 at
256 px), stage 3b `MixedSet` (N faces + N renders at 256 px, batches of 16). Memory is sampled from
/proc every 50 ms (VmRSS summed over the process and its workers: pages shared between them, such as
the PyTorch libraries, count once per process). Streaming keeps it flat in N; `--cache` shows the
in-memory cache for contrast. The folders (JPEG faces; avatar renders are hard links to them) are
written once under --root and reused.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

STAGES = ("1", "2", "3a", "3b")
SIZE, PER_ACTOR, AVATARS = 256, 100, ("alien", "cat")


def make_folder(folder: Path, n: int, seed: int = 0) -> float:
    """N face JPEGs (smooth random colour fields, 256 px) in actor folders, a triplet CSV and two avatars
    whose renders are hard links to the faces; returns the seconds it took (0 when it was there)."""
    if (folder / "done").is_file():
        return 0.0
    t0, rng = time.perf_counter(), np.random.default_rng(seed)
    shutil.rmtree(folder, ignore_errors=True)
    faces = []
    for i in range(n):
        path = folder / "faces" / "train" / f"actor{i // PER_ACTOR:04d}" / f"{i:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        small = Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
        small.resize((SIZE, SIZE), Image.Resampling.BICUBIC).save(path, quality=90)
        faces.append(path)
    rows = ["anchor,positive,negative,type"]
    for _ in range(n // 3):
        a, p, q = rng.choice(n, 3, replace=False)
        rows.append(",".join(f.relative_to(folder).as_posix() for f in (faces[a], faces[p], faces[q]))
                    + ",ONE_CLASS_TRIPLET")
    (folder / "triplets.csv").write_text("\n".join(rows) + "\n")
    for k, name in enumerate(AVATARS):
        av = folder / "avatars" / name
        (av / "images").mkdir(parents=True)
        (av / "avatar.yaml").write_text("display_name: " + name + "\neye_boxes: [[0.2, 0.3, 0.4, 0.4]]\n"
                                        "mouth_box: [0.3, 0.6, 0.7, 0.8]\n")
        lines = ["image," + ",".join(f"c{c}" for c in range(8))]
        for i in range(k, n, len(AVATARS)):
            os.link(faces[i], av / "images" / faces[i].name)
            lines.append(f"images/{faces[i].name}," + ",".join(f"{v:.3f}" for v in rng.random(8)))
        (av / "rigs.csv").write_text("\n".join(lines) + "\n")
    (folder / "done").write_text(str(n))
    return time.perf_counter() - t0


def rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return 0


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


class PeakMemory:
    """Samples VmRSS of this process and of all its child processes every `every` seconds."""

    def __init__(self, every: float = 0.05):
        self.every, self.peak_total, self.peak_main, self._stop = every, 0, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        me = os.getpid()
        while not self._stop.is_set():
            main = rss_kb(me)
            self.peak_main = max(self.peak_main, main)
            self.peak_total = max(self.peak_total, main + sum(rss_kb(c) for c in children(me)))
            time.sleep(self.every)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def stage_loader(stage: str, folder: Path, workers: int, cache: bool):
    """(DataLoader over stage `stage`'s training set, images decoded per batch) as the paper configs build it."""
    import torch

    from common.config import load_config
    from common.dist import DistInfo, make_sampler
    from data.avatars import AvatarBatchSampler, AvatarRigDataset, keep_batch, load_avatars
    from data.loading import build_loader

    info = DistInfo(0, 1, 0, torch.device("cpu"))
    if stage == "1":
        from mae_pretrain.data import build_loaders
        loader, _ = build_loaders([str(folder / "faces/train")], [], 224, 0.2, 64, workers, 0, info, 0, 0.3)
        return loader, 64
    if stage == "2":
        from data.triplets import TripletDataset, read_triplets
        from expression_finetune.config import ExpressionConfig
        from expression_finetune.transforms import build_train_transform
        cfg = load_config(ExpressionConfig, ["configs/mae_train_expemb.yaml"])
        tf, deterministic = build_train_transform(cfg, 224)
        ds = TripletDataset(read_triplets(folder / "triplets.csv", folder), tf, cache, 0.3, deterministic)
        sampler = make_sampler(ds, info, shuffle=True, drop_last=True)
        return build_loader(ds, batch_size=64, sampler=sampler, drop_last=True, num_workers=workers), 3 * 64
    avatars = load_avatars(folder / "avatars")
    if stage == "3a":
        ds = AvatarRigDataset(avatars, SIZE, "train", 0.05, cache)
        sampler = AvatarBatchSampler(ds.avatar, 128)
        return build_loader(ds, batch_sampler=sampler, collate_fn=keep_batch, num_workers=workers), 128
    from emb2rig.data import build_sets
    ds, _ = build_sets(avatars, [folder / "faces/train"], SIZE, 0.1, 0.3, cache)
    sampler = make_sampler(ds, info, shuffle=True, drop_last=True)
    return build_loader(ds, batch_size=16, sampler=sampler, drop_last=True, collate_fn=keep_batch,
                        num_workers=workers), 16


def measure(stage: str, folder: Path, workers: int, cache: bool) -> dict:
    """One epoch of `stage`'s loader; images/s per worker and peak memory (MB)."""
    with PeakMemory() as mem:
        t_build = time.perf_counter()
        loader, per_batch = stage_loader(stage, folder, workers, cache)
        t0 = time.perf_counter()
        n_batches = sum(1 for _ in loader)
        t1 = time.perf_counter()
        del loader
    images = n_batches * per_batch
    return {"stage": stage, "n": int((folder / "done").read_text()), "images": images, "cache": cache,
            "setup_s": round(t0 - t_build, 2), "epoch_s": round(t1 - t0, 1),
            "img_per_s_per_worker": round(images / (t1 - t0) / max(workers, 1), 1),
            "peak_main_mb": round(mem.peak_main / 1024), "peak_total_mb": round(mem.peak_total / 1024)}


def time_listing(root: Path, n: int) -> None:
    """Create n empty .jpg files (1,000 per folder) under root/listing, time listing them as every stage
    does (`data.video.image_paths`, then `PathArray`) and as the old `Path.rglob` + `is_file` did (up to
    100,000 files), then remove them."""
    from data.loading import PathArray
    from data.video import IMAGE_EXTS, image_paths

    folder = root / "listing"
    shutil.rmtree(folder, ignore_errors=True)
    t0 = time.perf_counter()
    for i in range(0, n, 1000):
        sub = folder / f"actor{i // 1000:05d}"
        sub.mkdir(parents=True)
        for j in range(i, min(i + 1000, n)):
            (sub / f"{j:07d}.jpg").touch()
    print(f"created {n} empty files in {time.perf_counter() - t0:.0f} s")
    t0 = time.perf_counter()
    paths = PathArray(image_paths(folder))
    took = time.perf_counter() - t0
    print(f"listing {len(paths)} files (os.scandir, sorted, into a PathArray): {took:.2f} s")
    if n <= 100_000:
        t0 = time.perf_counter()
        old = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
        print(f"the same with Path.rglob + is_file (before): {time.perf_counter() - t0:.2f} s ({len(old)} files)")
    shutil.rmtree(folder)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", required=True, help="scratch folder for the generated images (reused)")
    ap.add_argument("--n", type=int, nargs="+", default=[2000, 20000])
    ap.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--cache", action="store_true", help="stages 2, 3a, 3b with the in-memory cache (contrast)")
    ap.add_argument("--delete", action="store_true", help="remove the generated folders at the end")
    ap.add_argument("--listing", type=int, default=0, help="only time listing this many empty files")
    ap.add_argument("--measure", help=argparse.SUPPRESS)  # internal: one stage in this process
    a = ap.parse_args()
    if a.listing:
        time_listing(Path(a.root), a.listing)
        return
    if a.measure:
        print(json.dumps(measure(a.measure, Path(a.root), a.workers, a.cache)), flush=True)
        return
    rows = []
    for n in a.n:
        folder = Path(a.root) / f"n{n}"
        took = make_folder(folder, n)
        if took:
            print(f"wrote {n} JPEGs ({SIZE} px) under {folder} in {took:.0f} s", flush=True)
        for stage in a.stages:
            cmd = [sys.executable, __file__, "--root", str(folder), "--workers", str(a.workers), "--measure", stage]
            out = subprocess.run(cmd + (["--cache"] if a.cache else []), capture_output=True, text=True,
                                 cwd=Path(__file__).resolve().parents[1])
            if out.returncode:
                sys.exit(f"stage {stage} at N={n} failed:\n{out.stderr[-3000:]}")
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    print(f"\n| stage | N | images | epoch s | images/s per worker ({a.workers} workers) | peak RSS main MB | "
          "peak RSS main + workers MB |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['stage']} | {r['n']} | {r['images']} | {r['epoch_s']} | {r['img_per_s_per_worker']} | "
              f"{r['peak_main_mb']} | {r['peak_total_mb']} |")
    if len(a.n) > 1:
        lo, hi = min(a.n), max(a.n)
        for s in a.stages:
            r = {x["n"]: x["peak_total_mb"] for x in rows if x["stage"] == s}
            growth = r[hi] / r[lo] - 1
            print(f"stage {s}: peak memory at N={hi} is {growth:+.1%} vs N={lo} "
                  f"({'within' if abs(growth) <= 0.15 else 'NOT within'} 15%)")
    if a.delete:
        for n in a.n:
            shutil.rmtree(Path(a.root) / f"n{n}", ignore_errors=True)


if __name__ == "__main__":
    main()
