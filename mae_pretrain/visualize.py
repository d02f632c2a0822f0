"""Reconstruction grid: per face, original | masked | reconstruction | reconstruction + visible."""
from __future__ import annotations

from pathlib import Path

import torch
from torchvision.utils import save_image

from common.device import autocast
from data.images import denormalize


@torch.inference_mode()
def reconstruct(model: torch.nn.Module, imgs: torch.Tensor, noise: torch.Tensor, mask_ratio: float,
                precision: str = "fp32") -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted pixels for every patch and the pixel mask of the removed patches.

    With `norm_pix_loss` the prediction is in per-patch normalised units; it is mapped back with
    the target patch's own mean and variance (as the official visualisation does).

    Args:
        model: the bare MAE. imgs: (N, 3, H, W) face-normalised. noise: (N, L) fixed mask scores.

    Returns:
        recon (N, 3, H, W) in the face-normalised space of `imgs`; mask (N, 1, H, W), 1 = removed.
    """
    device = next(model.parameters()).device
    imgs = imgs.to(device).float()
    was_training = model.training
    model.eval()
    with autocast(device, precision):
        _, pred, mask = model(imgs, mask_ratio=mask_ratio, noise=noise.to(device))
    model.train(was_training)
    pred = pred.float()  # (N, L, p*p*3)
    if model.norm_pix_loss:
        target = model.patchify(imgs)  # (N, L, p*p*3)
        mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
        pred = pred * (var + 1.0e-6) ** 0.5 + mean
    mask = model.unpatchify(mask.float().unsqueeze(-1).expand_as(pred).contiguous())  # (N, 3, H, W)
    return model.unpatchify(pred), mask[:, :1]


def save_recon_grid(model: torch.nn.Module, imgs: torch.Tensor, noise: torch.Tensor, mask_ratio: float,
                    path: str | Path, precision: str = "fp32") -> Path:
    """Write a PNG with one row per face: original | masked (grey holes) | recon | recon + visible."""
    recon, mask = reconstruct(model, imgs, noise, mask_ratio, precision)
    orig = denormalize(imgs.to(recon.device).float())  # (N, 3, H, W) in [0, 1]
    recon = denormalize(recon)
    masked = orig * (1 - mask) + 0.5 * mask
    pasted = orig * (1 - mask) + recon * mask
    rows = torch.stack([orig, masked, recon, pasted], dim=1)  # (N, 4, 3, H, W)
    path = Path(path)
    save_image(rows.flatten(0, 1).cpu(), path, nrow=4, padding=2, pad_value=1.0)
    return path
