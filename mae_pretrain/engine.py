"""Stage-1 training and held-out evaluation loops (functions of their arguments, metric dicts out).

    optimizer = build_optimizer(model, lr, cfg.weight_decay, device)
    stats = train_one_epoch(model, loader, optimizer, scaler, epoch, cfg, device=device, lr=lr)
    val = evaluate(unwrap(model), val_images, val_noise, cfg, device)

The hot loop does not synchronise with the device: the loss is summed and its finiteness tracked
on the device, and checked every `cfg.log_every` iterations (the error names the exact step).
"""
from __future__ import annotations

import contextlib
import time

import torch
from torch.nn.parallel import DistributedDataParallel

from common.device import autocast
from common.dist import all_reduce_sum, reduce_means, unwrap
from common.metrics import progress
from common.optim import LrSchedule, check_finite, param_groups_weight_decay, set_lr
from data.images import report_unreadable


def build_optimizer(model: torch.nn.Module, lr: float, weight_decay: float, device: torch.device,
                    betas: tuple[float, float] = (0.9, 0.95)) -> torch.optim.AdamW:
    """AdamW (0.9, 0.95); no weight decay on norms and biases (cls/mask tokens keep it, as MAE).

    Uses the fused (single-kernel) AdamW on CUDA and CPU when this torch build has it.
    """
    groups = param_groups_weight_decay(unwrap(model), weight_decay)
    try:
        return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=device.type in ("cuda", "cpu"))
    except (RuntimeError, ValueError):  # no fused kernel for this device / build
        return torch.optim.AdamW(groups, lr=lr, betas=betas, foreach=device.type == "cuda")


def _no_sync(model: torch.nn.Module, sync: bool):
    """DDP's `no_sync()` on accumulation micro-steps (also through a torch.compile wrapper)."""
    ddp = getattr(model, "_orig_mod", model)
    if sync or not isinstance(ddp, DistributedDataParallel):
        return contextlib.nullcontext()
    return ddp.no_sync()


def train_one_epoch(model: torch.nn.Module, loader, optimizer: torch.optim.Optimizer,
                    scaler: torch.amp.GradScaler, epoch: int, cfg, *, device: torch.device, lr: float,
                    show_progress: bool = True) -> dict[str, float]:
    """One pass over `loader` with per-iteration cosine lr, gradient accumulation and autocast.

    Args:
        model: the (possibly DDP-wrapped / compiled) MAE; called as `model(imgs, mask_ratio)`.
        loader: yields `(imgs (B, 3, H, W), bad)` from `mae_pretrain.data.FaceImages`; `bad`: B strings,
            the path of each requested image that was unreadable (and replaced), else ''.
        optimizer, scaler: AdamW and the precision's GradScaler (inactive unless fp16).
        epoch: 0-based epoch index (the lr schedule runs in fractional epochs).
        cfg: `MAEPretrainConfig` (epochs, steps_per_epoch, warmup_epochs, min_lr, accum_iter, mask_ratio,
            precision, channels_last, clip_grad, log_every).
        lr: the peak learning rate (of `common.optim.LrSchedule`'s warm-up + cosine).

    Returns:
        {'train_loss', 'lr', 'images_per_s', 'epoch_s', 'skipped_images'} averaged/summed over ranks;
        `skipped_images` counts the samples of the epoch whose image was unreadable (printed when > 0).

    Raises:
        FloatingPointError: a non-finite loss, naming the global step (iteration) it appeared at.
    """
    model.train()
    accum, n_iter = cfg.accum_iter, min(len(loader), cfg.steps_per_epoch or len(loader))
    n_used = n_iter - n_iter % accum  # an incomplete accumulation tail is dropped
    if n_used == 0:
        raise ValueError(f"an epoch of {n_iter} batches of {cfg.batch_size} holds no optimiser step at accum_iter "
                         f"{accum}: add face images or lower batch_size / accum_iter")
    lr_at = LrSchedule.from_config(cfg, n_used, lr)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    loss_sum = torch.zeros((), device=device)
    bad_step = torch.full((), -1, dtype=torch.long, device=device)
    bad_loss = torch.zeros((), device=device)
    skipped, seen, cur_lr, bad_names = 0, 0, 0.0, []
    optimizer.zero_grad(set_to_none=True)
    t0 = time.perf_counter()
    bar = progress(loader, enabled=show_progress, desc=f"epoch {epoch + 1}", total=n_used)
    for it, (imgs, bad) in enumerate(bar):
        if it >= n_used:
            break
        step = epoch * n_used + it  # global iteration, the step named by errors
        if it % accum == 0:
            cur_lr = lr_at(step)
            set_lr(optimizer, cur_lr)
        bad = [b for b in bad if b]
        skipped += len(bad)
        bad_names += bad[:max(3 - len(bad_names), 0)]
        seen += imgs.shape[0]
        imgs = imgs.to(device, non_blocking=True).contiguous(memory_format=fmt)
        last_micro = (it + 1) % accum == 0
        with _no_sync(model, last_micro):
            with autocast(device, cfg.precision):
                loss, _, _ = model(imgs, mask_ratio=cfg.mask_ratio)
            scaler.scale(loss / accum).backward()
        if last_micro:
            if cfg.clip_grad > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
        loss = loss.detach()
        loss_sum += loss
        first_bad = (bad_step < 0) & ~torch.isfinite(loss)
        bad_step = torch.where(first_bad, step, bad_step)
        bad_loss = torch.where(first_bad, loss, bad_loss)
        if (it + 1) % cfg.log_every == 0 or it + 1 == n_used:
            if bad_step.item() >= 0:  # the only host sync of the loop
                check_finite(bad_loss, int(bad_step))
    elapsed = time.perf_counter() - t0
    counts = all_reduce_sum(torch.tensor([skipped, seen], dtype=torch.float64, device=device))
    out = reduce_means({"train_loss": loss_sum.item() / max(n_used, 1)}, n_used, device)
    report_unreadable(f"epoch {epoch + 1}", int(counts[0].item()), int(counts[1].item()), bad_names, "images")
    return {**out, "lr": cur_lr, "images_per_s": counts[1].item() / max(elapsed, 1e-9), "epoch_s": elapsed,
            "skipped_images": int(counts[0].item())}


@torch.inference_mode()
def evaluate(model: torch.nn.Module, images: torch.Tensor, noise: torch.Tensor, cfg, device: torch.device,
             batch_size: int = 64) -> dict[str, float]:
    """Held-out reconstruction loss with a FIXED mask per image, so epochs compare.

    Args:
        model: the bare MAE (`common.dist.unwrap`).
        images: (N, 3, H, W) face-normalised held-out images (CPU).
        noise: (N, L) fixed masking scores, one row per image.
        cfg: `MAEPretrainConfig` (mask_ratio, precision, channels_last).

    Returns:
        {'heldout_loss': mean over images of the masked-patch loss}.
    """
    was_training = model.training
    model.eval()
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    total = torch.zeros((), dtype=torch.float64, device=device)
    for i in range(0, images.shape[0], batch_size):
        x = images[i:i + batch_size].to(device).contiguous(memory_format=fmt)
        with autocast(device, cfg.precision):
            loss, _, _ = model(x, mask_ratio=cfg.mask_ratio, noise=noise[i:i + batch_size].to(device))
        total += loss.double() * x.shape[0]  # every image has the same number of masked patches
    model.train(was_training)
    return {"heldout_loss": total.item() / max(images.shape[0], 1)}
