"""Load official MAE / MAE-Face checkpoints (``{'model': state_dict, 'args': ..., ...}``)."""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import torch
from torch import nn

from common.checkpoint import clean_state_dict

from .pos_embed import interpolate_pos_embed

__all__ = ["load_mae_checkpoint"]

_DECODER_KEYS = ("decoder_", "mask_token")  # the official decoder; everything else is the encoder


def _torch_load(path: Path, allow_pickle: bool) -> dict:
    """Weights-only load that accepts the ``argparse.Namespace`` the official files carry."""
    if allow_pickle:  # arbitrary code execution: only for files you trust
        return torch.load(path, map_location="cpu", weights_only=False)
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise RuntimeError(
            f"{path}: cannot be loaded safely (weights_only=True): {str(err).splitlines()[0]}. "
            "If you trust this file, call load_mae_checkpoint(..., allow_pickle=True).") from err
    except (RuntimeError, EOFError, OSError) as err:
        raise RuntimeError(f"{path}: not a readable PyTorch checkpoint ({err})") from err


def load_mae_checkpoint(model: nn.Module, path: str | Path, *, allow_pickle: bool = False
                        ) -> tuple[list[str], list[str]]:
    """Load an official MAE / MAE-Face checkpoint into ``model`` non-strictly.

    Prefixes ``module.`` / ``_orig_mod.`` are stripped and position embeddings are resized to the
    model's patch grid. An encoder-only file (e.g. the public ``mae_pretrain_vit_base.pth``)
    leaves every decoder key missing; that is expected and reported, not an error.

    Args:
        model: a ``MaskedAutoencoderViT`` (or any model with the official encoder key names).
        path: the checkpoint file.
        allow_pickle: fall back to full unpickling (``weights_only=False``) for trusted files.

    Returns:
        (missing, unexpected): model keys absent from the file, file keys the model lacks.

    Raises:
        FileNotFoundError: no such file.
        ValueError: no encoder key of the model is in the file, or a tensor's shape disagrees.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MAE checkpoint not found: {path}")
    obj = _torch_load(path, allow_pickle)
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a dict with a 'model' state dict, got {type(obj).__name__}")
    state_dict = clean_state_dict(obj)
    model_sd = model.state_dict()
    encoder_keys = [k for k in model_sd if not k.startswith(_DECODER_KEYS)]
    if not any(k in state_dict for k in encoder_keys):
        sample = ", ".join(list(state_dict)[:5]) or "none"
        raise ValueError(f"{path}: no MAE encoder key matched (e.g. 'cls_token', 'blocks.0.attn.qkv.weight'); "
                         f"the file has keys like: {sample}. Is this an MAE checkpoint?")
    interpolate_pos_embed(model, state_dict, keys=("pos_embed", "decoder_pos_embed"))
    bad = [f"{k} {tuple(v.shape)} vs model {tuple(model_sd[k].shape)}"
           for k, v in state_dict.items() if k in model_sd and v.shape != model_sd[k].shape]
    if bad:
        raise ValueError(f"{path}: shapes do not match the model (wrong preset?): " + "; ".join(bad[:5]))
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    missing_dec = [k for k in missing if k.startswith(_DECODER_KEYS)]
    missing_enc = [k for k in missing if not k.startswith(_DECODER_KEYS)]
    note = " (encoder-only file: decoder starts from init)" if missing_dec and len(missing_dec) == sum(
        k.startswith(_DECODER_KEYS) for k in model_sd) else ""
    print(f"load_mae_checkpoint: {path.name}: loaded {len(model_sd) - len(missing)}/{len(model_sd)} tensors; "
          f"missing encoder {len(missing_enc)}, missing decoder {len(missing_dec)}{note}; "
          f"unexpected {len(unexpected)}" + (f" {unexpected[:4]}" if unexpected else ""))
    return list(missing), list(unexpected)
