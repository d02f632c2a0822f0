"""Inference-only numerics: how animate changes the frozen networks once no gradient passes any more.

    prepare(frozen, "bf16")            # in place, once: BatchNorm folded, weights in bf16, inference attention
    prepare(frozen, "bf16", "int8")    # the same renderer; a dynamic int8 encoder (CPU only)
    encoder = prepare_encoder(load_encoder(path), "bf16", "int8")   # one network alone

Everything here is for speed and lives only here: the model classes of stages 1-3 stay the paper's
models, and training and evaluation never run this code. Measured on 2 CPU cores at paper size
(ViT-B/16 224 px, a 256 px renderer, 3 avatars; `scripts/bench_test_mode.py`, history in
`docs/test_mode_speed.md`):
- the renderer's BatchNorm folded into its transposed convs: 35 -> 23 ms per frame, the same images;
- linear and conv weights stored in bf16 (what autocast recasts on every call): ~1.03x, bit-identical;
- the attention softmax written in bf16 (the bf16 kernel accumulates in fp32 anyway): the attention
  core 1.18x faster;
- int8 (opt-in): the transformer blocks' linear layers become dynamic int8 (weights packed for
  oneDNN on x86 with VNNI), the attention core runs in the autocast dtype, the rest in fp32:
  ~1.45x the bf16 encoder; not the same outputs (`scripts/compare_int8.py` measures the change).
"""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from animate.config import QUANTIZE
from common.device import autocast_dtype
from expression_finetune import ExpressionEncoder
from mae_pretrain.models_mae import Attention

PREPARED = "animate_prepared_for"  # attribute marking a network `prepare` changed (its setting)


class InferenceAttention(nn.Module):
    """The same attention as `mae_pretrain.models_mae.Attention` (its projections, shared), for inference:
    q k^T, softmax and @ v run in `core_dtype` (None = the projections' output dtype), and in bf16 on
    CPU the softmax writes bf16 directly instead of an fp32 copy of the (B, h, T, T) scores.

    Args:
        attn: the trained attention module (its `qkv`, `proj` and `num_heads` are used).
        core_dtype: dtype of the attention core, or None.
    """

    def __init__(self, attn: nn.Module, core_dtype: torch.dtype | None = None):
        super().__init__()
        self.qkv, self.proj, self.num_heads, self.core_dtype = attn.qkv, attn.proj, attn.num_heads, core_dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        qkv = self.qkv(x)  # (B, T, 3C)
        out_dtype = qkv.dtype
        if self.core_dtype is not None:
            qkv = qkv.to(self.core_dtype)
        q, k, v = qkv.reshape(B, T, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        if q.device.type == "cpu" and q.dtype == torch.bfloat16:  # two GEMMs beat the CPU flash kernel here
            attn = ((q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)).softmax(dim=-1)  # (B, h, T, T) bf16
            x = attn @ v  # (B, h, T, d)
        else:
            x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(B, T, C).to(out_dtype))  # (B, h, T, d) -> (B, T, C)


def use_inference_attention_(encoder: nn.Module, core_dtype: torch.dtype | None = None) -> int:
    """Replace every ViT attention (`mae_pretrain.models_mae.Attention`) by an `InferenceAttention` over
    the same weights; returns how many were replaced."""
    n = 0
    for module in list(encoder.modules()):
        for name, child in module.named_children():
            if isinstance(child, Attention):
                setattr(module, name, InferenceAttention(child, core_dtype))
                n += 1
    return n


def embedding_head(encoder: nn.Module) -> nn.Module | None:
    """The layer that maps the pooled feature to the embedding (`ExpressionViT.head`), if any."""
    return getattr(getattr(encoder, "model", encoder), "head", None)


