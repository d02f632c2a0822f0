"""Stage-2 training run: fine-tune the stage-1 ViT into a 16-d expression embedding on triplets.

    python train.py configs/demo/expression.yaml [key=value ...]
    torchrun --nproc_per_node 8 train.py configs/mae_train_expemb.yaml data_root=/data/fec batch_size=8
    python train.py CONFIG mode=eval pretrained=CKPT test_csv=PATH      # score a checkpoint (evaluate.py)

Writes into `output_dir`: config.yaml, run.json, metrics.jsonl, curves.png, checkpoint-last.pth /
checkpoint-best.pth (best = highest triplet accuracy on `val_csv`) and summary.json, whose `test`
holds the one score of checkpoint-best.pth on `test_csv` (taken after the last epoch). Re-running
the same command resumes from checkpoint-last.pth; a finished run exits at once.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from common.checkpoint import BEST, finished_summary, load_checkpoint, resume_run, save_run, stop_if_diverged
from common.config import to_dict
from common.device import make_scaler, seed_everything
from common.dist import DistInfo, barrier, cleanup, init_distributed, make_sampler, unwrap, wrap_ddp
from common.metrics import MetricsLogger, plot_metrics
from common.optim import LrSchedule
from common.run import prepare_run_dir, write_json
from common.seeding import SeededSamples, set_epoch
from data.loading import build_loader
from data.triplets import TripletDataset, read_triplets
from expression_finetune.config import ExpressionConfig
from expression_finetune.engine import evaluate, train_one_epoch
from expression_finetune.evaluate import describe, read_triplet_set, run_eval, score
from expression_finetune.losses import margin_tensor
from expression_finetune.models import ExpressionViT, build_expression_vit, load_pretrained
from expression_finetune.transforms import build_train_transform


def param_groups(model: ExpressionViT, weight_decay: float, layer_decay: float = 1.0) -> list[dict]:
    """Weight-decay groups (none on 1-D params, biases and pos_embed) with layer-wise lr scales:
    patch/pos/cls = layer 0, block i = layer i + 1, fc_norm/head = depth + 1 (scale 1)."""
    depth = len(model.blocks)
    groups: dict[tuple, dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_wd = p.ndim <= 1 or name.endswith(".bias") or name == "pos_embed"
        layer = (int(name.split(".")[1]) + 1 if name.startswith("blocks.") else
                 0 if name.startswith(("patch_embed", "cls_token", "pos_embed")) else depth + 1)
        g = groups.setdefault((layer, no_wd), {"params": [], "weight_decay": 0.0 if no_wd else weight_decay,
                                               "lr_scale": layer_decay ** (depth + 1 - layer)})
        g["params"].append(p)
    return list(groups.values())


def build_optimizer(model: ExpressionViT, cfg: ExpressionConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay, cfg.layer_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas))


def build_train_loader(cfg: ExpressionConfig, info: DistInfo, size: int) -> DataLoader:
    """The training loader (augmentation: `cfg.augment`, see transforms.py; per-sample seeds: common/seeding.py)."""
    root = Path(cfg.data_root)
    train = read_triplets(root / cfg.train_csv, root, cfg.format, root / cfg.url_map if cfg.url_map else None)
    tf, deterministic = build_train_transform(cfg, size)
    ds = TripletDataset(train, tf, cache=cfg.cache, margin=cfg.crop_margin, deterministic=deterministic)
    sampler = make_sampler(ds, info, shuffle=True, seed=cfg.seed, drop_last=True)
    loader = build_loader(SeededSamples(ds, cfg.seed, info.rank), batch_size=cfg.batch_size, sampler=sampler,
                          drop_last=True, num_workers=cfg.num_workers, device=info.device, generator=torch.Generator())
    if len(loader) == 0:
        raise ValueError(f"{len(ds)} training triplets is less than one batch of {cfg.batch_size}; lower batch_size")
    return loader


def build_data(cfg: ExpressionConfig, info: DistInfo, size: int):
    """Train loader, and the validation set as (distinct images, (T, 3) index, (T,) types)."""
    val = read_triplet_set(cfg, cfg.val_csv, size)
    return build_train_loader(cfg, info, size), (val.images, val.index, val.types)


def main(cfg: ExpressionConfig) -> dict:
    """Train (or resume) and return the summary dict that is also written to summary.json;
    `mode=eval` scores a checkpoint instead (`evaluate.run_eval`)."""
    if cfg.mode == "eval":
        return run_eval(cfg)
    info = init_distributed(cfg.device)
    seed_everything(cfg.seed + info.rank)
    run_dir = prepare_run_dir(cfg.output_dir, cfg, info.is_main)
    model = build_expression_vit(cfg.model, cfg.emb_dim, cfg.drop_path).to(info.device)
    optimizer, scaler = build_optimizer(model, cfg), make_scaler(info.device, cfg.precision)
    parts = {"model": model, "optimizer": optimizer, "scaler": scaler}
    ck = resume_run(run_dir, info, parts, cfg.seed)
    start, best = ck["start_epoch"], ck.get("best", {"acc": -1.0, "epoch": -1, "per_type": {}})
    if (done := finished_summary(run_dir, info, start, cfg.epochs)) is not None:
        cleanup()
        return done
    init_report = ck["init_report"] if start else load_pretrained(model, cfg.pretrained) if cfg.pretrained else None
    loader = build_train_loader(cfg, info, model.image_size)
    val_set = read_triplet_set(cfg, cfg.val_csv, model.image_size)
    test_set = read_triplet_set(cfg, cfg.test_csv, model.image_size) if cfg.test_csv else None  # read now: fail fast
    margins = margin_tensor(cfg.margins, info.device)
    ddp = wrap_ddp(model, info)
    log = MetricsLogger(run_dir, enabled=info.is_main, tensorboard=cfg.tensorboard)
    per_epoch = min(len(loader), cfg.steps_per_epoch) if cfg.steps_per_epoch > 0 else len(loader)
    lr_at = LrSchedule.from_config(cfg, per_epoch)
    t0, val = time.time(), {}
    for epoch in range(start, cfg.epochs):
        set_epoch(loader, epoch)
        stats = train_one_epoch(ddp, loader, optimizer, scaler, margins, epoch, info, cfg.precision, lr_at,
                                cfg.clip_grad, per_epoch, cfg.distance)  # the schedule's epoch length
        val = evaluate(model, val_set.images, val_set.index, val_set.types, margins, info,
                       num_workers=cfg.num_workers, precision=cfg.precision, distance=cfg.distance)
        stop_if_diverged(run_dir, epoch, unwrap(ddp), {"val/loss": val["val/loss"]})
        is_best = val["val/acc"] > best["acc"]
        if is_best:
            best = {"acc": val["val/acc"], "epoch": epoch, "per_type": val["per_type"]}
        log.write({"epoch": epoch, **stats, **{k: v for k, v in val.items() if k.startswith("val/")}})
        print(f"[train] epoch {epoch}: loss {stats['train/loss']:.4f} train acc {stats['train/acc']:.3f} "
              f"val acc {val['val/acc']:.3f} ({time.time() - t0:.0f} s)")
        save_run(run_dir, info, parts, epoch, is_best, best=best, best_metric=best["acc"], init_report=init_report,
                 config=to_dict(cfg))
    train_wall_s = round(time.time() - t0, 1)
    if not val:  # trained to the end earlier, stopped before its summary: score the last weights again
        val = evaluate(model, val_set.images, val_set.index, val_set.types, margins, info,
                       num_workers=cfg.num_workers, precision=cfg.precision, distance=cfg.distance)
    log.close()
    test = None
    if test_set is not None:  # the one test score: checkpoint-best.pth (chosen on val_csv)
        barrier()  # rank 0 has written checkpoint-best.pth
        model.load_state_dict(load_checkpoint(Path(run_dir) / BEST)["model"])
        test = {"epoch": best["epoch"], "checkpoint": str(Path(run_dir) / BEST), **score(model, test_set, cfg, info)}
        print(f"[test] epoch {best['epoch']} (best on val): {describe(test)}")
    # triplet_acc / per_type: the last epoch on val_csv; best_*: the epoch of checkpoint-best.pth
    summary = {"triplet_acc": val["val/acc"], "per_type": val["per_type"], "n_per_type": val["n_per_type"],
               "best_triplet_acc": best["acc"], "best_per_type": best["per_type"], "best_epoch": best["epoch"],
               "val_csv": str(val_set.path), "test": test,
               "val_rows_skipped": sum(val_set.skipped.values()) + val.get("val/skipped_triplets", 0),
               "epochs": cfg.epochs, "pretrained": cfg.pretrained, "init_report": init_report,
               "train_wall_s": train_wall_s}
    if info.is_main:
        plot_metrics(run_dir / "metrics.jsonl", run_dir / "curves.png")
        write_json(run_dir / "summary.json", summary)
    cleanup()
    return summary
