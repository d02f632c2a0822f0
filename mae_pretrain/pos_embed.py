"""Fixed 2-D sine-cosine position embeddings and checkpoint position-embedding resizing.

The values equal those of the official MAE release (MoCo v3 / MAE convention): the first half
of the channels encodes the column (x) index and the second half the row (y) index, each half
as ``[sin(pos * omega), cos(pos * omega)]`` with ``omega_i = 1 / 10000 ** (i / (D / 4))``.
Computed in float32 with numpy, as the official code does, so the numbers agree bit for bit.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["get_1d_sincos_pos_embed", "get_2d_sincos_pos_embed", "interpolate_pos_embed"]


def get_1d_sincos_pos_embed(embed_dim: int, pos: np.ndarray) -> np.ndarray:
    """Sine-cosine embedding of 1-D positions.

    Args:
        embed_dim: output channels D (even).
        pos: positions of any shape, flattened to (M,).

    Returns:
        (M, D) float32 array: ``[sin(pos * omega), cos(pos * omega)]``.
    """
    if embed_dim % 2:
        raise ValueError(f"embed_dim must be even, got {embed_dim}")
    omega = np.arange(embed_dim // 2, dtype=np.float32)
    omega /= embed_dim / 2.0
    omega = 1.0 / 10000**omega  # (D/2,)
    out = np.outer(pos.reshape(-1).astype(np.float32), omega)  # (M, D/2)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)  # (M, D)


def get_2d_sincos_pos_embed(embed_dim: int, grid_size: int, cls_token: bool = False) -> np.ndarray:
    """Sine-cosine embedding of a square patch grid, row-major like the patch tokens.

    Args:
        embed_dim: output channels D (multiple of 4).
        grid_size: patches per side G.
        cls_token: prepend an all-zero row for the class token.

    Returns:
        (G*G, D) or (1 + G*G, D) array (float32; float64 with ``cls_token``, as official).
    """
    if embed_dim % 4:
        raise ValueError(f"embed_dim must be a multiple of 4, got {embed_dim}")
    coords = np.arange(grid_size, dtype=np.float32)
    col, row = np.meshgrid(coords, coords)  # each (G, G); col varies along the last axis
    emb_col = get_1d_sincos_pos_embed(embed_dim // 2, col)  # (G*G, D/2)
    emb_row = get_1d_sincos_pos_embed(embed_dim // 2, row)  # (G*G, D/2)
    emb = np.concatenate([emb_col, emb_row], axis=1)  # (G*G, D)
    if cls_token:
        emb = np.concatenate([np.zeros([1, embed_dim]), emb], axis=0)  # (1 + G*G, D)
    return emb


def _resize_grid_tokens(pos: torch.Tensor, n_extra: int, new_size: int) -> torch.Tensor:
    """(1, n_extra + S*S, D) -> (1, n_extra + new*new, D) by bicubic resize of the grid part."""
    extra, grid = pos[:, :n_extra], pos[:, n_extra:]
    old_size = int(round(grid.shape[1] ** 0.5))
    if old_size * old_size != grid.shape[1]:
        raise ValueError(f"position embedding with {grid.shape[1]} grid tokens is not a square grid")
    dim = grid.shape[-1]
    grid = grid.reshape(1, old_size, old_size, dim).permute(0, 3, 1, 2)  # (1, D, S, S)
    grid = F.interpolate(grid.float(), size=(new_size, new_size), mode="bicubic", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).flatten(1, 2).to(pos.dtype)  # (1, new*new, D)
    return torch.cat([extra, grid], dim=1)


def interpolate_pos_embed(model: nn.Module, state_dict: dict, keys: tuple[str, ...] = ("pos_embed",)) -> dict:
    """Resize checkpoint position embeddings to the model's patch grid, in place.

    Tokens before the patch grid (the class token) are kept unchanged; the grid part is resized
    bicubically (align_corners=False), as the official MAE / DeiT code does. Nothing happens when
    the grids already agree or a key is absent.

    Args:
        model: a model with ``patch_embed.num_patches`` and the parameters named in ``keys``.
        state_dict: checkpoint tensors; modified in place and returned.
        keys: which position embeddings to resize (``decoder_pos_embed`` too for full files).

    Returns:
        The same ``state_dict``.
    """
    num_patches = model.patch_embed.num_patches
    new_size = int(round(num_patches**0.5))
    model_sd = model.state_dict()
    for key in keys:
        if key not in state_dict or key not in model_sd:
            continue
        pos = state_dict[key]  # (1, n_extra + S*S, D)
        n_extra = model_sd[key].shape[-2] - num_patches
        if pos.shape[-2] == model_sd[key].shape[-2]:
            continue
        old = int(round((pos.shape[-2] - n_extra) ** 0.5))
        print(f"interpolate_pos_embed: {key} {old}x{old} -> {new_size}x{new_size}")
        state_dict[key] = _resize_grid_tokens(pos, n_extra, new_size)
    return state_dict
