"""How every stage feeds its data: files listed once, images decoded in DataLoader workers, an opt-in cache.

    files = PathArray(image_paths(root))             # one numpy buffer, not a Python list of a million paths
    cache = use_cache(cfg.cache, "avatar renders")   # False (said once) when torchrun starts several processes
    loader = build_loader(ds, batch_size=64, sampler=sampler, num_workers=cfg.num_workers, device=info.device)

Each stage's dataset keeps only the file list and small per-row arrays (rigs, boxes, sources) and decodes
an image when a sample is asked for, in the worker that asks; `DistributedSampler` hands every rank its
own share of the indices, so each rank reads only its shard. `cache: true` (the demo configs) decodes the
whole set once into memory instead: fast for a small world, impossible for a real one, and refused under
torchrun, where every rank would hold its own copy.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler

from common.device import seed_worker


class PathArray:
    """File paths stored as one numpy byte array; `paths[i]` is a str.

    A DataLoader worker is a forked copy of the training process. Reading a Python object there writes its
    reference count, which copies the memory page it sits on, so a list of a million path strings slowly
    becomes one private copy per worker; a numpy buffer is only read and stays shared.
    """

    def __init__(self, paths: Iterable):
        self._a = np.array([os.fsencode(p) for p in paths], dtype=bytes)  # (N,) fixed-width bytes

    def __len__(self) -> int:
        return len(self._a)

    def __getitem__(self, i: int) -> str:
        return os.fsdecode(self._a[i])

    def __iter__(self):
        return (os.fsdecode(p) for p in self._a)


def world_size() -> int:
    """Processes in this run: the process group's size, else torchrun's WORLD_SIZE, else 1."""
    return dist.get_world_size() if dist.is_initialized() else int(os.environ.get("WORLD_SIZE", "1"))


def use_cache(cache: bool, what: str) -> bool:
    """Whether to decode `what` into memory: `cache`, except in a run of several processes, where each rank
    would decode and hold the whole set; there the data streams from disk (said once, by rank 0)."""
    n = world_size()
    if cache and n > 1:
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"[data] cache: true is ignored for {what} in a run of {n} processes (each would hold its own "
                  "copy); the images are decoded in DataLoader workers instead", flush=True)
        return False
    return cache


def build_loader(dataset: Dataset, *, batch_size: int = 1, sampler: Sampler | None = None,
                 batch_sampler: Sampler | None = None, drop_last: bool = False, collate_fn: Callable | None = None,
                 num_workers: int = 0, device: torch.device | None = None, persistent_workers: bool = True,
                 prefetch_factor: int | None = None, generator: torch.Generator | None = None) -> DataLoader:
    """The DataLoader every stage builds the same way.

    Args:
        sampler / batch_sampler: a rank's indices (`common.dist.make_sampler`) or its batches.
        num_workers: decoding processes per rank (0 = decode in the training process).
        device: where batches go; pinned host memory when it is a GPU.
        persistent_workers: keep the workers (and their open files) across epochs.
        prefetch_factor: batches each worker prepares ahead (None = PyTorch's 2).
        generator: the RNG that seeds the workers (for an exact resume).
    """
    workers = num_workers > 0
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, batch_sampler=batch_sampler,
                      drop_last=drop_last, collate_fn=collate_fn, num_workers=num_workers,
                      pin_memory=device is not None and device.type == "cuda", worker_init_fn=seed_worker,
                      persistent_workers=workers and persistent_workers,
                      prefetch_factor=prefetch_factor if workers else None, generator=generator)
