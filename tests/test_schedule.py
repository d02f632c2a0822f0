"""The one learning-rate schedule of all four stages (`common.optim.LrSchedule`)."""
from __future__ import annotations

import math

import pytest

from animate.config import Emb2RigCommand
from common.config import load_config
from common.optim import LrSchedule
from expression_finetune.config import ExpressionConfig
from mae_pretrain.config import MAEPretrainConfig
from rig2img.config import Rig2ImgConfig


def mae_official(epoch: float, epochs: float, warmup: float, lr: float, min_lr: float) -> float:
    """MAE's per-iteration rule (util/lr_sched.py), written out as its paper states it."""
    if epoch < warmup:
        return lr * epoch / warmup
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * (epoch - warmup) / (epochs - warmup)))


@pytest.mark.parametrize("epochs,warmup,n", [(16, 1, 50), (6, 0.3, 200), (3, 0.3, 7), (800, 40, 13)])
def test_cosine_is_maes_rule_at_fractional_epochs(epochs, warmup, n):
    schedule = LrSchedule("cosine", 1e-3, epochs, n, warmup, 1e-5)
    for step in range(0, epochs * n, max(epochs * n // 500, 1)):
        assert schedule(step) == pytest.approx(mae_official(step // n + step % n / n, epochs, warmup, 1e-3, 1e-5),
                                               rel=1e-12, abs=1e-18), step
    assert schedule(epochs * n) == pytest.approx(1e-5)  # the floor at the end of the run


@pytest.mark.parametrize("kind", ["constant", "cosine", "warm_restarts"])
def test_warm_up_ramps_every_kind_then_hands_over(kind):
    schedule = LrSchedule(kind, 2.0, 10, 7, warmup_epochs=0.3, min_lr=0.0, restart_period=4, restart_mult=2)
    assert schedule.warmup_steps == 3  # steps 0, 1, 2 lie before 0.3 epochs (2.1 steps)
    ramp = [schedule(s) for s in range(3)]
    assert ramp[0] == 0.0 and ramp == sorted(ramp) and ramp[-1] < 2.0
    assert ramp[1] == pytest.approx(2.0 * (1 / 7) / 0.3)
    assert schedule(3) == pytest.approx(2.0 if kind != "cosine" else mae_official(3 / 7, 10, 0.3, 2.0, 0.0))
    if kind == "warm_restarts":  # restarts counted from the end of the warm-up: periods of 4, 8, ...
        assert schedule(3 + 4) == 2.0 and schedule(3 + 12) == 2.0 and schedule(3 + 3) < 0.3


def test_a_fractional_warm_up_rounds_up_and_restarts_count_after_it():
    """warmup_epochs * steps_per_epoch = 2.4: steps 0, 1, 2 lie before it; the warm restarts' peaks come at
    3, 3 + period, ...; without a warm-up the first step runs at the full rate."""
    schedule = LrSchedule("warm_restarts", 1.0, 10, 100, warmup_epochs=0.024, restart_period=5, restart_mult=1)
    assert schedule.warmup_steps == 3 and schedule(2) == pytest.approx(0.02 / 0.024)
    assert [schedule(s) for s in (3, 8, 13)] == [1.0, 1.0, 1.0] and schedule(7) < 0.1
    assert LrSchedule("warm_restarts", 1e-5, 63, 500, 0.0, 1e-6)(0) == 1e-5


def test_bad_schedules_are_refused():
    with pytest.raises(ValueError, match="schedule must be one of"):
        LrSchedule("linear", 1.0, 1, 10)
    with pytest.raises(ValueError, match="smaller than one batch"):
        LrSchedule("cosine", 1.0, 1, 0)
    with pytest.raises(ValueError, match="'warmup_epochs' must be >= 0"):
        LrSchedule("cosine", 1.0, 1, 10, warmup_epochs=-1)


@pytest.mark.parametrize("cls,path,kind", [
    (MAEPretrainConfig, "configs/mae_pretrain.yaml", "cosine"),
    (MAEPretrainConfig, "configs/demo/mae_pretrain.yaml", "cosine"),
    (ExpressionConfig, "configs/mae_train_expemb.yaml", "constant"),
    (ExpressionConfig, "configs/demo/expression.yaml", "cosine"),
    (Rig2ImgConfig, "configs/configs_rig2img.yaml", "warm_restarts"),
    (Rig2ImgConfig, "configs/demo/rig2img.yaml", "cosine"),
    (Emb2RigCommand, "configs/configs_emb2rig_multi.yaml", "warm_restarts"),
    (Emb2RigCommand, "configs/demo/emb2rig.yaml", "cosine"),
])
def test_every_stage_config_builds_its_schedule(cls, path, kind):
    cfg = load_config(cls, [path])
    schedule = LrSchedule.from_config(cfg, 100, lr=0.5)
    assert (schedule.kind, schedule.lr, schedule.epochs) == (kind, 0.5, cfg.epochs)
    assert schedule.warmup_steps == sum(schedule.position(s) < cfg.warmup_epochs for s in range(10_000))
    if path.startswith("configs/conf") or path == "configs/mae_train_expemb.yaml":
        assert schedule.warmup_steps == 0  # the official renderer, decoder and stage 2 warm up not at all
