"""Optimiser helpers shared by the stages: weight-decay groups and the one learning-rate schedule."""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

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


SCHEDULES = ("constant", "cosine", "warm_restarts")


@dataclass(frozen=True)
class LrSchedule:
    """The learning rate of every stage as a function of the global optimiser step alone, so a run resumed at
    any step continues the same curve (the four stages build theirs with `from_config`).

    Positions are fractional epochs, `epoch + it / steps_per_epoch` for step `epoch * steps_per_epoch + it` (as
    the MAE loop computes them). A linear warm-up, lr * position / warmup_epochs, on the steps whose position is
    before `warmup_epochs` (`warmup_steps` of them: warmup_epochs * steps_per_epoch rounded up), then `kind`
    from the next step on:
    - 'constant': `lr`;
    - 'cosine': a half cosine from `lr` at position `warmup_epochs` down to `min_lr` at `epochs` (MAE's
      per-iteration schedule);
    - 'warm_restarts': torch's CosineAnnealingWarmRestarts(restart_period, restart_mult, min_lr) stepped once per
      step, counted from the first step after the warm-up.
    """
    kind: str
    lr: float
    epochs: float
    steps_per_epoch: int
    warmup_epochs: float = 0.0
    min_lr: float = 0.0
    restart_period: int = 500
    restart_mult: int = 2

    def __post_init__(self):
        if self.kind not in SCHEDULES:
            raise ValueError(f"schedule must be one of {list(SCHEDULES)}, got '{self.kind}'")
        if self.steps_per_epoch < 1:
            raise ValueError("an epoch holds no optimiser step: the training data is smaller than one batch (times "
                             "accum_iter where set); add data or lower batch_size")
        if self.warmup_epochs < 0:
            raise ValueError(f"'warmup_epochs' must be >= 0, got {self.warmup_epochs}")

    @classmethod
    def from_config(cls, cfg, steps_per_epoch: int, lr: float | None = None) -> LrSchedule:
        """From a stage config's `schedule` (cosine when it has none, as stage 1), `lr` (or the one given),
        `min_lr`, `epochs`, `warmup_epochs` and, where present, `restart_period` / `restart_mult`."""
        return cls(getattr(cfg, "schedule", "cosine"), cfg.lr if lr is None else lr, cfg.epochs, steps_per_epoch,
                   cfg.warmup_epochs, cfg.min_lr, getattr(cfg, "restart_period", 500), getattr(cfg, "restart_mult", 2))

    def position(self, step: int) -> float:
        """Fractional epochs at optimiser step `step`."""
        return step // self.steps_per_epoch + (step % self.steps_per_epoch) / self.steps_per_epoch

    @cached_property  # (the frozen dataclass's __dict__ holds it: computed once, not on every step)
    def warmup_steps(self) -> int:
        """The number of warm-up steps: those whose position is before `warmup_epochs`."""
        step = max(math.floor(self.warmup_epochs * self.steps_per_epoch) - 1, 0)
        while self.position(step) < self.warmup_epochs:
            step += 1
        return step

    def __call__(self, step: int) -> float:
        epoch = self.position(step)
        if epoch < self.warmup_epochs:
            return self.lr * epoch / self.warmup_epochs
        if self.kind == "constant":
            return self.lr
        if self.kind == "cosine":
            return cosine_lr(epoch, self.epochs, self.warmup_epochs, self.lr, self.min_lr)
        return warm_restarts_lr(step - self.warmup_steps, self.lr, self.min_lr, self.restart_period, self.restart_mult)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's lr, honouring an optional per-group `lr_scale` (layer-wise decay)."""
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)


def check_finite(loss: torch.Tensor, step: int, what: str = "loss") -> None:
    """Stop the run with the step number when the loss is NaN or infinite."""
    if not torch.isfinite(loss).all():
        raise FloatingPointError(f"non-finite {what} ({loss.detach().float().cpu().tolist()}) at step {step}; "
                                 "lower the learning rate, use precision=fp32, or check the input data")
