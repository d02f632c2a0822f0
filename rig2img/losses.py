"""The renderer's loss and metrics, shared by training and evaluation.

loss = weight_image * L1(image) + weight_region * region term, where the region term is the L1 of
the images masked to the avatar's eye and mouth boxes, averaged either

- over the whole image ('image', the official code: `nn.L1Loss()(out * mask, tgt * mask)` in
  train_rig2img.py L24 is a mean over all B x 3 x H x W values, so the boxes' pixel share scales it), or
- over the in-box pixels only ('box': independent of the boxes' size, about 1 / share stronger).
"""
from __future__ import annotations

import torch

from common.device import at_least_fp32

REGION_NORMS = ("image", "box")


def compute_losses(pred: torch.Tensor, target: torch.Tensor, region: torch.Tensor, weight_image: float,
                   weight_region: float, region_norm: str = "image") -> dict[str, torch.Tensor]:
    """Weighted L1 loss and its parts (batch means).

    Args:
        pred: (B, 3, H, W) renders in [0, 1].
        target: (B, 3, H, W) ground-truth images in [0, 1].
        region: (B, 1, H, W) 1 inside each sample's eye/mouth boxes, else 0.
        weight_image / weight_region: the weights of the two terms.
        region_norm: 'image' (official) or 'box': what the masked L1 is averaged over.
    Returns:
        {'loss', 'l1', 'region_term', 'region_l1'}: scalars; loss = weight_image * l1 + weight_region *
        region_term; region_l1 is always the mean absolute error over in-box pixels (as in evaluation).
    """
    if region_norm not in REGION_NORMS:
        raise ValueError(f"region_norm must be one of {list(REGION_NORMS)}, got '{region_norm}'")
    diff = (at_least_fp32(pred) - at_least_fp32(target)).abs()  # (B, 3, H, W)
    l1 = diff.mean()
    in_box = region.expand_as(diff)
    in_sum = (diff * in_box).sum()
    region_l1 = in_sum / in_box.sum().clamp_min(1.0)
    region_term = region_l1 if region_norm == "box" else in_sum / diff.numel()
    return {"loss": weight_image * l1 + weight_region * region_term, "l1": l1, "region_term": region_term,
            "region_l1": region_l1}


@torch.no_grad()
def per_image_metrics(pred: torch.Tensor, target: torch.Tensor, region: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-sample evaluation metrics, each (B,): 'l1', 'region_l1', 'psnr' (dB, peak 1.0)."""
    diff = (at_least_fp32(pred) - at_least_fp32(target)).abs()
    in_box = region.expand_as(diff)
    mse = diff.pow(2).flatten(1).mean(1)
    return {"l1": diff.flatten(1).mean(1),
            "region_l1": (diff * in_box).flatten(1).sum(1) / in_box.flatten(1).sum(1).clamp_min(1.0),
            "psnr": -10.0 * torch.log10(mse.clamp_min(1e-10))}
