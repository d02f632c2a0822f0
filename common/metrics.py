"""Metrics: JSON lines from rank 0, optional TensorBoard, a PNG of the curves, tqdm progress.

    log = MetricsLogger(run_dir, enabled=info.is_main)
    log.write({"epoch": 3, "train/loss": 0.41, "val/psnr": 27.2})
    plot_metrics(run_dir / "metrics.jsonl", run_dir / "curves.png")
"""
from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tqdm import tqdm

METRICS_FILE = "metrics.jsonl"


class MetricsLogger:
    """Appends one JSON object per `write` to `run_dir/metrics.jsonl`; mirrors scalars to
    TensorBoard when `tensorboard=True` and the package is installed.

    Args:
        run_dir: the run folder.
        enabled: False on non-zero ranks (then every call is a no-op).
        tensorboard: also write TensorBoard event files if `torch.utils.tensorboard` imports.
    """

    def __init__(self, run_dir: str | Path, enabled: bool = True, tensorboard: bool = False):
        self.path = Path(run_dir) / METRICS_FILE
        self.enabled = enabled
        self.start = time.time()
        self.tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(str(Path(run_dir) / "tb"))
            except ImportError:
                print("[metrics] tensorboard not installed; logging to metrics.jsonl only")

    def write(self, record: dict[str, Any], step: int | None = None) -> None:
        if not self.enabled:
            return
        rec = {**record, "time_s": round(time.time() - self.start, 3)}
        with self.path.open("a") as f:
            f.write(json.dumps(rec, default=float) + "\n")
        if self.tb is not None:
            s = step if step is not None else int(record.get("step", record.get("epoch", 0)))
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("step", "epoch"):
                    self.tb.add_scalar(k, v, s)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_metrics(jsonl: str | Path, png: str | Path, x_key: str = "epoch") -> Path | None:
    """One subplot per metric found in `jsonl` (x: `x_key`, else `step`, else line number)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for i, rec in enumerate(read_metrics(jsonl)):
        x = rec.get(x_key, rec.get("step", i))
        for k, v in rec.items():
            if k in (x_key, "step", "epoch", "time_s") or not isinstance(v, (int, float)):
                continue
            if isinstance(v, float) and not math.isfinite(v):
                continue
            series[k].append((x, v))
    if not series:
        return None
    n = len(series)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, (name, pts) in zip(axes.flat, sorted(series.items())):
        xs, ys = zip(*pts)
        ax.plot(xs, ys, marker="." if len(xs) < 50 else None)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(x_key, fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)
    return Path(png)


def progress(iterable: Iterable, enabled: bool = True, **kwargs) -> Iterable:
    """tqdm on rank 0 (and never when disabled), a plain iterable elsewhere."""
    return tqdm(iterable, disable=not enabled, dynamic_ncols=True, mininterval=2.0, **kwargs)
