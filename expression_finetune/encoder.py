"""The public stage-2 loader for later stages: a frozen, differentiable expression encoder.

    enc = load_encoder("outputs/demo/expression/checkpoint-best.pth")
    x = enc.preprocess(pil_image)[None]           # or enc.preprocess(frames) for (N, 3, H, W) in [0, 1]
    feat, emb = enc(x)                            # (N, D) pooled feature (768 for ViT-B), (N, 16) unit vector

The parameters never receive gradients (requires_grad=False) and the module stays in eval mode
even under `.train()` (no drop-path); gradients do flow back to the input, so stage 3b can train a
decoder through it (expression-perceptual loss).
"""
from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from torch import nn

from common.checkpoint import clean_state_dict, load_checkpoint
from expression_finetune.models import ExpressionViT, build_expression_vit, load_official_stage2, official_stage2_keys
from expression_finetune.transforms import eval_transform, preprocess_tensor


class ExpressionEncoder(nn.Module):
    """A trained `ExpressionViT`, frozen, with its evaluation preprocessing.

    Args:
        model: the trained network (its weights are frozen in place).
        crop_margin: the face-crop margin it was trained with (`data.face_track`; None = exact boxes).
    Attributes:
        image_size: input side in pixels; feature_dim: D; emb_dim: embedding size; crop_margin.
    """

    def __init__(self, model: ExpressionViT, crop_margin: float | None = None):
        super().__init__()
        self.model, self.crop_margin = model, crop_margin
        self.image_size, self.feature_dim, self.emb_dim = model.image_size, model.feature_dim, model.emb_dim
        self._pil_transform = eval_transform(self.image_size)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True) -> ExpressionEncoder:
        """Always eval mode: a frozen encoder must not switch on drop-path inside a training model."""
        return super().train(False)

    def preprocess(self, x: Image.Image | torch.Tensor) -> torch.Tensor:
        """The deterministic eval transform (resize short side, centre crop, face-normalise).

        Args:
            x: a PIL image -> (3, S, S); or a tensor (N, 3, H, W) / (3, H, W), RGB in [0, 1] or uint8
               -> (N, 3, S, S) / (3, S, S), differentiable (for frames already decoded or rendered).
        """
        if isinstance(x, Image.Image):
            return self._pil_transform(x.convert("RGB"))
        single = x.ndim == 3
        out = preprocess_tensor(x[None] if single else x, self.image_size)
        return out[0] if single else out

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 3, S, S) preprocessed images -> ((N, D) pooled feature, (N, emb_dim) L2-normalised embedding)."""
        return self.model(x)


def load_encoder(path: str | Path, map_location: str | torch.device = "cpu") -> ExpressionEncoder:
    """Load a stage-2 checkpoint (`checkpoint-best.pth` / `-last.pth` of `python train.py`).

    The architecture is rebuilt from the config stored in the checkpoint (`model`, `emb_dim`). An official
    FreeAvatar stage-2 file (a raw ViT-B/16 state dict under `main.`, e.g. `epoch_90_acc_0.8736.pth`) loads
    too (`load_official_stage2`); its face-crop margin is unknown (None).
    """
    ck = load_checkpoint(path, map_location)
    cfg = ck.get("config")
    if (not isinstance(cfg, dict) or "model" not in cfg) and official_stage2_keys(ck) is not None:
        model, report = load_official_stage2(ck)
        if report["missing"] or report["unexpected"]:
            raise ValueError(f"{path}: an official stage-2 file that does not fit ViT-B/16: {report}")
        return ExpressionEncoder(model, None).to(map_location)
    if not isinstance(cfg, dict) or "model" not in cfg:
        raise ValueError(f"{path}: not a stage-2 checkpoint (no 'config' with the model preset); "
                         "pass the checkpoint-best.pth written by `python train.py`")
    model = build_expression_vit(cfg["model"], emb_dim=cfg.get("emb_dim", 16), drop_path=0.0)
    model.load_state_dict(clean_state_dict(ck), strict=True)
    return ExpressionEncoder(model, cfg.get("crop_margin")).to(map_location)
