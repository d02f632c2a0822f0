"""The renderer's loss and metrics, shared by training and evaluation.

loss = weight_image * L1(image) + weight_region * L1(inside the avatar's eye and mouth boxes)
"""
from __future__ import annotations

import torch


def compute_losses(pred: torch.Tensor, target: torch.Tensor, region: torch.Tensor,
                   weight_image: float, weight_region: float) -> dict[str, torch.Tensor]:
    """Weighted L1 loss and its parts (batch means).

    Args:
        pred: (B, 3, H, W) renders in [0, 1].
        target: (B, 3, H, W) ground-truth images in [0, 1].
        region: (B, 1, H, W) 1 inside each sample's eye/mouth boxes, else 0.
        weight_image / weight_region: the weights of the two terms.
    Returns:
        {'loss', 'l1', 'region_l1'}: scalars; region_l1 is the mean absolute error over in-box pixels.
    """
    diff = (pred.float() - target.float()).abs()  # (B, 3, H, W)
    l1 = diff.mean()
    in_box = region.expand_as(diff)
    region_l1 = (diff * in_box).sum() / in_box.sum().clamp_min(1.0)
    return {"loss": weight_image * l1 + weight_region * region_l1, "l1": l1, "region_l1": region_l1}


@torch.no_grad()
def per_image_metrics(pred: torch.Tensor, target: torch.Tensor, region: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-sample evaluation metrics, each (B,): 'l1', 'region_l1', 'psnr' (dB, peak 1.0)."""
    diff = (pred.float() - target.float()).abs()
    in_box = region.expand_as(diff)
    mse = diff.pow(2).flatten(1).mean(1)
    return {"l1": diff.flatten(1).mean(1),
            "region_l1": (diff * in_box).flatten(1).sum(1) / in_box.flatten(1).sum(1).clamp_min(1.0),
            "psnr": -10.0 * torch.log10(mse.clamp_min(1e-10))}
