"""Stage-2 loops: one training epoch, image embedding, and triplet evaluation.

Train and eval score triplets with the same `compute_losses`; evaluation embeds each distinct
image once (sharded over ranks, summed back) and then scores every triplet from the table.
Unreadable images: training counts the replaced triplets ('train/skipped_triplets'), evaluation
leaves out the triplets that use one ('val/skipped_triplets').
"""
from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch.utils.data import DataLoader, Dataset

from common.device import autocast
from common.dist import DistInfo, all_reduce_sum, reduce_means
from common.metrics import progress
from common.optim import check_finite, set_lr
from data.images import report_unreadable
from data.triplets import TRIPLET_TYPES
from expression_finetune.losses import accuracy_from_counts, triplet_correct, triplet_loss, type_counts


def compute_losses(emb: torch.Tensor, types: torch.Tensor, margins: torch.Tensor,
                   distance: str = "euclidean") -> dict[str, torch.Tensor]:
    """(B, 3, E) embeddings + (B,) type indices -> {'loss': scalar, 'correct': (B,) bool}."""
    return {"loss": triplet_loss(emb, types, margins, distance), "correct": triplet_correct(emb.detach())}


def train_one_epoch(model: torch.nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
                    scaler: torch.amp.GradScaler, margins: torch.Tensor, epoch: int, info: DistInfo,
                    precision: str, lr_at: Callable[[int], float], clip_grad: float | None = None,
                    max_steps: int = 0, distance: str = "euclidean") -> dict:
    """One pass over `loader` (at most `max_steps` steps when > 0); the lr is set per step from
    `lr_at(global step)` (`common.optim.LrSchedule`); `distance` of the triplet loss ('euclidean' | 'squared').

    Returns {'train/loss', 'train/acc', 'lr', 'train/imgs_per_s', 'train/data_frac'} (rank-averaged) and
    'train/skipped_triplets' (summed over ranks): the triplets with an unreadable image, each replaced by
    the next readable one (`data.triplets.TripletDataset`).
    """
    model.train()
    dev = info.device
    n_steps = min(len(loader), max_steps) if max_steps > 0 else len(loader)
    tot_loss, counts, seen, data_t = 0.0, torch.zeros(len(TRIPLET_TYPES), 2, dtype=torch.float64), 0, 0.0
    t0 = t_last = time.time()
    lr, skipped, bad_names = 0.0, 0, []
    for i, (imgs, types, bad) in enumerate(progress(loader, info.is_main, desc=f"epoch {epoch}", leave=False,
                                               total=n_steps)):
        if i >= n_steps:
            break
        data_t += time.time() - t_last
        lr = lr_at(epoch * n_steps + i)
        set_lr(optimizer, lr)
        imgs = imgs.to(dev, non_blocking=True)  # (B, 3, C, H, W)
        types = types.to(dev, non_blocking=True)
        B = imgs.shape[0]
        with autocast(dev, precision):
            _, emb = model(imgs.flatten(0, 1))  # (3B, C, H, W) -> (3B, E)
        out = compute_losses(emb.view(B, 3, -1), types, margins, distance)  # loss in fp32
        check_finite(out["loss"], epoch * n_steps + i)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(out["loss"]).backward()
        if clip_grad:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
        scaler.step(optimizer)
        scaler.update()
        bad = [b for b in bad if b]  # B strings: the unreadable image of each replaced triplet, else ''
        skipped += len(bad)
        bad_names += bad[:max(3 - len(bad_names), 0)]
        tot_loss += out["loss"].item() * B
        counts += type_counts(out["correct"].cpu(), types.cpu())
        seen += B
        t_last = time.time()
    elapsed = max(time.time() - t0, 1e-9)
    acc = accuracy_from_counts(counts)["triplet_acc"]
    stats = reduce_means({"train/loss": tot_loss / max(seen, 1), "train/acc": acc}, seen, dev)
    n_bad, n_all = all_reduce_sum(torch.tensor([skipped, seen], dtype=torch.float64, device=dev)).tolist()
    report_unreadable(f"epoch {epoch}", int(n_bad), int(n_all), bad_names, "training triplets")
    return {**stats, "lr": lr, "train/imgs_per_s": 3 * seen * info.world_size / elapsed,
            "train/data_frac": data_t / elapsed, "train/skipped_triplets": int(n_bad)}


