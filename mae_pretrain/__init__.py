"""Stage 1: masked-autoencoder pre-training of the ViT face encoder (official MAE key names)."""

from .checkpoint_io import load_mae_checkpoint
from .models_mae import (
    MAE_PRESETS,
    MAEConfig,
    MaskedAutoencoderViT,
    build_mae,
    mae_vit_base_patch16,
    mae_vit_huge_patch14,
    mae_vit_large_patch16,
    mae_vit_small_patch8_64,
    mae_vit_tiny_conv16_64,
    mae_vit_tiny_patch8_64,
    mae_vit_tiny_patch16_64,
)
from .pos_embed import get_2d_sincos_pos_embed, interpolate_pos_embed

__all__ = [
    "MAE_PRESETS",
    "MAEConfig",
    "MaskedAutoencoderViT",
    "build_mae",
    "get_2d_sincos_pos_embed",
    "interpolate_pos_embed",
    "load_mae_checkpoint",
    "mae_vit_base_patch16",
    "mae_vit_huge_patch14",
    "mae_vit_large_patch16",
    "mae_vit_small_patch8_64",
    "mae_vit_tiny_patch8_64",
    "mae_vit_tiny_patch16_64",
    "mae_vit_tiny_conv16_64",
]
