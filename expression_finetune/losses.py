"""Symmetric triplet loss with per-type margins, and the triplet prediction accuracy.

Distance: squared euclidean distance between L2-normalised embeddings, d(x, y) = |x - y|^2 in
[0, 4] (as FECNet and the official FreeAvatar code; the margins 0.1 / 0.2 are on this scale).
Loss per triplet (a, p, n) with (a, p) the annotated similar pair:
    T(a, p, n) + T(p, a, n),   T(x, y, z) = max(0, d(x, y) - d(x, z) + margin(type))
A triplet is predicted correctly iff d(a, p) is strictly the smallest of d(a, p), d(a, n), d(p, n).
"""
from __future__ import annotations

import torch

from data.triplets import TRIPLET_TYPES

DEFAULT_MARGINS = {"ONE_CLASS_TRIPLET": 0.1, "TWO_CLASS_TRIPLET": 0.2, "THREE_CLASS_TRIPLET": 0.2}


def margin_tensor(margins: dict[str, float], device: torch.device | None = None) -> torch.Tensor:
    """(len(TRIPLET_TYPES),) margins in `TRIPLET_TYPES` order; a missing type is an error."""
    missing = [t for t in TRIPLET_TYPES if t not in margins]
    if missing:
        raise ValueError(f"margins missing for {missing}; give one per triplet type {list(TRIPLET_TYPES)}")
    return torch.tensor([float(margins[t]) for t in TRIPLET_TYPES], device=device)


def pair_distances(emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, 3, E) anchor/positive/negative embeddings -> d(a,p), d(a,n), d(p,n), each (B,)."""
    a, p, n = emb.float().unbind(1)
    return (a - p).pow(2).sum(-1), (a - n).pow(2).sum(-1), (p - n).pow(2).sum(-1)


def triplet_loss(emb: torch.Tensor, types: torch.Tensor, margins: torch.Tensor) -> torch.Tensor:
    """Mean symmetric triplet loss over the batch.

    Args:
        emb: (B, 3, E) L2-normalised embeddings in (anchor, positive, negative) order.
        types: (B,) long indices into `TRIPLET_TYPES`.
        margins: (len(TRIPLET_TYPES),) from `margin_tensor`.
    """
    d_ap, d_an, d_pn = pair_distances(emb)
    m = margins.to(emb.device)[types]  # (B,) margin of each triplet's type
    loss = (d_ap - d_an + m).clamp_min(0) + (d_ap - d_pn + m).clamp_min(0)  # T(a,p,n) + T(p,a,n)
    return loss.mean()


def triplet_correct(emb: torch.Tensor) -> torch.Tensor:
    """(B, 3, E) -> (B,) bool: the annotated pair (a, p) is strictly the closest of the three pairs."""
    d_ap, d_an, d_pn = pair_distances(emb)
    return (d_ap < d_an) & (d_ap < d_pn)


def type_counts(correct: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
    """(n_types, 2) [correct, total] per type (sums over ranks/batches add up exactly)."""
    n = len(TRIPLET_TYPES)
    total = torch.bincount(types, minlength=n)
    right = torch.bincount(types, weights=correct.double(), minlength=n)
    return torch.stack([right.double(), total.double()], dim=1)


def accuracy_from_counts(counts: torch.Tensor) -> dict:
    """`{'triplet_acc': overall, 'per_type': {type: acc or None when absent}, 'n_per_type': {...}}`."""
    counts = counts.double().cpu()
    right, total = counts[:, 0], counts[:, 1]
    overall = (right.sum() / total.sum()).item() if total.sum() > 0 else float("nan")
    per_type = {t: (right[i] / total[i]).item() if total[i] > 0 else None for i, t in enumerate(TRIPLET_TYPES)}
    return {"triplet_acc": overall, "per_type": per_type,
            "n_per_type": {t: int(total[i]) for i, t in enumerate(TRIPLET_TYPES)}}