@torch.no_grad()
def embed_images(model: torch.nn.Module, dataset: Dataset, info: DistInfo, batch_size: int = 256,
                 num_workers: int = 0, precision: str = "fp32", features: bool = False):
    """Embed every item of an image dataset, sharded over ranks. Items: (C, H, W) tensors, or
    (tensor, bad) pairs (`data.triplets.HeldOutImages`; see `embed_checked` for the unreadable ones).

    Returns (N, E) embeddings on the CPU, identical on every rank; with `features=True` also the
    (N, D) pooled features.
    """
    emb, feat, _, _ = embed_checked(model, dataset, info, batch_size, num_workers, precision, features)
    return (emb, feat) if features else emb


@torch.no_grad()
def embed_checked(model: torch.nn.Module, dataset: Dataset, info: DistInfo, batch_size: int = 256,
                  num_workers: int = 0, precision: str = "fp32", features: bool = False):
    """`embed_images` that also says which items were unreadable.

    Returns (emb (N, E), feat (N, D) or None, bad (N,) bool on every rank, this rank's unreadable files).
    """
    model.eval()
    idx = list(range(info.rank, len(dataset), info.world_size))  # this rank's shard, no padding
    loader = DataLoader(torch.utils.data.Subset(dataset, idx), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers)
    embs, feats, flags, names = [], [], [], []
    for x in loader:
        if isinstance(x, (list, tuple)):  # (images, B strings: '' or the unreadable file)
            x, bad = x
            flags += [float(bool(b)) for b in bad]
            names += [b for b in bad if b]
        with autocast(info.device, precision):
            f, e = model(x.to(info.device, non_blocking=True))
        embs.append(e.float())
        if features:
            feats.append(f.float())
    rows = torch.tensor(idx, dtype=torch.long, device=info.device)

    def gather(parts: list[torch.Tensor], dim: int) -> torch.Tensor:
        full = torch.zeros(len(dataset), dim, device=info.device)
        if parts:
            full[rows] = torch.cat(parts)
        return all_reduce_sum(full).cpu()  # each row is filled by exactly one rank

    emb = gather(embs, model.emb_dim)
    feat = gather(feats, model.feature_dim) if features else None
    bad = gather([torch.tensor(flags, device=info.device)[:, None]] if flags else [], 1)[:, 0] > 0  # (N,)
    return emb, feat, bad, names


def evaluate(model: torch.nn.Module, images: Dataset, index: torch.Tensor, types: torch.Tensor,
             margins: torch.Tensor, info: DistInfo, batch_size: int = 256, num_workers: int = 0,
             precision: str = "fp32", distance: str = "euclidean") -> dict:
    """Triplet accuracy (overall and per type) and loss on a held-out set.

    Args:
        model: the `ExpressionViT` (unwrapped).
        images: distinct images of the set (see `data.triplets.unique_images`), eval transform.
        index: (T, 3) rows into `images` (anchor, positive, negative).
        types: (T,) type indices.
    Returns {'val/loss', 'val/acc', 'val/acc_<TYPE>' for the types present, 'per_type', 'n_per_type',
    'val/skipped_triplets'}: the triplets that use an unreadable image are left out of the score.
    """
    emb, _, bad, names = embed_checked(model, images, info, batch_size, num_workers, precision)  # (N, E), (N,)
    left_out = bad[index].any(1)  # (T,)
    n_bad = int(left_out.sum())
    if n_bad:
        report_unreadable("held-out set", n_bad, len(types), names, "triplets", "are left out of the score")
        if n_bad == len(types):
            raise RuntimeError(f"every held-out triplet uses an unreadable image (e.g. {names[:3]}); fix the files")
        index, types = index[~left_out], types[~left_out]
    trip = emb[index]  # (T, 3, E)
    out = compute_losses(trip, types, margins.cpu(), distance)
    acc = accuracy_from_counts(type_counts(out["correct"], types))
    stats = {"val/loss": out["loss"].item(), "val/acc": acc["triplet_acc"], "val/skipped_triplets": n_bad}
    stats.update({f"val/acc_{t}": a for t, a in acc["per_type"].items() if a is not None})
    return {**stats, "per_type": acc["per_type"], "n_per_type": acc["n_per_type"]}
