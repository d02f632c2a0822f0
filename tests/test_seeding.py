"""Per-rank and per-sample random state: ranks draw different augmentations, every rank resumes its own
random state (two gloo processes), DataLoader workers (persistent or not) resume exactly, and a resume
on another number of processes warns and re-seeds deterministically."""
from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from torch.utils.data import DataLoader, Dataset

from common.checkpoint import resume_run, save_run, save_training_state
from common.device import seed_everything
from common.dist import DistInfo, cleanup, init_distributed, make_sampler
from common.seeding import SeededSamples, rank_seed, set_epoch

CPU = torch.device("cpu")


class RandomCrops(Dataset):
    """Stands in for an augmenting dataset: sample i is i plus noise from the global torch RNG."""

    def __len__(self) -> int:
        return 16

    def __getitem__(self, i: int) -> torch.Tensor:
        return i + torch.rand(3)


def test_ranks_draw_different_augmentations_and_the_model_rng_is_left_alone():
    ranks = [SeededSamples(RandomCrops(), seed=0, rank=r) for r in (0, 1)]
    before = torch.get_rng_state()
    assert not torch.equal(ranks[0][5], ranks[1][5])  # the same sample, the same epoch, two ranks
    assert torch.equal(ranks[0][5], SeededSamples(RandomCrops(), seed=0, rank=0)[5])  # reproducible
    first = ranks[0][5]
    ranks[0].set_epoch(1)
    assert not torch.equal(ranks[0][5], first)  # a new epoch, new draws
    assert torch.equal(torch.get_rng_state(), before)  # the main process's RNG (model draws) untouched


def _epochs(num_workers: int, start: int, stop: int) -> list[torch.Tensor]:
    ds = SeededSamples(RandomCrops(), seed=3, rank=0)
    sampler = make_sampler(ds, DistInfo(0, 1, 0, CPU), shuffle=True, seed=3)
    loader = DataLoader(ds, batch_size=4, sampler=sampler, num_workers=num_workers,
                        persistent_workers=num_workers > 0, generator=torch.Generator())
    out = []
    for epoch in range(start, stop):
        set_epoch(loader, epoch)
        out.append(torch.cat(list(loader)))
    return out


def test_persistent_workers_resume_exactly():
    straight = _epochs(2, 0, 3)  # two persistent workers over three epochs
    assert torch.equal(_epochs(0, 2, 3)[0], straight[2])  # "resumed" at epoch 2, in the main process
    assert not torch.equal(straight[1].sort(0).values, straight[2].sort(0).values)


def _train(run_dir: str, info: DistInfo, stop: int) -> list[list[float]]:
    """A toy run (4 epochs) with a per-epoch checkpoint; returns the random draws of the epochs it ran."""
    seed_everything(7 + info.rank)
    model = torch.nn.Linear(2, 1)
    ck = resume_run(run_dir, info, {"model": model}, seed=7)
    draws = []
    for epoch in range(ck["start_epoch"], stop):
        draws.append(torch.rand(2).tolist())  # an augmentation drawn in the main process
        save_run(run_dir, info, {"model": model}, epoch)
    return draws


def _two_ranks(rank: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE="2",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    info = init_distributed("cpu")
    straight = _train(f"{out}/straight", info, 4)
    _train(f"{out}/resumed", info, 2)  # interrupted after epoch 1
    resumed = _train(f"{out}/resumed", info, 4)
    torch.save({"straight": straight, "resumed": resumed}, f"{out}/rank{rank}.pth")
    cleanup()


def test_two_ranks_resume_each_their_own_random_state(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_two_ranks, args=(port, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pth") for r in (0, 1))
    assert r0["straight"][0] != r1["straight"][0]  # the two ranks draw differently at the same step
    for r in (r0, r1):
        assert r["resumed"] == r["straight"][2:]  # and each continues its own draws after the resume
    assert len(torch.load(tmp_path / "straight/checkpoint-last.pth")["rng"]) == 2


def test_another_world_size_warns_and_reseeds_from_seed_rank_and_epoch(tmp_path):
    save_training_state(tmp_path, {"epoch": 1, "rng": [{}, {}]})  # written by two processes
    with pytest.warns(UserWarning, match="2 process"):
        ck = resume_run(tmp_path, DistInfo(0, 1, 0, CPU), {}, seed=5)
    drawn = torch.rand(3)
    seed_everything(rank_seed(5, 0, 2))
    assert ck["start_epoch"] == 2 and torch.equal(drawn, torch.rand(3))
