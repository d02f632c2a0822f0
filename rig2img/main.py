"""Stage 3a run: train the neural renderer, evaluate on held-out rigs, resume automatically.

    python train_rig2img.py configs/demo/rig2img.yaml model.mode=shared output_dir=outputs/demo/rig2img_shared
    torchrun --nproc_per_node 4 train_rig2img.py configs/configs_rig2img.yaml

The run folder gets config.yaml, metrics.jsonl, curves.png, grid_epoch<NNN>.png (per avatar: ground
truth row above the render row), checkpoint-{last,best}.pth (best = highest mean held-out PSNR)
and summary.json.
"""
from __future__ import annotations

import time

import torch
from torch.utils.data import DataLoader

from common.checkpoint import (
    find_resume,
    load_checkpoint,
    rng_state,
    save_training_state,
    set_rng_state,
    stop_if_diverged,
)
from common.config import to_dict
from common.device import make_scaler, seed_everything, seed_worker
from common.dist import barrier, cleanup, init_distributed, make_sampler, unwrap, wrap_ddp
from common.metrics import MetricsLogger, plot_metrics
from common.run import prepare_run_dir, write_json
from data.avatars import AvatarBatchSampler, AvatarRigDataset, box_mask, keep_batch, load_avatars
from rig2img.config import Rig2ImgConfig
from rig2img.engine import evaluate, lr_schedule, save_grid, train_one_epoch
from rig2img.models import build_renderer
from rig2img.renderer import renderer_meta


def main(cfg: Rig2ImgConfig) -> dict:
    """Train (or resume) the renderer described by `cfg`; returns the summary dict."""
    info = init_distributed(cfg.device)
    seed_everything(cfg.seed + info.rank)
    run_dir = prepare_run_dir(cfg.output_dir, cfg, info.is_main)
    avatars = load_avatars(cfg.data_root, cfg.avatars or None)
    train_ds = AvatarRigDataset(avatars, cfg.model.image_size, "train", cfg.val_fraction)
    val_ds = AvatarRigDataset(avatars, cfg.model.image_size, "val", cfg.val_fraction)
    regions = torch.stack([box_mask(a.boxes, cfg.model.image_size) for a in avatars]).to(info.device)  # (A, 1, H, W)
    if cfg.model.mode == "per_avatar":  # one avatar per batch: each step trains one generator on a full batch
        sampler = AvatarBatchSampler(train_ds.avatar, cfg.batch_size, info.rank, info.world_size, cfg.seed)
        loader = DataLoader(train_ds, batch_sampler=sampler, collate_fn=keep_batch, num_workers=cfg.num_workers,
                            worker_init_fn=seed_worker)
    else:  # mixed batches: the shared network's BatchNorm statistics then match evaluation's
        sampler = make_sampler(train_ds, info, shuffle=True, seed=cfg.seed, drop_last=True)
        loader = DataLoader(train_ds, batch_size=cfg.batch_size, sampler=sampler, drop_last=True,
                            collate_fn=keep_batch, num_workers=cfg.num_workers, worker_init_fn=seed_worker)
    if info.is_main:
        counts = {a.name: f"{len(a.controls)} controls, {len(a.images)} rows" for a in avatars}
        print(f"[rig2img] {cfg.model.mode} renderer, {cfg.model.image_size} px; train {len(train_ds)}, "
              f"held out {len(val_ds)}; avatars {counts}")

    net = build_renderer([len(a.controls) for a in avatars], cfg.model).to(info.device)
    model = wrap_ddp(net, info, find_unused_parameters=cfg.model.mode == "per_avatar")
    betas = (float(cfg.betas[0]), float(cfg.betas[1]))
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr, betas=betas, weight_decay=cfg.weight_decay)
    scaler = make_scaler(info.device, cfg.precision)
    lr_at = lr_schedule(cfg, len(loader))

    start, best, train_s, cpu_s = 0, float("-inf"), 0.0, 0.0
    resume = find_resume(run_dir)
    if resume is not None:
        ck = load_checkpoint(resume, map_location=info.device)
        net.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        scaler.load_state_dict(ck["scaler"])
        start, best = ck["epoch"] + 1, ck["best_metric"]
        train_s, cpu_s = ck.get("train_time_s", 0.0), ck.get("train_cpu_s", 0.0)
        if ck.get("rng") and info.world_size == 1:
            set_rng_state(ck["rng"])
        if info.is_main:
            print(f"[rig2img] resumed from {resume} at epoch {start}")
    if start >= cfg.epochs:
        if info.is_main:
            print(f"[rig2img] already complete ({cfg.epochs} epochs) in {run_dir}")
        cleanup()
        return {}

    log = MetricsLogger(run_dir, enabled=info.is_main, tensorboard=cfg.tensorboard)
    val: dict = {}
    for epoch in range(start, cfg.epochs):
        t0, c0 = time.time(), time.process_time()  # wall and process-CPU time of the epoch incl. evaluation
        sampler.set_epoch(epoch)
        stats = train_one_epoch(model, loader, optimizer, scaler, regions, epoch, cfg, info, lr_at)
        is_best = False
        if (epoch + 1) % cfg.eval_every == 0 or epoch == cfg.epochs - 1:
            val = evaluate(model, val_ds, regions, cfg, info)
            is_best = val["val/psnr"] > best
            best = max(best, val["val/psnr"])
            if info.is_main:
                save_grid(model, val_ds, run_dir / f"grid_epoch{epoch:03d}.png", cfg.grid_samples, cfg.precision,
                          info.device)
        train_s, cpu_s = train_s + time.time() - t0, cpu_s + time.process_time() - c0
        stop_if_diverged(run_dir, epoch, unwrap(model), {k: v for k, v in {**stats, **val}.items() if "loss" in k})
        if info.is_main:
            times = {"train_time_s": round(train_s, 1), "train_cpu_s": round(cpu_s, 1)}
            log.write({"epoch": epoch, **stats, **val, **times})
            state = {"model": unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
                     "scaler": scaler.state_dict(), "epoch": epoch, "best_metric": best, **times,
                     "config": to_dict(cfg), "renderer": renderer_meta(cfg.model, avatars), "rng": rng_state()}
            save_training_state(run_dir, state, is_best)
            plot_metrics(run_dir / "metrics.jsonl", run_dir / "curves.png")
            psnr = {a.name: round(val.get(f"val/{a.name}/psnr", float("nan")), 2) for a in avatars}
            print(f"[rig2img] epoch {epoch}: loss {stats['train/loss']:.4f} held-out PSNR {psnr} "
                  f"({train_s:.0f} s wall, {cpu_s:.0f} s CPU so far)", flush=True)
        barrier()
    summary = {"mode": cfg.model.mode, "image_size": cfg.model.image_size, "epochs": cfg.epochs,
               "best_mean_psnr": best, "train_time_s": round(train_s, 1),
               "train_cpu_s": round(cpu_s, 1), "final": val,
               "avatars": [a.name for a in avatars], "checkpoint": str(run_dir / "checkpoint-best.pth")}
    log.close()
    if info.is_main:
        write_json(run_dir / "summary.json", summary)
    cleanup()
    return summary
