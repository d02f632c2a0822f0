"""Stage 3b: train one rig decoder for many avatars through the frozen encoder and renderer.

    python train_emb2rig_multichar.py configs/demo/emb2rig.yaml [key=value ...]

The run folder gets config.yaml, run.json, metrics.jsonl, curves.png, checkpoint-{last,best}.pth
(best = lowest val/total), references.png (each avatar's reference image, the input of the
identity encoder), samples.png (held-out inputs | renders of their decoded rigs per avatar) and
summary.json. The checkpoint also holds what animate needs to run it and to check that it is given the
same frozen networks: avatars, controls, face boxes, and the reference rigs and renders (`references`).
A finished run exits at once ("already complete"); an interrupted one resumes.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from torchvision.utils import save_image

from common.checkpoint import finished_summary, resume_run, save_run, stop_if_diverged
from common.config import to_dict
from common.device import make_scaler, seed_everything
from common.dist import cleanup, init_distributed, make_sampler, unwrap, wrap_ddp
from common.metrics import MetricsLogger, plot_metrics
from common.optim import LrSchedule, param_groups_weight_decay
from common.run import prepare_run_dir, write_json
from common.seeding import SeededSamples, set_epoch
from data.avatars import keep_batch, load_avatars
from data.loading import build_loader
from emb2rig.config import Emb2RigConfig
from emb2rig.data import build_sets
from emb2rig.discriminator import MultiScalePatchGAN
from emb2rig.engine import evaluate, train_one_epoch
from emb2rig.frozen import load_frozen, reference_features, reference_images
from emb2rig.models import build_model
from emb2rig.official import load_pretrained


def _loader(ds, cfg: Emb2RigConfig, info, train: bool) -> DataLoader:
    sampler = make_sampler(ds, info, shuffle=train, seed=cfg.seed, drop_last=train)
    if train:  # per-sample seeds: common/seeding.py
        ds = SeededSamples(ds, cfg.seed, info.rank)
    return build_loader(ds, batch_size=cfg.batch_size, sampler=sampler, collate_fn=keep_batch, drop_last=train,
                        num_workers=cfg.num_workers, device=info.device, persistent_workers=train,
                        generator=torch.Generator())


def make_optimizer(model: torch.nn.Module, cfg: Emb2RigConfig) -> torch.optim.Optimizer:
    """Adam (L2 weight decay in the gradient, official) or AdamW (decoupled), no decay on biases and norms."""
    groups, betas = param_groups_weight_decay(model, cfg.weight_decay), (float(cfg.betas[0]), float(cfg.betas[1]))
    optim = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    return optim(groups, lr=cfg.lr, betas=betas)


@torch.no_grad()
def save_samples(model, frozen, ds, path: Path, device, n: int = 8) -> None:
    """Grid: a row per held-out input (faces first, then renders): input | its render for each avatar."""
    idx = torch.linspace(0, len(ds) - 1, n).long().tolist()
    batch = ds.__getitems__(idx)
    img = batch["image"].to(device).float() / 255  # (n, 3, S, S)
    feat = frozen.encode(img, batch["source"].to(device))[0].float()
    cols = [img]
    for a in range(len(frozen.names)):
        av = torch.full((n,), a, dtype=torch.long, device=device)
        cols.append(frozen.render(model(feat, av), av))
    save_image(torch.stack(cols, 1).flatten(0, 1), path, nrow=len(cols))  # (n * (1 + A), 3, S, S)


def main(cfg: Emb2RigConfig) -> dict | None:
    """Train stage 3b as configured; returns the summary dict on rank 0."""
    info = init_distributed(cfg.device)
    seed_everything(cfg.seed + info.rank)
    run_dir = prepare_run_dir(cfg.output_dir, cfg, info.is_main)
    root = Path(cfg.data_root)
    avatars = load_avatars(root / cfg.avatars_root, cfg.avatars or None)
    names, controls = [a.name for a in avatars], [a.controls for a in avatars]
    face_boxes = [a.face_box for a in avatars]
    frozen = load_frozen(cfg.encoder, cfg.renderer, names, controls, info.device, face_boxes, cfg.crop_margin)
    train_set, val_set = build_sets(avatars, [root / f for f in cfg.faces], frozen.image_size, cfg.val_fraction,
                                    cfg.crop_margin, cfg.cache)
    own_rigs = [train_set.rig[train_set.source == k, :len(c)].numpy() for k, c in enumerate(controls)]
    ref_rigs = [np.median(r, axis=0) for r in own_rigs]  # each (n_a,): the reference pose
    refs = reference_images(frozen, ref_rigs, info.device)  # (A, 3, S, S)
    model = build_model(reference_features(frozen, refs), [len(c) for c in controls], cfg.model,
                        [torch.from_numpy(r.mean(0)) for r in own_rigs]).to(info.device)
    if cfg.pretrained:  # learned weights only: the identity inputs belong to this run's encoder, renderer and data
        derived = {k: v.clone() for k, v in model.state_dict().items() if k in ("ids.ref_feats", "prior_logit")}
        load_pretrained(model, cfg.pretrained)
        model.load_state_dict(derived, strict=False)
    disc = MultiScalePatchGAN(cfg.disc.scales, cfg.disc.channels, cfg.disc.layers).to(info.device) \
        if cfg.loss.weight_gan > 0 else None
    opt = make_optimizer(model, cfg)
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.disc.lr, betas=(0.0, 0.99)) if disc is not None else None
    scaler, scaler_d = make_scaler(info.device, cfg.precision), make_scaler(info.device, cfg.precision)
    parts = {"model": model, "optimizer": opt, "scaler": scaler, "disc": disc, "optimizer_d": opt_d,
             "scaler_d": scaler_d if disc is not None else None}
    ck = resume_run(run_dir, info, parts, cfg.seed)
    start, best, step = ck["start_epoch"], ck.get("best_metric", math.inf), ck.get("step", 0)
    if (done := finished_summary(run_dir, info, start, cfg.epochs)) is not None:
        cleanup()
        return done
    model_ddp = wrap_ddp(model, info)
    disc_ddp = wrap_ddp(disc, info) if disc is not None else None
    train_loader = _loader(train_set, cfg, info, train=True)
    val_sub = val_set
    if 0 < cfg.val_samples < len(val_set):  # a fixed, evenly spaced subset (faces and renders in proportion)
        keep = torch.linspace(0, len(val_set) - 1, cfg.val_samples).long().tolist()
        val_sub = torch.utils.data.Subset(val_set, keep)
    val_loader = _loader(val_sub, cfg, info, train=False)
    per_epoch = min(len(train_loader), cfg.steps_per_epoch) if cfg.steps_per_epoch else len(train_loader)
    lr_at = LrSchedule.from_config(cfg, per_epoch)  # the step alone sets the lr: a resumed run continues the curve

    log = MetricsLogger(run_dir, enabled=info.is_main, tensorboard=cfg.tensorboard)
    if info.is_main:
        save_image(refs, run_dir / "references.png", nrow=len(refs))
        print(f"[emb2rig] avatars {names}; train {train_set.n_faces} faces + {train_set.n_renders} renders, "
              f"val {val_set.n_faces} + {val_set.n_renders}; {per_epoch} steps/epoch, "
              f"{lr_at.warmup_steps} warm-up steps")
    t0 = time.time()
    for epoch in range(start, cfg.epochs):
        set_epoch(train_loader, epoch)
        stats = train_one_epoch(model_ddp, disc_ddp, frozen, train_loader, (opt, opt_d), (scaler, scaler_d),
                                epoch, step, lr_at, cfg, info)
        step += per_epoch
        stats.update(evaluate(model_ddp, disc_ddp, frozen, val_loader, cfg, info))
        stop_if_diverged(run_dir, epoch, unwrap(model), {"val/total": stats["val/total"]})
        is_best = stats["val/total"] < best
        best = min(best, stats["val/total"])
        log.write({"epoch": epoch, "step": step, **stats})
        if info.is_main:
            print(f"[emb2rig] epoch {epoch}: " + ", ".join(f"{k} {v:.4g}" for k, v in stats.items()))
        save_run(run_dir, info, parts, epoch, is_best, step=step, best_metric=best, config=to_dict(cfg),
                 avatars=names, controls=controls, face_boxes=face_boxes,
                 references={"rigs": [r.tolist() for r in ref_rigs], "images": refs.half().cpu()})
    log.close()
    summary = None
    if info.is_main:
        plot_metrics(run_dir / "metrics.jsonl", run_dir / "curves.png")
        model.eval()
        save_samples(model, frozen, val_set, run_dir / "samples.png", info.device)
        summary = {"avatars": names, "epochs": cfg.epochs, "steps": step, "best_val_total": best,
                   "last": stats if cfg.epochs > start else {}, "train_minutes_this_call": (time.time() - t0) / 60,
                   "checkpoint": str(run_dir / "checkpoint-best.pth")}
        write_json(run_dir / "summary.json", summary)
    cleanup()
    return summary