def cast_weights_(encoder: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Store the weights of the linear and conv layers in `dtype`, the ones autocast would recast on every
    call; the norms, position embedding, class token and embedding head stay fp32, so the residual
    stream and the outputs keep the precision they have under autocast (bit-identical outputs)."""
    head = embedding_head(encoder)
    for m in encoder.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)) and m is not head:
            m.to(dtype)
    return encoder


class Int8Encoder(nn.Module):
    """An ExpressionEncoder whose transformer-block linears are dynamic int8 (int8 weights, activations
    quantized per call). It runs in fp32 outside any autocast, except the attention core (`core_dtype`).
    CPU only; not differentiable. Build it with `quantize_int8`.

    Args:
        encoder: the ExpressionEncoder, already quantized in place.
    """

    def __init__(self, encoder: ExpressionEncoder):
        super().__init__()
        self.encoder = encoder
        self.image_size, self.feature_dim, self.emb_dim = encoder.image_size, encoder.feature_dim, encoder.emb_dim

    def preprocess(self, x):
        return self.encoder.preprocess(x)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(x.device.type, enabled=False):
            return self.encoder(x.float())


def quantize_int8(encoder: nn.Module, core_dtype: torch.dtype = torch.float32) -> Int8Encoder:
    """The dynamic int8 version of a frozen `ExpressionEncoder` (changed in place; returns the wrapper).

    On x86 with VNNI the weights are packed for PyTorch's oneDNN quantized engine (~1.15x its default
    fbgemm on ViT-B's shapes, measured on one AMD EPYC); elsewhere for the default engine. A copy or a
    reload repacks for the default engine: quantize a freshly loaded encoder. Uses
    `torch.ao.quantization.quantize_dynamic`, deprecated in favour of torchao (not a dependency here)."""
    if not isinstance(encoder, ExpressionEncoder):
        raise ValueError(f"this encoder ({type(encoder).__name__}) has no int8 path; set quantize=none")
    device = next(encoder.parameters()).device
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
            torch.ao.quantization.quantize_dynamic(encoder.model.blocks, {nn.Linear}, dtype=torch.qint8, inplace=True)
    finally:
        torch.backends.quantized.engine = engine
    use_inference_attention_(encoder, None if core_dtype == torch.float32 else core_dtype)
    return Int8Encoder(encoder)


@torch.no_grad()
def fold_batchnorm_(net: nn.Module) -> int:
    """Fold every BatchNorm2d that follows a ConvTranspose2d in an nn.Sequential into that conv (a biased
    conv with the running statistics applied). Eval mode only, where the output stays the same to
    rounding. Irreversible: the state dict changes keys. Returns how many were folded."""
    n = 0
    for seq in [m for m in net.modules() if isinstance(m, nn.Sequential)]:
        layers = list(seq)
        for i in range(len(layers) - 1, 0, -1):
            bn, conv = layers[i], layers[i - 1]
            if not (isinstance(bn, nn.BatchNorm2d) and isinstance(conv, nn.ConvTranspose2d)):
                continue
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # (C_out,)
            bias = conv.bias if conv.bias is not None else torch.zeros_like(scale)
            conv.weight.mul_(scale.view(1, -1, 1, 1))  # ConvTranspose2d weight: (C_in, C_out, k, k)
            conv.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias, requires_grad=False)
            del layers[i]
            n += 1
        if len(layers) != len(seq):
            for name in list(seq._modules):
                del seq._modules[name]
            for j, layer in enumerate(layers):
                seq.add_module(str(j), layer)
    return n


def prepare_encoder(encoder: nn.Module, precision: str, quantize: str = "none") -> nn.Module:
    """The encoder as animate runs it (changed in place; returns the module to use): `quantize` 'none' =
    its linear and conv weights in the autocast dtype of `precision` and the inference attention;
    'int8' = `quantize_int8` with the attention core in that dtype."""
    if quantize not in QUANTIZE:
        raise ValueError(f"quantize must be one of {QUANTIZE}, got {quantize!r}")
    dtype = autocast_dtype(precision)
    if quantize == "int8":
        return quantize_int8(encoder, dtype or torch.float32)
    if dtype is not None:
        cast_weights_(encoder, dtype)
    use_inference_attention_(encoder)
    return encoder


def prepare_renderer(renderer: nn.Module, precision: str) -> nn.Module:
    """The renderer as animate runs it (in place): BatchNorm folded, weights in the autocast dtype of
    `precision`, activations channels_last (its transposed convs run ~1.5x faster on CPU)."""
    fold_batchnorm_(renderer)
    if (dtype := autocast_dtype(precision)) is not None:
        renderer.to(dtype)
    return renderer.to(memory_format=torch.channels_last)


def prepare(frozen, precision: str, quantize: str = "none"):
    """Make a `emb2rig.frozen.Frozen` fast for inference, in place, once: `prepare_encoder` and
    `prepare_renderer`. Networks prepared before (through any wrapper) are refused. Returns `frozen`."""
    for net in (frozen.encoder, frozen.renderer):
        if (done := getattr(net, PREPARED, None)) is not None:
            raise ValueError(f"these frozen networks were already prepared for {done}; load them again")
    setting = f"{precision} inference" + (" with an int8 encoder" if quantize == "int8" else "")
    encoder = prepare_encoder(frozen.encoder, precision, quantize)  # first: it may refuse, changing nothing
    prepare_renderer(frozen.renderer, precision)
    for net in {frozen.encoder, encoder, frozen.renderer}:
        setattr(net, PREPARED, setting)
    frozen.encoder = encoder
    return frozen
