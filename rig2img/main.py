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

from common.checkpoint import finished_summary, resume_run, save_run, stop_if_diverged
from common.config import to_dict
from common.device import make_scaler, seed_everything
from common.dist import cleanup, init_distributed, make_sampler, unwrap, wrap_ddp
from common.metrics import MetricsLogger, plot_metrics
from common.optim import LrSchedule
from common.run import prepare_run_dir, write_json
from common.seeding import SeededSamples, set_epoch
from data.avatars import AvatarBatchSampler, AvatarRigDataset, box_mask, keep_batch, load_avatars
from data.loading import build_loader
from rig2img.config import Rig2ImgConfig
from rig2img.engine import evaluate, save_grid, train_one_epoch
from rig2img.models import build_renderer
from rig2img.renderer import renderer_meta


def main(cfg: Rig2ImgConfig) -> dict:
    """Train (or resume) the renderer described by `cfg`; returns the summary dict."""
    info = init_distributed(cfg.device)
    seed_everything(cfg.seed + info.rank)
    run_dir = prepare_run_dir(cfg.output_dir, cfg, info.is_main)
    avatars = load_avatars(cfg.data_root, cfg.avatars or None)
    train_ds = AvatarRigDataset(avatars, cfg.model.image_size, "train", cfg.val_fraction, cfg.cache)
    val_ds = AvatarRigDataset(avatars, cfg.model.image_size, "val", cfg.val_fraction, cfg.cache)
    regions = torch.stack([box_mask(a.boxes, cfg.model.image_size) for a in avatars]).to(info.device)  # (A, 1, H, W)
    seeded = SeededSamples(train_ds, cfg.seed, info.rank)  # per-sample seeds: common/seeding.py
    if cfg.model.mode == "per_avatar":  # one avatar per batch: each step trains one generator on a full batch
        sampler = AvatarBatchSampler(train_ds.avatar, cfg.batch_size, info.rank, info.world_size, cfg.seed)
        loader = build_loader(seeded, batch_sampler=sampler, collate_fn=keep_batch, num_workers=cfg.num_workers,
                              device=info.device, generator=torch.Generator())
    else:  # mixed batches: the shared network's BatchNorm statistics then match evaluation's
        sampler = make_sampler(train_ds, info, shuffle=True, seed=cfg.seed, drop_last=True)
        loader = build_loader(seeded, batch_size=cfg.batch_size, sampler=sampler, drop_last=True, collate_fn=keep_batch,
                              num_workers=cfg.num_workers, device=info.device, generator=torch.Generator())
    if info.is_main:
        counts = {a.name: f"{len(a.controls)} controls, {len(a.images)} rows" for a in avatars}
        print(f"[rig2img] {cfg.model.mode} renderer, {cfg.model.image_size} px; train {len(train_ds)}, "
              f"held out {len(val_ds)}; avatars {counts}")

    net = build_renderer([len(a.controls) for a in avatars], cfg.model, [a.boxes for a in avatars]).to(info.device)
    model = wrap_ddp(net, info, find_unused_parameters=cfg.model.mode == "per_avatar")
    betas = (float(cfg.betas[0]), float(cfg.betas[1]))
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr, betas=betas, weight_decay=cfg.weight_decay)
    scaler = make_scaler(info.device, cfg.precision)
    lr_at = LrSchedule.from_config(cfg, len(loader))

    parts = {"model": net, "optimizer": optimizer, "scaler": scaler}
    ck = resume_run(run_dir, info, parts, cfg.seed)
    start, best = ck["start_epoch"], ck.get("best_metric", float("-inf"))
    train_s, cpu_s = ck.get("train_time_s", 0.0), ck.get("train_cpu_s", 0.0)
    if (done := finished_summary(run_dir, info, start, cfg.epochs)) is not None:
        cleanup()
        return done

    log = MetricsLogger(run_dir, enabled=info.is_main, tensorboard=cfg.tensorboard)
    val: dict = {}
    for epoch in range(start, cfg.epochs):
        t0, c0 = time.time(), time.process_time()  # wall and process-CPU time of the epoch incl. evaluation
        set_epoch(loader, epoch)
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
        times = {"train_time_s": round(train_s, 1), "train_cpu_s": round(cpu_s, 1)}
        save_run(run_dir, info, parts, epoch, is_best, best_metric=best, **times, config=to_dict(cfg),
                 renderer=renderer_meta(cfg.model, avatars))
        if info.is_main:
            log.write({"epoch": epoch, **stats, **val, **times})
            plot_metrics(run_dir / "metrics.jsonl", run_dir / "curves.png")
            psnr = {a.name: round(val.get(f"val/{a.name}/psnr", float("nan")), 2) for a in avatars}
            print(f"[rig2img] epoch {epoch}: loss {stats['train/loss']:.4f} held-out PSNR {psnr} "
                  f"({train_s:.0f} s wall, {cpu_s:.0f} s CPU so far)", flush=True)
    summary = {"mode": cfg.model.mode, "image_size": cfg.model.image_size, "epochs": cfg.epochs,
               "best_mean_psnr": best, "train_time_s": round(train_s, 1),
               "train_cpu_s": round(cpu_s, 1), "final": val,
               "avatars": [a.name for a in avatars], "checkpoint": str(run_dir / "checkpoint-best.pth")}
    log.close()
    if info.is_main:
        write_json(run_dir / "summary.json", summary)
    cleanup()
    return summary
