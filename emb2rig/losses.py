"""Stage-3b losses: one `compute_losses` for training and evaluation; every `weight_*` scales its term.

    losses, out = compute_losses(model, frozen, batch, cfg.loss, disc)
    losses["total"].backward()     # reaches the decoder and identity MLP only

Terms (a term whose weight is 0 is not computed and does not appear in the dict):
- perceptual: expression-perceptual loss, the frozen encoder's output of the input image vs of
  the render of the decoded rig: `perceptual` picks the vector (`embedding`: the 16-d L2-normalised
  expression embedding; `feature`: the pooled feature f^E; `unit_feature`: f^E L2-normalised, what the
  official code compares) and `emb_reduction` how its squared differences are reduced over the
  vector's dimensions (`mean`: MSE, the official `nn.MSELoss`; `sum`: squared Euclidean distance,
  `dim` times larger), then averaged over samples. Every sample and every target avatar; the only
  term that uses unlabeled actor faces.
- rig: MSE between the decoded and the known rig, over the avatar's own controls only, for
  samples whose input is that target avatar's own render (the official code averages over all
  padded outputs of the largest rig instead).
- pixel: L1 between the render of the decoded rig and the input image, same samples.
- gan: hinge generator loss of the multiscale PatchGAN on the renders (discriminator frozen here).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from common.config import check_choice
from common.device import at_least_fp32
from common.dist import unwrap
from emb2rig.discriminator import hinge_d_loss, hinge_g_loss
from emb2rig.frozen import Frozen
from emb2rig.models import Emb2Rig

PERCEPTUAL = ("embedding", "feature", "unit_feature")


@dataclass
class LossConfig:
    """Loss weights and the perceptual distance (the weights default to the official values; `perceptual`
    defaults to 'embedding' (ours), the paper config sets the official 'unit_feature').

    Args:
        weight_perceptual / weight_rig / weight_pixel / weight_gan: term scales (0 removes a term);
            official weight_emb 0.2, weight_rig 10, weight_img 1, weight_D 0.
        perceptual: 'embedding' (16-d expression embedding), 'feature' (pooled encoder feature f^E) or
            'unit_feature' (f^E L2-normalised, as the official code).
        emb_reduction: 'mean' (MSE over the vector's dimensions, official) or 'sum' (squared distance).
    """
    weight_perceptual: float = 0.2
    weight_rig: float = 10.0
    weight_pixel: float = 1.0
    weight_gan: float = 0.0
    perceptual: str = "embedding"
    emb_reduction: str = "mean"

    def __post_init__(self):
        check_choice("loss.perceptual", self.perceptual, PERCEPTUAL)
        check_choice("loss.emb_reduction", self.emb_reduction, ("mean", "sum"))
        for k in ("weight_perceptual", "weight_rig", "weight_pixel", "weight_gan"):
            if getattr(self, k) < 0:
                raise ValueError(f"'loss.{k}' must be >= 0, got {getattr(self, k)}")


@contextlib.contextmanager
def no_param_grad(module: nn.Module | None):
    """Temporarily set requires_grad=False on a module's parameters (the discriminator in the G step)."""
    params = [p for p in module.parameters() if p.requires_grad] if module is not None else []
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def perceptual_distance(f_out: torch.Tensor, e_out: torch.Tensor, f_in: torch.Tensor, e_in: torch.Tensor,
                        cfg: LossConfig) -> torch.Tensor:
    """Mean over samples of the squared difference of the render's and the input's vectors (pooled
    features f (N, D), embeddings e (N, 16)), reduced over the vector per `cfg.emb_reduction`."""
    if cfg.perceptual == "embedding":
        a, b = at_least_fp32(e_out), at_least_fp32(e_in)
    elif cfg.perceptual == "feature":
        a, b = at_least_fp32(f_out), at_least_fp32(f_in)
    else:  # unit_feature
        a, b = F.normalize(at_least_fp32(f_out), dim=1), F.normalize(at_least_fp32(f_in), dim=1)
    sq = (a - b) ** 2  # (N, dim)
    return (sq.sum(1) if cfg.emb_reduction == "sum" else sq.mean(1)).mean()


def compute_losses(model: Emb2Rig, frozen: Frozen, batch: dict[str, torch.Tensor], cfg: LossConfig,
                   disc: nn.Module | None = None) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Weighted loss terms + 'total' for one batch, and the tensors the caller may want to log.

    Args:
        model: Emb2Rig (train or eval mode set by the caller).
        frozen: the frozen encoder and renderer.
        batch: 'image' (B, 3, S, S) in [0, 1]; 'source' (B,) long, -1 for an actor face (a face
            crop), k for a whole render of avatar k; 'rig' (B, max_n) known rig (zeros for faces); 'target' (B, T) long
            avatar indices each sample is decoded for.
        cfg: LossConfig.
        disc: the discriminator (needed when weight_gan > 0); its parameters get no gradient here.
    Returns:
        losses: {'perceptual', 'rig', 'pixel', 'gan' (those with weight > 0), 'total'}, weighted.
        out: 'rig' (B*T, max_n) decoded rigs, 'target' (B*T,), 'own' (B*T,) bool, 'render' (B*T, 3, S, S) or None.
    """
    img, source, target = batch["image"], batch["source"], batch["target"]
    B, T = target.shape
    with torch.no_grad():  # the input side has nothing to train
        feat, emb = frozen.encode(img, source)  # (B, D), (B, 16); renders cropped to their face box
    rep = lambda x: x.repeat_interleave(T, dim=0)  # (B, ...) -> (B*T, ...), sample-major like target.reshape(-1)
    tgt = target.reshape(-1)  # (B*T,)
    own = rep(source) == tgt  # input is the target avatar's own render: rig and pixel supervision
    rig = model(rep(feat).float(), tgt)  # (B*T, max_n), zero past each avatar's controls
    losses: dict[str, torch.Tensor] = {}

    if cfg.weight_rig > 0:
        mask = unwrap(model).control_mask(tgt[own])  # (n_own, max_n)
        err = ((rig[own] - rep(batch["rig"])[own]) ** 2 * mask).sum(1) / mask.sum(1).clamp_min(1)
        losses["rig"] = cfg.weight_rig * (err.mean() if own.any() else rig.sum() * 0)
    render = None
    if cfg.weight_perceptual > 0 or cfg.weight_pixel > 0 or cfg.weight_gan > 0:
        render = frozen.render(rig, tgt)  # (B*T, 3, S, S), differentiable w.r.t. rig
    if cfg.weight_perceptual > 0:
        f_out, e_out = frozen.encode(render, tgt)
        losses["perceptual"] = cfg.weight_perceptual * perceptual_distance(f_out, e_out, rep(feat), rep(emb), cfg)
    if cfg.weight_pixel > 0:
        l1 = (at_least_fp32(render[own]) - at_least_fp32(rep(img)[own])).abs().mean() if own.any() \
            else render.sum() * 0
        losses["pixel"] = cfg.weight_pixel * l1
    if cfg.weight_gan > 0:
        if disc is None:
            raise ValueError("loss.weight_gan > 0 needs a discriminator; pass disc=...")
        with no_param_grad(disc):
            losses["gan"] = cfg.weight_gan * hinge_g_loss(disc(render))
    if not losses:
        raise ValueError("every loss weight is 0: nothing would train the decoder; set loss.weight_* > 0")
    losses["total"] = sum(losses.values())
    return losses, {"rig": rig, "target": tgt, "own": own, "render": render}


def discriminator_loss(disc: nn.Module, frozen: Frozen, batch: dict[str, torch.Tensor],
                       fake: torch.Tensor, empty_zero: bool = False) -> torch.Tensor | None:
    """Hinge loss of the discriminator: renders at known avatar rigs (real) vs at decoded rigs (fake).

    Args:
        fake: (N, 3, S, S) renders of decoded rigs (detached here).
        empty_zero: for a batch without avatar renders, return a zero that still runs `disc` on `fake`, so that
            its backward gives every discriminator parameter a zero gradient (a DDP rank then joins the
            gradient all-reduce of the ranks that have renders).
    Returns: the loss; for a batch without avatar renders None, or that zero with `empty_zero`.
    """
    has_rig = batch["source"] >= 0
    if not has_rig.any():
        return sum(o.sum() for o in disc(fake.detach())) * 0.0 if empty_zero else None
    with torch.no_grad():
        real = frozen.render(batch["rig"][has_rig], batch["source"][has_rig])  # (n, 3, S, S)
    return hinge_d_loss(disc(real), disc(fake.detach()))
