"""Distributed training through `torchrun`, with the same code path at world size 1.

    info = init_distributed()          # reads RANK / WORLD_SIZE / LOCAL_RANK set by torchrun
    model = wrap_ddp(model, info)      # DistributedDataParallel when world_size > 1
    sampler = make_sampler(dataset, info, shuffle=True, seed=cfg.seed)

NCCL on CUDA, gloo on CPU. Only rank 0 logs and saves (`info.is_main`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler

from common.device import pick_device, setup_cpu


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group when launched by torchrun; otherwise a world of one. Sets the CPU threads
    and, on CPU, malloc (`common.device.setup_cpu`)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device)
    setup_cpu(dev)
    if dev.type == "cuda":
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", rank=rank, world_size=world)
    return DistInfo(rank, world, local, dev)


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def wrap_ddp(model: torch.nn.Module, info: DistInfo, **kwargs) -> torch.nn.Module:
    if not info.distributed:
        return model
    ids = [info.device.index] if info.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids, **kwargs)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The bare module under DDP and torch.compile wrappers (for saving and evaluation)."""
    while True:
        if isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def make_sampler(dataset: Dataset, info: DistInfo, shuffle: bool, seed: int = 0,
                 drop_last: bool = False) -> DistributedSampler:
    """A DistributedSampler at every world size; call `sampler.set_epoch(epoch)` each epoch."""
    return DistributedSampler(dataset, num_replicas=info.world_size, rank=info.rank, shuffle=shuffle,
                              seed=seed, drop_last=drop_last)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks (a no-op at world size 1); returns the tensor."""
    if dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def reduce_means(values: dict[str, float], count: int, device: torch.device) -> dict[str, float]:
    """Average per-rank means weighted by each rank's sample count."""
    keys = sorted(values)
    t = torch.tensor([values[k] * count for k in keys] + [float(count)], dtype=torch.float64, device=device)
    all_reduce_sum(t)
    n = max(t[-1].item(), 1.0)
    return {k: (t[i] / n).item() for i, k in enumerate(keys)}
