"""Training and evaluation loops of the neural renderer; functions of their arguments."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from common.device import autocast
from common.dist import DistInfo, all_reduce_sum, reduce_means, unwrap
from common.metrics import progress
from common.optim import check_finite, set_lr
from data.avatars import AvatarRigDataset, keep_batch
from data.images import report_unreadable
from data.loading import build_loader
from rig2img.losses import compute_losses, per_image_metrics


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Move a batch's tensors to `device` (the file names in 'bad' stay behind); uint8 images become float in [0, 1]."""
    out = {k: v.to(device, non_blocking=True) for k, v in batch.items() if isinstance(v, torch.Tensor)}
    out["image"] = out["image"].float().div_(255.0)  # (B, 3, H, W) uint8 -> [0, 1]
    return out


def train_one_epoch(model: nn.Module, loader, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                    regions: torch.Tensor, epoch: int, cfg, info: DistInfo,
                    lr_at: Callable[[int], float]) -> dict[str, float]:
    """One pass over `loader`; returns rank-averaged means of the loss terms ('train/<term>'), the last lr
    and 'train/skipped_images' (summed over ranks): the rows of the epoch whose image was unreadable
    (each repeats a readable row of its avatar, `data.avatars.AvatarRigDataset`).

    Args:
        model: the renderer network (maybe DDP-wrapped), called as model(rig, mask, avatar).
        loader: yields dicts with 'rig', 'mask', 'avatar', 'image' (uint8), 'skipped' (bool), 'bad' (file names).
        optimizer / scaler: Adam and the (fp16-only) GradScaler.
        regions: (A, 1, H, W) eye/mouth box masks per avatar, on the device.
        epoch: epoch index.
        cfg: Rig2ImgConfig (precision, weight_image, weight_region, region_norm).
        info: DistInfo (device, rank).
        lr_at: global step -> learning rate (`common.optim.LrSchedule`).
    """
    model.train()
    sums: dict[str, float] = {}
    n_seen, n_steps, lr, n_skipped, names = 0, len(loader), 0.0, 0, []
    for it, batch in enumerate(progress(loader, info.is_main, desc=f"epoch {epoch}", leave=False)):
        lr = lr_at(epoch * n_steps + it)
        set_lr(optimizer, lr)
        n_skipped += int(batch["skipped"].sum())  # on the CPU: no device sync
        names += [f for f in batch["bad"] if f]
        b = to_device(batch, info.device)
        with autocast(info.device, cfg.precision):
            pred = model(b["rig"], b["mask"], b["avatar"])  # (B, 3, H, W)
        losses = compute_losses(pred, b["image"], regions[b["avatar"]], cfg.weight_image, cfg.weight_region,
                                cfg.region_norm)
        check_finite(losses["loss"], epoch * n_steps + it)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(losses["loss"]).backward()
        scaler.step(optimizer)
        scaler.update()
        bs = b["rig"].shape[0]
        for k, v in losses.items():
            sums[k] = sums.get(k, 0.0) + v.item() * bs
        n_seen += bs
    means = reduce_means({k: v / max(n_seen, 1) for k, v in sums.items()}, n_seen, info.device)
    n_bad, n_all = all_reduce_sum(torch.tensor([n_skipped, n_seen], dtype=torch.float64, device=info.device)).tolist()
    report_unreadable(f"epoch {epoch}", int(n_bad), int(n_all), names, "rows")
    return {**{f"train/{k}": v for k, v in means.items()}, "lr": lr, "train/skipped_images": int(n_bad)}


@torch.no_grad()
def evaluate(model: nn.Module, dataset: AvatarRigDataset, regions: torch.Tensor, cfg, info: DistInfo,
             batch_size: int = 256) -> dict[str, float]:
    """Held-out L1, region L1 and PSNR per avatar (`val/<name>/<metric>`) and their means over avatars.

    Every rank evaluates a disjoint shard, decoded by `cfg.num_workers` DataLoader workers (none when the set is
    cached; their own generator, so evaluating leaves the global RNG as it was); per-avatar sums are
    all-reduced, so results are exact. Rows whose image was unreadable (`skipped`, a repeat of another row) are
    left out.
    """
    net = unwrap(model).eval()
    names = [a.name for a in dataset.avatars]
    keys = ("l1", "region_l1", "psnr")
    sums = torch.zeros(len(names), len(keys) + 1, dtype=torch.float64, device=info.device)  # + count
    shard = list(range(info.rank, len(dataset), info.world_size))
    workers = 0 if dataset.cached else cfg.num_workers  # decoded already: workers would only add their start-up
    loader = build_loader(dataset, batch_size=batch_size, sampler=shard, collate_fn=keep_batch, num_workers=workers,
                          device=info.device, persistent_workers=False, generator=torch.Generator())
    for batch in loader:
        b = to_device(batch, info.device)
        with autocast(info.device, cfg.precision):
            pred = net(b["rig"], b["mask"], b["avatar"])
        m = per_image_metrics(pred, b["image"], regions[b["avatar"]])
        vals = torch.stack([m[k].double() for k in keys] + [torch.ones_like(m["l1"], dtype=torch.float64)], 1)
        sums.index_add_(0, b["avatar"], vals.masked_fill(b["skipped"][:, None], 0.0))  # unreadable rows: 0
    all_reduce_sum(sums)
    out = {}
    for a, name in enumerate(names):
        for j, k in enumerate(keys):
            out[f"val/{name}/{k}"] = (sums[a, j] / sums[a, -1].clamp_min(1)).item()
    for k in keys:
        out[f"val/{k}"] = float(np.mean([out[f"val/{n}/{k}"] for n in names]))
    out["val/min_psnr"] = min(out[f"val/{n}/psnr"] for n in names)
    return out


@torch.no_grad()
def save_grid(model: nn.Module, dataset: AvatarRigDataset, path: str | Path, n: int, precision: str,
              device: torch.device) -> Path:
    """PNG: per avatar two rows, ground truth above the render, for its first `n` held-out samples."""
    net = unwrap(model).eval()
    rows = []
    for a in range(len(dataset.avatars)):
        sel = dataset.indices_of(a)[:n].tolist()
        b = to_device(dataset.__getitems__(sel), device)
        with autocast(device, precision):
            pred = net(b["rig"], b["mask"], b["avatar"]).float()
        pad = n - len(sel)
        for imgs in (b["image"], pred):  # (k, 3, H, W) -> (H, k*W, 3), padded to n columns
            imgs = torch.cat([imgs, imgs.new_zeros(pad, *imgs.shape[1:])]) if pad else imgs
            rows.append(imgs.permute(2, 0, 3, 1).flatten(1, 2).cpu())
    grid = (torch.cat(rows, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    Image.fromarray(grid).save(path)
    return Path(path)
