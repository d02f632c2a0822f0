"""DDP at world size 2 on CPU (gloo) trains a toy model to the same weights as one process."""
from __future__ import annotations

import os
import socket

import torch
import torch.multiprocessing as mp
from torch.utils.data import DataLoader, TensorDataset

from common import dist


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 5, generator=g)
    return TensorDataset(x, x @ torch.arange(1.0, 6.0).unsqueeze(1))


def _run(rank, world, port, out):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    info = dist.init_distributed("cpu")
    torch.manual_seed(0)
    model = dist.wrap_ddp(torch.nn.Linear(5, 1), info)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    ds = _data()
    sampler = dist.make_sampler(ds, info, shuffle=True, seed=1)
    loader = DataLoader(ds, batch_size=32 // world, sampler=sampler)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        for x, y in loader:
            loss = (model(x) - y).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    torch.save(dist.unwrap(model).state_dict(), f"{out}/rank{rank}.pth")
    dist.cleanup()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_ranks_match_single_process(tmp_path):
    mp.spawn(_run, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pth") for r in (0, 1))
    for k in r0:
        assert torch.equal(r0[k], r1[k]), "ranks diverged"
    # one process on the union of both ranks' batches: same weights up to float rounding
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        os.environ.pop(k, None)
    torch.manual_seed(0)
    ref = torch.nn.Linear(5, 1)
    opt = torch.optim.SGD(ref.parameters(), lr=0.05)
    ds = _data()
    from torch.utils.data import DistributedSampler
    samplers = [DistributedSampler(ds, num_replicas=2, rank=r, shuffle=True, seed=1) for r in (0, 1)]
    for epoch in range(3):
        idx = []
        for s in samplers:
            s.set_epoch(epoch)
            idx.append(list(s))
        for b in range(0, len(idx[0]), 16):
            x, y = ds[idx[0][b:b + 16] + idx[1][b:b + 16]]
            loss = (ref(x) - y).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    for k, v in ref.state_dict().items():
        assert torch.allclose(v, r0[k], atol=1e-5)


def test_setup_cpu_sets_what_it_is_given_and_respects_omp_num_threads(monkeypatch):
    from common.device import setup_cpu

    n = torch.get_num_threads()
    try:
        assert setup_cpu(torch.device("cpu"), threads=1) == 1
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        torch.set_num_threads(2)
        assert setup_cpu(torch.device("cpu")) == 2  # OMP_NUM_THREADS given: left to PyTorch
        monkeypatch.delenv("OMP_NUM_THREADS")
        cores = len(os.sched_getaffinity(0))
        assert setup_cpu(torch.device("cpu")) == max(1, cores // 2)  # two local processes share the cores
    finally:
        torch.set_num_threads(n)
