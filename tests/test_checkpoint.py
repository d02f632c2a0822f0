"""Checkpoints: round trip, atomic writes, foreign state dicts, exact auto-resume."""
from __future__ import annotations

import torch

from common import checkpoint as ck
from common.device import seed_everything


def make_model():
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(8, 1))


def test_round_trip(tmp_path):
    m = make_model()
    opt = torch.optim.AdamW(m.parameters(), 1e-2)
    m(torch.randn(3, 4)).sum().backward()
    opt.step()
    ck.save_checkpoint({"model": m.state_dict(), "optimizer": opt.state_dict(), "epoch": 3}, tmp_path / "c.pth")
    state = ck.load_checkpoint(tmp_path / "c.pth")
    m2 = make_model()
    m2.load_state_dict(state["model"])
    assert state["epoch"] == 3
    for a, b in zip(m.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint-last.pth"
    ck.save_checkpoint({"epoch": 1}, path)

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    try:
        ck.save_checkpoint({"epoch": 2}, path)
    except OSError:
        pass
    monkeypatch.undo()
    assert ck.load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint-last.pth"]  # no temp file left behind


def test_best_copy_and_find_resume(tmp_path):
    assert ck.find_resume(tmp_path) is None
    ck.save_training_state(tmp_path, {"epoch": 0}, is_best=True)
    ck.save_training_state(tmp_path, {"epoch": 1}, is_best=False)
    assert ck.load_checkpoint(ck.find_resume(tmp_path))["epoch"] == 1
    assert ck.load_checkpoint(tmp_path / ck.BEST)["epoch"] == 0


def test_foreign_state_dicts_load(tmp_path):
    import argparse

    m = make_model()
    wrapped = {"model": {"module._orig_mod." + k: v for k, v in m.state_dict().items()},
               "args": argparse.Namespace(lr=1.0)}
    torch.save(wrapped, tmp_path / "foreign.pth")
    m2 = make_model()
    missing, unexpected = ck.load_weights(m2, tmp_path / "foreign.pth")
    assert missing == [] and unexpected == []
    assert torch.equal(m2[0].weight, m[0].weight)


def test_missing_file_names_path(tmp_path):
    import pytest

    with pytest.raises(FileNotFoundError, match="nope.pth"):
        ck.load_checkpoint(tmp_path / "nope.pth")


def _train(run_dir, epochs, stop_after=None):
    """A toy loop with per-epoch checkpoints and auto-resume, as the stages do it."""
    seed_everything(0)
    m = make_model()
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    start = 0
    if (p := ck.find_resume(run_dir)) is not None:
        s = ck.load_checkpoint(p)
        m.load_state_dict(s["model"])
        opt.load_state_dict(s["optimizer"])
        ck.set_rng_state(s["rng"])
        start = s["epoch"] + 1
    for epoch in range(start, epochs):
        for _ in range(5):
            x = torch.randn(16, 4)  # draws from the global RNG, restored on resume
            loss = (m(x) - x.sum(1, keepdim=True)).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        ck.save_training_state(run_dir, {"model": m.state_dict(), "optimizer": opt.state_dict(),
                                         "epoch": epoch, "rng": ck.rng_state()})
        if stop_after is not None and epoch == stop_after:
            return m
    return m


def test_resume_is_exact(tmp_path):
    straight = _train(tmp_path / "a", epochs=4)
    _train(tmp_path / "b", epochs=4, stop_after=1)  # "crash" after epoch 1
    resumed = _train(tmp_path / "b", epochs=4)
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
