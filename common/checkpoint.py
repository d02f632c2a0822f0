"""Checkpoints: the whole training state in one file, written atomically, resumed automatically.

A run folder holds `checkpoint-last.pth` (rewritten every save) and `checkpoint-best.pth` (copied
when the validation metric improves). Every stage saves and resumes through `save_run` / `resume_run`:

    parts = {"model": net, "optimizer": opt, "scaler": scaler}   # anything with state_dict / load_state_dict
    ck = resume_run(run_dir, info, parts, cfg.seed)              # ck["start_epoch"]: 0 for a fresh run
    if (done := finished_summary(run_dir, info, ck["start_epoch"], cfg.epochs)) is not None:
        return done                                              # "already complete"
    for epoch in range(ck["start_epoch"], cfg.epochs):
        ...
        save_run(run_dir, info, parts, epoch, is_best, best_metric=best, config=to_dict(cfg))  # every rank

A checkpoint is a plain dict: the parts' state dicts under their keys, `epoch` (the last finished
epoch), `world_size`, `rng` (every rank's random state, in rank order) and the stage's extra keys
(`best_metric`, `step`, `config`, ...).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from common.device import seed_everything
from common.dist import DistInfo, barrier, unwrap
from common.seeding import rank_seed

LAST = "checkpoint-last.pth"
BEST = "checkpoint-best.pth"
_PREFIXES = ("module.", "_orig_mod.")

# Official MAE checkpoints pickle their argparse namespace next to the weights.
torch.serialization.add_safe_globals([argparse.Namespace])


def save_checkpoint(state: Mapping[str, Any], path: str | Path) -> None:
    """Write `state` to `path` atomically: a temp file in the same folder, fsync, then rename.

    A crash mid-write leaves the previous file intact; readers never see a partial file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(dict(state), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint file; a missing or unreadable file raises an error naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint '{path}' does not exist; check the path in your config")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # corrupt file, or pickled objects outside the allow-list
        raise RuntimeError(f"cannot read checkpoint '{path}': {e}") from e


def stop_if_diverged(run_dir: str | Path, epoch: int, model: torch.nn.Module, metrics: Mapping[str, Any]) -> None:
    """Stop a run whose held-out metrics or weights went non-finite, before it saves anything, so
    `checkpoint-last.pth` and `checkpoint-best.pth` keep the last finite epoch. Call it on every rank
    (they all hold the same reduced metrics and synchronised weights) just before saving.

    Raises:
        FloatingPointError: naming the epoch, what is non-finite and what to do.
    """
    bad = [k for k, v in metrics.items() if isinstance(v, (int, float)) and not math.isfinite(v)]
    tensors = [*model.named_parameters(), *model.named_buffers()]
    bad += [f"weights ({n})" for n, t in tensors if t.is_floating_point() and not torch.isfinite(t).all()][:3]
    if bad:
        raise FloatingPointError(f"epoch {epoch}: non-finite {', '.join(bad)}; stopping without saving, so "
                                 f"{Path(run_dir) / LAST} and {BEST} keep the last finite epoch. Lower the learning "
                                 f"rate or use precision=fp32, then rerun (it resumes from the last finite epoch)")


def save_training_state(run_dir: str | Path, state: Mapping[str, Any], is_best: bool = False) -> None:
    """Rank-0 helper: write `checkpoint-last.pth` and, when `is_best`, `checkpoint-best.pth`."""
    run_dir = Path(run_dir)
    save_checkpoint(state, run_dir / LAST)
    if is_best:
        tmp = run_dir / (BEST + ".tmp")
        shutil.copyfile(run_dir / LAST, tmp)
        os.replace(tmp, run_dir / BEST)


def find_resume(run_dir: str | Path) -> Path | None:
    """The run folder's last checkpoint, or None for a fresh run."""
    p = Path(run_dir) / LAST
    return p if p.is_file() else None


def clean_state_dict(obj: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """A model state dict from a foreign file: unwrap `{'model': ...}` / `{'state_dict': ...}` and
    strip the `module.` (DDP) and `_orig_mod.` (torch.compile) prefixes."""
    for key in ("model", "state_dict", "model_state"):
        if key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    out = {}
    for k, v in obj.items():
        changed = True
        while changed:
            changed = False
            for p in _PREFIXES:
                if k.startswith(p):
                    k, changed = k[len(p):], True
        out[k] = v
    return out


def load_weights(model: torch.nn.Module, source: str | Path | Mapping[str, Any], strict: bool = False,
                 verbose: bool = True) -> tuple[list[str], list[str]]:
    """Load weights from a file or dict into `model`, tolerating wrappers and prefixes.

    Returns (missing, unexpected) key lists. With `strict=False` mismatches are reported, not raised.
    """
    obj = load_checkpoint(source) if isinstance(source, (str, Path)) else source
    sd = clean_state_dict(obj)
    result = model.load_state_dict(sd, strict=strict)
    if verbose and (result.missing_keys or result.unexpected_keys):
        name = source if isinstance(source, (str, Path)) else "state dict"
        print(f"[load_weights] {name}: {len(result.missing_keys)} missing, "
              f"{len(result.unexpected_keys)} unexpected keys")
    return list(result.missing_keys), list(result.unexpected_keys)


def rng_state() -> dict[str, Any]:
    """The Python, NumPy and torch RNG states (for exact resume)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    numpy_state = (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss)  # tensor: loads weights_only
    return {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what `rng_state` returned."""
    random.setstate(state["python"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def gather_rng_states() -> list[dict[str, Any]]:
    """Every rank's `rng_state()`, in rank order (a collective under torch.distributed: call it on every rank)."""
    state = rng_state()
    if not dist.is_initialized():
        return [state]
    states: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(states, state)
    return states


def save_run(run_dir: str | Path, info: DistInfo, parts: Mapping[str, Any], epoch: int, is_best: bool = False,
             **extra: Any) -> None:
    """Save the training state after `epoch` (0-based). Call it on every rank: it gathers every rank's random
    state; rank 0 writes `checkpoint-last.pth` (and `checkpoint-best.pth` when `is_best`), and every rank
    returns once the files are written.

    Args:
        parts: {key: object with `state_dict()`} (model, optimizer, scaler, ...); None entries are left out,
            DDP / torch.compile wrappers are taken off.
        extra: further keys stored as they are (best_metric, step, config, ...).
    """
    states = gather_rng_states()
    if info.is_main:
        state = {k: unwrap(v).state_dict() if isinstance(v, torch.nn.Module) else v.state_dict()
                 for k, v in parts.items() if v is not None}
        save_training_state(run_dir, {**state, "epoch": epoch, "world_size": info.world_size, "rng": states,
                                      **extra}, is_best)
    barrier()


def resume_run(run_dir: str | Path, info: DistInfo, parts: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """Continue from the run folder's `checkpoint-last.pth` when there is one: load every part in `parts`
    ({key: object with `load_state_dict`}, None entries skipped) and this rank's random state.

    Returns the checkpoint dict with `start_epoch` (the next epoch to run) added, or `{"start_epoch": 0}`
    for a fresh run. A checkpoint saved by another number of processes has no state for this rank: every
    rank then re-seeds from `common.seeding.rank_seed(seed, rank, start_epoch)` (deterministic, but not the
    random draws the old world would have made), with a warning.
    """
    path = find_resume(run_dir)
    if path is None:
        return {"start_epoch": 0}
    ck = load_checkpoint(path)  # on the CPU: RNG states must stay there; load_state_dict moves the rest
    missing = [k for k, v in parts.items() if v is not None and k not in ck]
    if missing:
        raise KeyError(f"{path} has no {missing}: it was written by a run with another config (e.g. without the "
                       f"GAN term); resume with that config, or train into a new output_dir")
    for key, obj in parts.items():
        if obj is not None:
            obj.load_state_dict(ck[key])
    ck["start_epoch"] = ck["epoch"] + 1
    states = ck.get("rng") or []
    states = [states] if isinstance(states, Mapping) else states  # one state: written by older code
    if len(states) == info.world_size:
        set_rng_state(states[info.rank])
    else:
        seed_everything(rank_seed(seed, info.rank, ck["start_epoch"]))
        if info.is_main:
            warnings.warn(f"{path} holds the random state of {len(states)} process(es), this run has "
                          f"{info.world_size}: every rank re-seeds from rank_seed(seed, rank, epoch) "
                          f"(common/seeding.py). Training continues, but not with the random draws "
                          f"(augmentation, masks, dropout) of an uninterrupted run; resume with the "
                          f"same number of processes for that", stacklevel=2)
    if info.is_main:
        print(f"resumed from {path} at epoch {ck['start_epoch']}")
    return ck


def finished_summary(run_dir: str | Path, info: DistInfo, start_epoch: int, epochs: int) -> dict | None:
    """A run that has trained all its `epochs` and written `summary.json` is complete: returns that summary
    (the stage returns it at once); otherwise None (a run stopped after its last epoch but before its summary
    goes on to write it)."""
    path = Path(run_dir) / "summary.json"
    if start_epoch < epochs or not path.is_file():
        return None
    if info.is_main:
        print(f"{run_dir}: already complete ({epochs} epochs); raise epochs to train further")
    return json.loads(path.read_text())
