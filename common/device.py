"""Device, precision and seeding: one switch each.

    dev = pick_device("auto")                       # CUDA when present, else CPU
    with autocast(dev, "bf16"): loss = model(x)     # fp32 | bf16 | fp16
    autocast_dtype("bf16")                          # torch.bfloat16 (None for fp32)
    setup_cpu(dev)                                  # every entry, once: CPU threads and malloc
    scaler = make_scaler(dev, "fp16")               # enabled only for fp16
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import random
import sys

import numpy as np
import torch

PRECISIONS = ("fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def pick_device(name: str = "auto") -> torch.device:
    """'auto' -> cuda if available else cpu; 'cuda' without a GPU is an error that says so."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but no CUDA GPU is visible; set device=auto or device=cpu")
    return dev


def keep_freed_memory(limit: int = 1 << 30) -> bool:
    """Let glibc's malloc keep freed blocks up to `limit` bytes for reuse instead of unmapping them.

    By default glibc mmap-s every block above an adaptive threshold (at most 32 MiB) afresh, page-faults
    it in on first touch and unmaps it when freed. A ViT-B forward pass on CPU allocates such tensors
    in every block: on 2 cores that cost ~1 million page faults per 64 images and 1.5-1.9x the time
    (bf16 inference 9.8-10.4 -> 15.6-18.8 img/s, consecutive runs). The price: the process keeps its
    peak resident size. Process-wide (each DDP rank is its own process); returns whether it was
    applied (glibc only, else a no-op). Older glibc caps the mmap threshold at 32 MiB; blocks above
    that are still mapped afresh."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    limit = min(limit, 2**31 - 1)
    m_trim_threshold, m_mmap_threshold = -1, -3  # malloc.h
    mmap_ok = mallopt(m_mmap_threshold, limit) or mallopt(m_mmap_threshold, 32 << 20)
    return bool(mmap_ok) and bool(mallopt(m_trim_threshold, limit))


def setup_cpu(device: torch.device, threads: int = 0, malloc: bool = True) -> int:
    """The one place that sets this process's CPU threads (and, for CPU runs, malloc); every entry calls it
    (the training stages through `common.dist.init_distributed`, animate through `animate.main.run`).

    Args:
        device: where the networks run; on CPU, `keep_freed_memory` is applied too (unless `malloc` False).
        threads: intra-op threads; 0 = PyTorch's default (OMP_NUM_THREADS when set, which torchrun sets to 1
            for several processes, else the physical cores), or, with several local processes and no
            OMP_NUM_THREADS, the cores this process may use shared out among them.
    Returns: the number of threads now in use.
    """
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if threads <= 0 and "OMP_NUM_THREADS" not in os.environ and local > 1:  # share this machine's cores out
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        threads = max(1, cores // local)
    if threads > 0:
        torch.set_num_threads(threads)
    if device.type == "cpu" and malloc:
        keep_freed_memory()
    return torch.get_num_threads()


def check_precision(precision: str, device: torch.device) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got '{precision}'")
    if precision == "fp16" and device.type == "cpu":
        raise ValueError("precision fp16 needs a CUDA GPU; use bf16 or fp32 on CPU")


def autocast(device: torch.device, precision: str):
    """Autocast context for `precision` ('fp32' is a no-op context)."""
    check_precision(precision, device)
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_DTYPES[precision])


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The reduced dtype autocast runs `precision` in (None for 'fp32')."""
    return _DTYPES.get(precision)


def at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """`x` in float32, or float64 when it is float64: losses never compute in bf16/fp16 nor downcast."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def make_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """GradScaler that is active only for fp16 (bf16 and fp32 need no loss scaling)."""
    return torch.amp.GradScaler(device.type, enabled=(precision == "fp16"))


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) for reproducible runs."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_worker(worker_id: int) -> None:
    """DataLoader `worker_init_fn`: derive NumPy/Python seeds from the worker's torch seed."""
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)
