"""Stage-1 driver: `main(cfg)` pre-trains the MAE on face folders and keeps a resumable run folder.

Run folder (`cfg.output_dir`): config.yaml, run.json, metrics.jsonl, curves.png,
recon_epochNNN.png (original | masked | reconstruction | reconstruction + visible),
checkpoint-last.pth / checkpoint-best.pth (`model` in official MAE key layout, loadable with
`mae_pretrain.load_mae_checkpoint`) and summary.json.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from common.checkpoint import finished_summary, resume_run, save_run, stop_if_diverged
from common.config import to_dict
from common.device import check_precision, make_scaler, seed_everything
from common.dist import cleanup, init_distributed, unwrap, wrap_ddp
from common.metrics import MetricsLogger, plot_metrics
from common.run import prepare_run_dir, write_json
from common.seeding import set_epoch

from .checkpoint_io import load_mae_checkpoint
from .config import MAEPretrainConfig
from .data import build_loaders
from .engine import build_optimizer, evaluate, train_one_epoch
from .models_mae import build_mae
from .visualize import save_recon_grid


def main(cfg: MAEPretrainConfig) -> dict:
    """Train (or resume) stage 1 as configured; returns the summary dict (also summary.json)."""
    info = init_distributed(cfg.device)
    dev = info.device
    check_precision(cfg.precision, dev)
    seed_everything(cfg.seed + info.rank)
    run_dir = prepare_run_dir(cfg.output_dir, cfg, info.is_main)
    overrides = {"norm_pix_loss": cfg.norm_pix_loss} | ({"img_size": cfg.img_size} if cfg.img_size else {})
    model = build_mae(cfg.model, **overrides).to(dev)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    size = model.cfg.img_size
    loader, val = build_loaders(cfg.train_roots, cfg.val_roots, size, cfg.scale_min, cfg.batch_size,
                                cfg.num_workers, cfg.val_max_images, info, cfg.seed, cfg.crop_margin)
    eff_batch = cfg.batch_size * cfg.accum_iter * info.world_size
    lr = cfg.lr or cfg.blr * eff_batch / 256
    optimizer = build_optimizer(model, lr, cfg.weight_decay, dev)
    scaler = make_scaler(dev, cfg.precision)
    # Fixed masks for the held-out loss and the grid, the same every epoch and every run.
    gen = torch.Generator().manual_seed(cfg.seed + 12345)
    val_noise = torch.rand(0 if val is None else val.shape[0], model.patch_embed.num_patches, generator=gen)

    parts = {"model": model, "optimizer": optimizer, "scaler": scaler}
    ckpt = resume_run(run_dir, info, parts, cfg.seed)
    # state["epoch"]: epochs finished (the checkpoint's "epoch" is the last finished one, 0-based)
    state = {"epoch": ckpt["start_epoch"], "best_metric": None, "heldout_loss_first": None, "train_minutes": 0.0}
    state.update({k: ckpt[k] for k in ("best_metric", "heldout_loss_first", "train_minutes") if k in ckpt})
    if (done := finished_summary(run_dir, info, state["epoch"], cfg.epochs)) is not None:
        cleanup()
        return done
    if state["epoch"] == 0 and cfg.pretrained:  # a new run from a public MAE / MAE-Face file
        missing, unexpected = load_mae_checkpoint(model, cfg.pretrained)
        if info.is_main:
            fresh = [k for k in missing if k.startswith(("decoder_", "mask_token"))]
            print(f"[mae] init from {cfg.pretrained}: {len(missing)} keys missing ({len(fresh)} of the decoder, "
                  f"which starts fresh), {len(unexpected)} unexpected {unexpected[:5]}")

    train_model = wrap_ddp(model, info)
    if cfg.compile:
        train_model = torch.compile(train_model)
    log = MetricsLogger(run_dir, enabled=info.is_main, tensorboard=cfg.tensorboard)
    grid = None
    if val is not None and cfg.grid_samples > 0:  # faces spread over the held-out set (several actors)
        pick = torch.linspace(0, val.shape[0] - 1, min(cfg.grid_samples, val.shape[0])).long()
        grid = (val[pick], val_noise[pick])
    if info.is_main:
        print(f"MAE {cfg.model} ({size} px) on {dev}, {cfg.precision}, {info.world_size} process(es): "
              f"{len(loader.dataset)} train images, effective batch {eff_batch}, lr {lr:.3g}")
    if state["heldout_loss_first"] is None and val is not None:  # before any training step
        state["heldout_loss_first"] = evaluate(model, val, val_noise, cfg, dev)["heldout_loss"]
        log.write({"epoch": 0, "heldout_loss": state["heldout_loss_first"]})
        if info.is_main and grid:
            save_recon_grid(model, *grid, cfg.mask_ratio, run_dir / "recon_epoch000.png", cfg.precision)

    last = None
    stop_at = cfg.epochs if cfg.stop_after_epochs <= 0 else min(cfg.epochs, state["epoch"] + cfg.stop_after_epochs)
    for epoch in range(state["epoch"], stop_at):
        t0 = time.perf_counter()
        set_epoch(loader, epoch)
        stats = train_one_epoch(train_model, loader, optimizer, scaler, epoch, cfg, device=dev, lr=lr,
                                show_progress=info.is_main)
        val_stats = evaluate(model, val, val_noise, cfg, dev) if val is not None else {}
        last = {"epoch": epoch + 1, **{f"train/{k}": v for k, v in stats.items()}, **val_stats}
        log.write(last)
        metric = val_stats.get("heldout_loss", stats["train_loss"])
        stop_if_diverged(run_dir, epoch + 1, unwrap(model), {"heldout_loss" if val_stats else "train_loss": metric})
        is_best = state["best_metric"] is None or metric < state["best_metric"]
        state.update(epoch=epoch + 1, best_metric=metric if is_best else state["best_metric"],
                     train_minutes=state["train_minutes"] + (time.perf_counter() - t0) / 60)
        if info.is_main:
            if grid:
                save_recon_grid(model, *grid, cfg.mask_ratio, run_dir / f"recon_epoch{epoch + 1:03d}.png",
                                cfg.precision)
            plot_metrics(run_dir / "metrics.jsonl", run_dir / "curves.png")
        save_run(run_dir, info, parts, epoch, is_best, config=to_dict(cfg),
                 **{k: v for k, v in state.items() if k != "epoch"})
    log.close()
    cleanup()
    return _summary(run_dir, state, cfg, last)


def _summary(run_dir: Path, state: dict, cfg: MAEPretrainConfig, last: dict | None) -> dict:
    """Write and return summary.json (held-out loss before / after, epochs, minutes, images/s)."""
    path = run_dir / "summary.json"
    if last is None and path.is_file():
        import json
        return json.loads(path.read_text())
    first = state["heldout_loss_first"]
    final = None if last is None else last.get("heldout_loss")
    out = {"model": cfg.model, "epochs": state["epoch"], "train_minutes": round(state["train_minutes"], 3),
           "heldout_loss_first": first, "heldout_loss_last": final,
           "heldout_drop_pct": None if first is None or final is None else round(100 * (1 - final / first), 2),
           "images_per_s": None if last is None else round(last["train/images_per_s"], 2),
           "checkpoint": str(run_dir / "checkpoint-last.pth")}
    if int(os.environ.get("RANK", "0")) == 0:
        write_json(path, out)
    return out
