"""Optimiser helpers shared by the stages: weight-decay groups and a warm-up + cosine schedule."""
from __future__ import annotations

import math

import torch


def param_groups_weight_decay(model: torch.nn.Module, weight_decay: float,
                              no_decay: tuple[str, ...] = ()) -> list[dict]:
    """Two groups: decay for weight matrices; none for biases, norms (any 1-D parameter) and
    names listed in `no_decay`. Frozen parameters are left out.

    As in MAE, `cls_token`/`mask_token` (3-D) keep weight decay unless listed.
    """
    decay, skip = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or name.endswith(".bias") or name in no_decay:
            skip.append(p)
        else:
            decay.append(p)
    return [{"params": skip, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def cosine_lr(step: float, total_steps: float, warmup_steps: float, base_lr: float, min_lr: float = 0.0) -> float:
    """Linear warm-up to `base_lr`, then half-cosine decay to `min_lr` (per-iteration)."""
    if step < warmup_steps:
        return base_lr * step / max(warmup_steps, 1e-8)
    t = (step - warmup_steps) / max(total_steps - warmup_steps, 1e-8)
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))


def warm_restarts_lr(step: int, base_lr: float, min_lr: float, period: int, mult: int) -> float:
    """The lr of torch's CosineAnnealingWarmRestarts(T_0=period, T_mult=mult, eta_min=min_lr) after `step`
    scheduler steps, from the step number alone (integer arithmetic, so restarts land exactly and a resumed
    run continues the schedule): `base_lr` at steps 0, period, period * (1 + mult), ..., a half cosine down
    to `min_lr` in between. The official renderer and decoder step it once per iteration."""
    t, length = int(step), int(period)
    if mult == 1:
        t %= length
    while t >= length:  # skip whole periods: 500, 1000, 2000, ... steps
        t, length = t - length, length * mult
    return min_lr + (base_lr - min_lr) * (1.0 + math.cos(math.pi * t / length)) / 2.0


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's lr, honouring an optional per-group `lr_scale` (layer-wise decay)."""
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)


def check_finite(loss: torch.Tensor, step: int, what: str = "loss") -> None:
    """Stop the run with the step number when the loss is NaN or infinite."""
    if not torch.isfinite(loss).all():
        raise FloatingPointError(f"non-finite {what} ({loss.detach().float().cpu().tolist()}) at step {step}; "
                                 "lower the learning rate, use precision=fp32, or check the input data")
