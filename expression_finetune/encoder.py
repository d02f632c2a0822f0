"""The public stage-2 loader for later stages: a frozen, differentiable expression encoder.

    enc = load_encoder("outputs/demo/expression/checkpoint-best.pth")
    x = enc.preprocess(pil_image)[None]           # or enc.preprocess(frames) for (N, 3, H, W) in [0, 1]
    feat, emb = enc(x)                            # (N, D) pooled feature (768 for ViT-B), (N, 16) unit vector

The parameters never receive gradients (requires_grad=False) and the module stays in eval mode
even under `.train()` (no drop-path); gradients do flow back to the input, so stage 3b can train a
decoder through it (expression-perceptual loss).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from common.checkpoint import clean_state_dict, load_checkpoint
from expression_finetune.models import ExpressionViT, build_expression_vit
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
        self.int8 = False  # see `quantize_int8_`
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True) -> ExpressionEncoder:
        """Always eval mode: a frozen encoder must not switch on drop-path inside a training model."""
        return super().train(False)

    def cast_(self, dtype: torch.dtype) -> ExpressionEncoder:
        """Inference only: store the weights of the linear and conv layers in `dtype` (bf16 / fp16), the
        ones autocast would otherwise recast on every call (~1.03x the encoder's throughput in bf16 on
        CPU; bit-identical outputs). Norms, position embedding, class token and embedding head stay
        fp32, so the residual stream and the outputs keep the precision they have under autocast.
        Irreversible."""
        for m in self.model.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)) and m is not self.model.head:
                m.to(dtype)
        return self

    def quantize_int8_(self, attention_dtype: torch.dtype = torch.float32) -> ExpressionEncoder:
        """CPU inference only: the transformer blocks' linear layers become dynamic int8 (int8 weights,
        activations quantized per call) and the encoder then runs in fp32 outside any autocast, except
        the attention core (q k^T, softmax, @ v), which runs in `attention_dtype`.

        On x86 with VNNI the weights are packed for PyTorch's oneDNN quantized engine (~1.15x its
        default fbgemm on ViT-B's shapes); elsewhere for the default engine. Measured on one CPU
        (AMD EPYC, AVX512-VNNI and -BF16, 2 cores): ViT-B/16 ~1.45x the bf16 encoder's throughput
        with a bf16 core; an fp32 core had been ~30% of the int8 encoder's time. Not differentiable;
        irreversible; a copy or a reload repacks the weights for the default engine (other rounding,
        the fbgemm speed): quantize a freshly loaded encoder instead. Uses
        `torch.ao.quantization.quantize_dynamic`, deprecated in favour of torchao (not a dependency
        here), its removal announced."""
        device = next(self.model.parameters()).device
        if device.type != "cpu":
            raise ValueError(f"the int8 encoder runs on CPU only (oneDNN / fbgemm kernels); this one is on {device}")
        engine = torch.backends.quantized.engine
        vnni = getattr(torch.cpu, "_is_vnni_supported", lambda: False)()  # x86 only (private PyTorch API)
        if vnni and "onednn" in torch.backends.quantized.supported_engines:
            torch.backends.quantized.engine = "onednn"  # packs the weights for oneDNN, which then runs them
        try:
            with warnings.catch_warnings():  # the API's deprecation notices (its removal is announced)
                warnings.filterwarnings("ignore", category=DeprecationWarning)
                warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor")
                torch.ao.quantization.quantize_dynamic(self.model.blocks, {nn.Linear}, dtype=torch.qint8,
                                                       inplace=True)
        finally:
            torch.backends.quantized.engine = engine
        for m in self.model.modules():
            if hasattr(m, "core_dtype"):
                m.core_dtype = None if attention_dtype == torch.float32 else attention_dtype
        self.int8 = True
        return self

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
        if self.int8:
            with torch.autocast(x.device.type, enabled=False):
                return self.model(x.float())
        return self.model(x)


def load_encoder(path: str | Path, map_location: str | torch.device = "cpu") -> ExpressionEncoder:
    """Load a stage-2 checkpoint (`checkpoint-best.pth` / `-last.pth` of `python train.py`).

    The architecture is rebuilt from the config stored in the checkpoint (`model`, `emb_dim`).
    """
    ck = load_checkpoint(path, map_location)
    cfg = ck.get("config")
    if not isinstance(cfg, dict) or "model" not in cfg:
        raise ValueError(f"{path}: not a stage-2 checkpoint (no 'config' with the model preset); "
                         "pass the checkpoint-best.pth written by `python train.py`")
    model = build_expression_vit(cfg["model"], emb_dim=cfg.get("emb_dim", 16), drop_path=0.0)
    model.load_state_dict(clean_state_dict(ck), strict=True)
    return ExpressionEncoder(model, cfg.get("crop_margin")).to(map_location)
