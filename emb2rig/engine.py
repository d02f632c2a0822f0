"""Stage-3b train and eval loops: functions of their arguments that return metric dicts.

    lr_at = LrSchedule.from_config(cfg, per_epoch)  # common.optim
    stats = train_one_epoch(model, disc, frozen, loader, opts, scalers, epoch, step0, lr_at, cfg, info)
    val = evaluate(model, disc, frozen, loader, cfg, info)

Both call the same `compute_losses`. Each sample's target avatars are drawn from a generator
seeded by (seed, epoch, rank) during training and by the seed alone during evaluation, so a
resumed run and every validation pass see the same targets.

Under DDP every rank reaches every collective on every step, whatever its batch holds (see
`discriminator_step`), and returns the same metrics: the loss terms are means over steps (training)
or samples (evaluation) of all ranks, 'own_rig_mae' is pooled over the samples of all ranks, and
'train/disc' is the mean discriminator loss of the (rank, step) pairs whose batch held an avatar
render (absent when none did).
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import torch
from torch import nn

from common.device import autocast
from common.dist import DistInfo, all_reduce_sum, reduce_means, unwrap
from common.metrics import progress
from common.optim import check_finite, set_lr
from data.images import report_unreadable
from emb2rig.data import sample_targets
from emb2rig.frozen import Frozen
from emb2rig.losses import compute_losses, discriminator_loss


def prepare_batch(batch: dict[str, torch.Tensor], n_avatars: int, per_sample: int, device: torch.device,
                  generator: torch.Generator) -> dict[str, torch.Tensor]:
    """uint8 images -> float [0, 1] on `device`, plus the sampled 'target' (B, T)."""
    out = {"image": batch["image"].to(device).float() / 255.0, "source": batch["source"].to(device),
           "rig": batch["rig"].to(device)}
    out["target"] = sample_targets(batch["source"], n_avatars, per_sample, generator).to(device)
    return out


def own_rig_mae(out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], model: nn.Module) -> tuple[float, int]:
    """(sum of per-sample MAE over own controls, count) for samples decoded for their own avatar."""
    own, T = out["own"], batch["target"].shape[1]
    if not own.any():
        return 0.0, 0
    mask = unwrap(model).control_mask(out["target"][own])
    gt = batch["rig"].repeat_interleave(T, 0)[own]
    mae = ((out["rig"][own].detach() - gt).abs() * mask).sum(1) / mask.sum(1)
    return mae.sum().item(), int(own.sum())


def sum_over_ranks(values: list[float], info: DistInfo) -> list[float]:
    """Element-wise sums of a few per-rank numbers over all ranks (as given at world size 1)."""
    if not info.distributed:
        return values
    return all_reduce_sum(torch.tensor(values, dtype=torch.float64, device=info.device)).tolist()


def discriminator_step(disc: nn.Module, frozen: Frozen, batch: dict[str, torch.Tensor], fake: torch.Tensor,
                       opt_d: torch.optim.Optimizer, scaler_d, step: int, cfg, info: DistInfo) -> float | None:
    """One discriminator update, renders at known rigs (real) vs `fake` (N, 3, S, S); returns this rank's
    loss, or None when its batch holds no avatar render.

    The step is skipped on every rank when no rank's batch holds a render. Otherwise every rank runs the
    (DDP-wrapped) discriminator forward and backward, a rank without renders on a zero loss that gives zero
    gradients, so that all join the gradient all-reduce; the losses are scaled by world size / ranks with
    renders, so the update follows the mean gradient of those ranks (plain DDP when every rank has renders).
    """
    has_real = int((batch["source"] >= 0).any())
    ranks = int(sum_over_ranks([has_real], info)[0])
    if ranks == 0:
        return None
    with autocast(info.device, cfg.precision):
        d_loss = discriminator_loss(disc, frozen, batch, fake, empty_zero=True)
    check_finite(d_loss, step, "discriminator loss")
    # DDP averages gradients over all ranks; rescaled, the update is the mean over the ranks with renders
    scaled = d_loss if ranks == info.world_size else d_loss * (info.world_size / ranks)
    opt_d.zero_grad(set_to_none=True)
    scaler_d.scale(scaled).backward()
    scaler_d.step(opt_d)
    scaler_d.update()
    return d_loss.item() if has_real else None


def train_one_epoch(model: nn.Module, disc: nn.Module | None, frozen: Frozen, loader, opts: tuple, scalers: tuple,
                    epoch: int, step0: int, lr_at: Callable[[int], float], cfg, info: DistInfo) -> dict[str, float]:
    """One epoch (or `cfg.steps_per_epoch` steps) of decoder updates, each followed by a
    discriminator update when the GAN term is on; step `step0 + i` runs at lr `lr_at(step0 + i)`.
    Returns mean weighted losses ('train/...'), the same on every rank (module docstring)."""
    opt, opt_d = opts
    scaler, scaler_d = scalers
    model.train()
    if disc is not None:
        disc.train()
    g = torch.Generator().manual_seed(cfg.seed * 100003 + epoch * 101 + info.rank)
    sums, n, mae, disc_sum = defaultdict(float), 0, [0.0, 0], [0.0, 0]  # disc: loss sum, steps with renders
    unread, names = [0.0, 0], []  # samples replaced because their image was unreadable, samples seen; their files
    n_steps = min(len(loader), cfg.steps_per_epoch) if cfg.steps_per_epoch else len(loader)
    for it, raw in enumerate(progress(loader, info.is_main, total=n_steps, desc=f"epoch {epoch}")):
        if it >= n_steps:
            break
        step = step0 + it
        set_lr(opt, lr_at(step))
        batch = prepare_batch(raw, len(frozen.names), cfg.targets_per_sample, info.device, g)
        unread[0], unread[1] = unread[0] + int(raw["skipped"].sum()), unread[1] + len(raw["skipped"])  # CPU tensor
        names += [f for f in raw["bad"] if f]
        with autocast(info.device, cfg.precision):
            losses, out = compute_losses(model, frozen, batch, cfg.loss, unwrap(disc) if disc is not None else None)
        check_finite(losses["total"], step)
        opt.zero_grad(set_to_none=True)
        scaler.scale(losses["total"]).backward()
        scaler.step(opt)
        scaler.update()
        d = None if disc is None else \
            discriminator_step(disc, frozen, batch, out["render"], opt_d, scaler_d, step, cfg, info)
        if d is not None:
            disc_sum[0], disc_sum[1] = disc_sum[0] + d, disc_sum[1] + 1
        for k, v in losses.items():
            sums[k] += v.item()
        s, c = own_rig_mae(out, batch, model)
        mae[0], mae[1] = mae[0] + s, mae[1] + c
        n += 1
    means = {f"train/{k}": v / max(n, 1) for k, v in sums.items()}
    means = reduce_means(means, n, info.device) if info.distributed else means
    d_sum, d_steps, mae_sum, mae_n, bad, seen = sum_over_ranks(disc_sum + mae + unread, info)
    report_unreadable(f"epoch {epoch}", int(bad), int(seen), names)
    stats = {"train/disc": d_sum / d_steps} if d_steps else {}
    stats.update(means)
    stats["train/own_rig_mae"] = mae_sum / max(mae_n, 1)
    stats["train/skipped_images"] = int(bad)
    stats["lr"] = opt.param_groups[0]["lr"]
    return stats


@torch.no_grad()
def evaluate(model: nn.Module, disc: nn.Module | None, frozen: Frozen, loader, cfg, info: DistInfo) -> dict[str, float]:
    """Mean weighted validation losses ('val/...', same `compute_losses`) and the MAE of decoded
    rigs on held-out avatar renders decoded for their own avatar ('val/own_rig_mae')."""
    model.eval()
    if disc is not None:
        disc.eval()
    g = torch.Generator().manual_seed(cfg.seed)
    sums, n, mae = defaultdict(float), 0, [0.0, 0]
    for raw in loader:
        batch = prepare_batch(raw, len(frozen.names), cfg.targets_per_sample, info.device, g)
        with autocast(info.device, cfg.precision):
            losses, out = compute_losses(model, frozen, batch, cfg.loss, unwrap(disc) if disc is not None else None)
        b = len(batch["source"])
        for k, v in losses.items():
            sums[k] += v.item() * b
        s, c = own_rig_mae(out, batch, model)
        mae[0], mae[1] = mae[0] + s, mae[1] + c
        n += b
    stats = {f"val/{k}": v / max(n, 1) for k, v in sums.items()}
    stats = reduce_means(stats, n, info.device) if info.distributed else stats
    mae_sum, mae_n = sum_over_ranks(mae, info)
    stats["val/own_rig_mae"] = mae_sum / max(mae_n, 1)
    return stats
