"""Benchmark stage-1 MAE speed: training images/s (forward + backward + AdamW step) and
encoder-only inference images/s (all patches, no masking), on the current device.

    python scripts/bench_mae.py --model mae_vit_base_patch16 --batch-size 8 --precision bf16
    python scripts/bench_mae.py --model mae_vit_tiny_patch16_64 --batch-size 64 --compile

Synthetic inputs (the model's speed, not the disk's); medians over `--steps` timed steps after
`--warmup` untimed ones. The training step is the one `mae_pretrain.engine` runs.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as pretrain_mae.py: no spinning on shared cores
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common.device import autocast, pick_device, setup_cpu  # noqa: E402
from mae_pretrain.engine import build_optimizer  # noqa: E402
from mae_pretrain.models_mae import MAE_PRESETS, build_mae  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_rate(step, batch: int, warmup: int, steps: int, device: torch.device) -> float:
    """Images/s from the median wall time of `steps` calls of `step()` after `warmup` calls."""
    for _ in range(warmup):
        step()
    _sync(device)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return batch / statistics.median(times)


def bench(model_name: str, batch: int, precision: str, compile_: bool, channels_last: bool,
          warmup: int, steps: int, device: torch.device) -> dict:
    """Train and encoder-inference images/s of one configuration."""
    torch.manual_seed(0)
    model = build_mae(model_name, norm_pix_loss=True).to(device)
    size = MAE_PRESETS[model_name].img_size
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    imgs = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=fmt)
    optimizer = build_optimizer(model, lr=1e-4, weight_decay=0.05, device=device)
    train_fwd = torch.compile(model) if compile_ else model
    enc_fwd = torch.compile(model.forward_features) if compile_ else model.forward_features

    def train_step():
        with autocast(device, precision):
            loss, _, _ = train_fwd(imgs, mask_ratio=0.75)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def infer_step():
        with torch.inference_mode(), autocast(device, precision):
            enc_fwd(imgs)

    model.train()
    train = _median_rate(train_step, batch, warmup, steps, device)
    model.eval()
    infer = _median_rate(infer_step, batch, warmup, steps, device)
    return {"model": model_name, "batch": batch, "precision": precision, "compile": compile_,
            "channels_last": channels_last, "device": str(device), "threads": torch.get_num_threads(),
            "train_img_s": round(train, 2), "infer_img_s": round(infer, 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="mae_vit_base_patch16", choices=sorted(MAE_PRESETS))
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--precision", default="bf16", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")
    p.add_argument("--no-malloc-tuning", action="store_true", help="leave glibc's malloc at its defaults "
                   "(training on CPU tunes it: common.device.setup_cpu)")
    a = p.parse_args()
    device = pick_device(a.device)
    setup_cpu(device, a.threads, malloc=not a.no_malloc_tuning)  # as every training stage does
    r = bench(a.model, a.batch_size, a.precision, a.compile, a.channels_last, a.warmup, a.steps, device)
    print(f"{r['model']} batch {r['batch']} {r['precision']} compile={r['compile']} on {r['device']}: "
          f"train {r['train_img_s']} img/s, encoder inference {r['infer_img_s']} img/s")
    print(json.dumps(r))


if __name__ == "__main__":
    main()
