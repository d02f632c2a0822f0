"""Random state per rank and per sample: every rank draws its own augmentations, and a resumed run
continues exactly, with or without DataLoader workers.

- The main process of rank r starts from `seed + r` (`common.device.seed_everything`); checkpoints keep
  every rank's random state (`common.checkpoint.save_run` / `resume_run`).
- Each training sample draws its augmentation from its own seed, `sample_seed(seed, rank, epoch, index)`
  (`SeededSamples`): the same in the main process or any worker, with any `num_workers`, persistent
  workers or not, and wherever the run was interrupted.
- The DistributedSampler keeps the same `seed` on every rank, so the ranks' shards stay a partition.

    train = SeededSamples(dataset, cfg.seed, info.rank)
    loader = DataLoader(train, sampler=sampler, generator=torch.Generator(), ...)  # workers' seeds off the global RNG
    for epoch in range(start, epochs):
        set_epoch(loader, epoch)  # the sampler's shuffle and the samples' seeds
"""
from __future__ import annotations

import contextlib
import random
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info


def mix_seed(*values: int) -> int:
    """A 63-bit seed hashed from integers (numpy's SeedSequence): nearby inputs give unrelated seeds."""
    return int(np.random.SeedSequence([v % 2**64 for v in values]).generate_state(2, np.uint64)[0] >> 1)


def rank_seed(seed: int, rank: int, epoch: int) -> int:
    """The seed a rank's main process restarts from at `epoch` when its saved random state cannot be used
    (a checkpoint saved by a different number of processes)."""
    return mix_seed(seed, rank, epoch, 1)


def sample_seed(seed: int, rank: int, epoch: int, index: int) -> int:
    """The seed of sample `index`'s random draws in `epoch` on `rank`."""
    return mix_seed(seed, rank, epoch, index, 2)


@contextlib.contextmanager
def seeded(seed: int):
    """Seed Python, NumPy and torch's CPU generator for the block. In the main process their previous
    states come back afterwards (the model's random draws stay apart); a DataLoader worker keeps them."""
    saved = None if get_worker_info() is not None else (random.getstate(), np.random.get_state(),
                                                        torch.get_rng_state())
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        if saved is not None:
            random.setstate(saved[0])
            np.random.set_state(saved[1])
            torch.set_rng_state(saved[2])


class SeededSamples(Dataset):
    """`dataset` with each sample drawn under its own seed, `sample_seed(seed, rank, epoch, index)`; a
    dataset with `__getitems__` draws a whole batch under the seed of its first index.

    Args:
        dataset: a map-style dataset; its other attributes are reachable through this wrapper.
        seed, rank: the run's seed and this process's rank.
    The epoch lives in shared memory, so persistent workers see `set_epoch` too.
    """

    def __init__(self, dataset: Dataset, seed: int, rank: int):
        self.dataset, self.seed, self.rank = dataset, seed, rank
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(epoch)

    def _seed(self, index: int) -> int:
        return sample_seed(self.seed, self.rank, int(self._epoch), int(index))

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        with seeded(self._seed(index)):
            return self.dataset[index]

    def __getitems__(self, indices: list[int]) -> Any:
        if not hasattr(self.dataset, "__getitems__"):
            return [self[i] for i in indices]
        with seeded(self._seed(indices[0])):
            return self.dataset.__getitems__(indices)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name == "dataset":  # not set yet (unpickling in a worker)
            raise AttributeError(name)
        return getattr(self.dataset, name)


def set_epoch(loader: torch.utils.data.DataLoader, epoch: int) -> None:
    """Start `epoch` on a training loader: its (batch) sampler's shuffle and, for `SeededSamples`, the
    samples' seeds."""
    for part in (loader.sampler, loader.batch_sampler, loader.dataset):
        if hasattr(part, "set_epoch"):
            part.set_epoch(epoch)
