"""Symmetric triplet loss with per-type margins, and the triplet prediction accuracy.

Loss per triplet (a, p, n) with (a, p) the annotated similar pair, as the official
`exp_emb_code/train.py` `compute_loss` (L23-43):
    T(a, p, n) + T(p, a, n),   T(x, y, z) = max(0, d(x, y) - d(x, z) + margin(type))
averaged over the batch (the official sums over the batch and divides by its size: the same mean).
Margins: 0.1 for ONE_CLASS_TRIPLET, 0.2 for TWO/THREE_CLASS (the official `criterion1` / `criterion2`).

Distance between the L2-normalised embeddings, `distance=`:
  * 'euclidean' (the official): `nn.TripletMarginLoss`'s default, |x - y + eps|_2 with eps 1e-6
    (torch's `pairwise_distance`), in [0, 2]. T(p, a, n) uses d(p, a), which differs from d(a, p) by
    the eps only, as in the official second call `criterion(pos, anc, neg)`.
  * 'squared': |x - y|^2 in [0, 4] (FECNet's form; kept for the demo, whose settings were measured with it).

A triplet is predicted correctly iff d(a, n) > d(a, p) and d(p, n) > d(a, p) (official
`exp_emb_code/utils/metrics.py` `triplet_prediction_accuracy` L7-47), with exact distances: an exact
tie counts as wrong (the official distances carry the 1e-6 eps, which can break a tie either way).
Both distances order pairs the same way, so the accuracy does not depend on `distance`.

Losses run in float32 or wider: bf16/fp16 embeddings are promoted, float64 stays float64.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from data.triplets import TRIPLET_TYPES

DEFAULT_MARGINS = {"ONE_CLASS_TRIPLET": 0.1, "TWO_CLASS_TRIPLET": 0.2, "THREE_CLASS_TRIPLET": 0.2}
DISTANCES = ("euclidean", "squared")
EPS = 1e-6  # nn.TripletMarginLoss / nn.PairwiseDistance default


def margin_tensor(margins: dict[str, float], device: torch.device | None = None) -> torch.Tensor:
    """(len(TRIPLET_TYPES),) margins in `TRIPLET_TYPES` order; a missing type is an error."""
    missing = [t for t in TRIPLET_TYPES if t not in margins]
    if missing:
        raise ValueError(f"margins missing for {missing}; give one per triplet type {list(TRIPLET_TYPES)}")
    return torch.tensor([float(margins[t]) for t in TRIPLET_TYPES], device=device)


def _wide(x: torch.Tensor) -> torch.Tensor:
    """At least float32, never narrower than the input (float64 stays float64)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def distance(x: torch.Tensor, y: torch.Tensor, kind: str = "euclidean") -> torch.Tensor:
    """(B, E), (B, E) -> (B,) distances; `kind` is one of `DISTANCES` (see the module docstring)."""
    if kind == "euclidean":
        return F.pairwise_distance(x, y, p=2.0, eps=EPS)
    if kind == "squared":
        return (x - y).pow(2).sum(-1)
    raise ValueError(f"distance must be one of {list(DISTANCES)}, got '{kind}'")


def pair_distances(emb: torch.Tensor, kind: str = "euclidean") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, 3, E) anchor/positive/negative embeddings -> d(a,p), d(a,n), d(p,n), each (B,)."""
    a, p, n = _wide(emb).unbind(1)
    return distance(a, p, kind), distance(a, n, kind), distance(p, n, kind)


def triplet_loss(emb: torch.Tensor, types: torch.Tensor, margins: torch.Tensor,
                 kind: str = "euclidean") -> torch.Tensor:
    """Mean symmetric triplet loss over the batch.

    Args:
        emb: (B, 3, E) L2-normalised embeddings in (anchor, positive, negative) order.
        types: (B,) long indices into `TRIPLET_TYPES`.
        margins: (len(TRIPLET_TYPES),) from `margin_tensor`.
        kind: 'euclidean' (official) or 'squared'.
    Returns a scalar in the dtype of `emb` promoted to at least float32.
    """
    a, p, n = _wide(emb).unbind(1)  # each (B, E)
    m = margins.to(a.device, a.dtype)[types]  # (B,) margin of each triplet's type
    d_ap = distance(a, p, kind)
    d_pa = d_ap if kind == "squared" else distance(p, a, kind)  # differ by eps only (euclidean)
    t_apn = (d_ap - distance(a, n, kind) + m).clamp_min(0)  # T(a, p, n)
    t_pan = (d_pa - distance(p, n, kind) + m).clamp_min(0)  # T(p, a, n)
    return (t_apn + t_pan).mean()


def triplet_correct(emb: torch.Tensor) -> torch.Tensor:
    """(B, 3, E) -> (B,) bool: d(a,n) > d(a,p) and d(p,n) > d(a,p) (the annotated pair is strictly closest).

    Compared as squared distances: the same order as the exact Euclidean ones, with no eps."""
    d_ap, d_an, d_pn = pair_distances(emb, "squared")
    return (d_an > d_ap) & (d_pn > d_ap)


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
