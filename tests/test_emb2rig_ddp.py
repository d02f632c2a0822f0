"""Stage 3b with the GAN term under DDP (two CPU processes, gloo): a step on which one rank's batch holds no
avatar render still runs every collective on every rank (no hang), the ranks end with the same decoder and
discriminator weights, and they return the same metric keys and values. And, in one process, the zero
discriminator loss of a render-less batch reaches every discriminator parameter (as DDP's reducer needs).

Each rank runs `emb2rig.main.main` on the tiny demo world through the stand-in frozen networks of
tests/test_emb2rig.py, patched in by the child process itself (pytest's monkeypatch does not reach it).
"""
from __future__ import annotations

import multiprocessing
import os
import socket
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 120  # a hang fails the test instead of blocking it
BATCH, STEPS, EPOCHS = 2, 6, 2  # two samples a batch: ~10 % of the batches hold no avatar render


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, data_root: str, out: str) -> None:
    """One rank: patch in the stand-in networks, record each training batch's render flag and each epoch's
    metrics and weights, run stage 3b, and save what was recorded to `out`/rank{rank}.pth."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      LOCAL_WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    sys.path.insert(0, str(ROOT / "tests"))
    from test_emb2rig import stand_in_networks

    from animate.config import Emb2RigCommand
    from common.config import load_config
    from common.dist import unwrap
    from emb2rig import engine
    from emb2rig import main as main_mod

    torch.set_num_threads(1)
    stand_in_networks(Path(data_root), pytest.MonkeyPatch())  # seeded: the same stand-ins on every rank
    rec = {"has_render": [], "train": [], "val": [], "model": None, "disc": None}
    prepare, train, evaluate = engine.prepare_batch, main_mod.train_one_epoch, main_mod.evaluate

    def prepare_batch(raw, *args):
        if torch.is_grad_enabled():  # a training step (evaluate runs under no_grad)
            rec["has_render"].append(bool((raw["source"] >= 0).any()))
        return prepare(raw, *args)

    def train_one_epoch(model, disc, *args):
        stats = train(model, disc, *args)
        rec["train"].append(stats)
        rec["model"], rec["disc"] = unwrap(model).state_dict(), unwrap(disc).state_dict()
        return stats

    def evaluate_(*args):
        rec["val"].append(stats := evaluate(*args))
        return stats

    engine.prepare_batch, main_mod.train_one_epoch, main_mod.evaluate = prepare_batch, train_one_epoch, evaluate_
    args = ["configs/demo/emb2rig.yaml", f"output_dir={out}/run", f"data_root={data_root}", "device=cpu",
            f"epochs={EPOCHS}", f"steps_per_epoch={STEPS}", f"batch_size={BATCH}", "targets_per_sample=2",
            "val_samples=16", "model.width=32", "loss.weight_gan=0.1", "disc.channels=8"]
    main_mod.main(load_config(Emb2RigCommand, args))
    torch.save(rec, f"{out}/rank{rank}.pth")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    from data.demo_world import make_world

    root = tmp_path_factory.mktemp("ddp") / "world"
    make_world(root, preset="tiny", seed=0)
    return root


def test_gan_step_with_a_renderless_rank_neither_hangs_nor_diverges(world, tmp_path):
    ctx = multiprocessing.get_context("spawn")
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, 2, port, str(world), str(tmp_path))) for r in (0, 1)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + TIMEOUT_S
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    hung = [p.pid for p in procs if p.is_alive()]
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()
    assert not hung, f"ranks still running after {TIMEOUT_S} s (a collective only some ranks reached?)"
    assert [p.exitcode for p in procs] == [0, 0], "a rank failed (its traceback is in the captured stderr)"
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pth", weights_only=False) for r in (0, 1))
    # the arrangement really has a step where one rank holds renders and the other none
    flags = list(zip(r0["has_render"], r1["has_render"]))
    assert len(flags) == EPOCHS * STEPS
    assert any(a != b for a, b in flags), f"no step with a render-less batch on just one rank: {flags}"
    for net in ("model", "disc"):
        for k, v in r0[net].items():
            assert torch.equal(v, r1[net][k]), f"ranks diverged: {net}.{k}"
    for split in ("train", "val"):
        assert r0[split] == r1[split], f"{split} metrics differ between ranks"
    assert all("train/disc" in s and "train/gan" in s for s in r0["train"])


def test_renderless_zero_loss_gives_every_discriminator_parameter_a_zero_gradient():
    sys.path.insert(0, str(ROOT / "tests"))
    from test_emb2rig import setup

    from emb2rig.losses import discriminator_loss

    frozen, model, disc, batch = setup()
    faces = batch["source"] < 0
    fake = torch.rand(int(faces.sum()) * 2, 3, 16, 16)
    loss = discriminator_loss(disc, frozen, {k: v[faces] for k, v in batch.items()}, fake, empty_zero=True)
    assert loss.item() == 0
    loss.backward()
    assert all(p.grad is not None and not p.grad.any() for p in disc.parameters())
