"""Stage-1 training: exact resume, two-process torchrun on CPU, non-finite loss, unreadable images,
config errors. Tiny preset on a folder of small random PNGs written by the test."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from common.checkpoint import load_checkpoint
from common.config import load_config
from mae_pretrain import build_mae, load_mae_checkpoint
from mae_pretrain.config import MAEPretrainConfig
from mae_pretrain.main import main

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> Path:
    """16 training and 4 held-out 64 px 'faces' (smooth random blobs, so they are learnable)."""
    root = tmp_path_factory.mktemp("faces")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:64, 0:64] / 63.0
    for split, n in (("train", 16), ("test", 4)):
        for i in range(n):
            c = rng.uniform(0.2, 0.8, size=(3, 3))
            img = c[0] * (1 - xx[..., None]) + c[1] * yy[..., None] + c[2] * (xx * yy)[..., None]
            (root / split / f"a{i % 2}").mkdir(parents=True, exist_ok=True)
            Image.fromarray((img.clip(0, 1) * 255).astype(np.uint8)).save(root / split / f"a{i % 2}" / f"{i}.png")
    return root


def _cfg(faces: Path, out: Path, *extra: str) -> MAEPretrainConfig:
    args = [f"output_dir={out}", f"train_roots=[{faces / 'train'}]", f"val_roots=[{faces / 'test'}]",
            "model=mae_vit_tiny_patch8_64", "device=cpu", "precision=fp32", "epochs=2", "batch_size=4",
            "num_workers=0", "warmup_epochs=1", "blr=1e-3", "grid_samples=2", "seed=3", *extra]
    return load_config(MAEPretrainConfig, args)


def test_resume_reaches_same_weights(faces, tmp_path):
    """With crops and flips drawn in two persistent DataLoader workers (per-sample seeds, common/seeding.py)."""
    straight = main(_cfg(faces, tmp_path / "a", "num_workers=2"))
    part = main(_cfg(faces, tmp_path / "b", "stop_after_epochs=1", "num_workers=2"))
    assert part["epochs"] == 1
    resumed = main(_cfg(faces, tmp_path / "b", "num_workers=2"))
    assert straight["epochs"] == resumed["epochs"] == 2
    sa = load_checkpoint(tmp_path / "a" / "checkpoint-last.pth")["model"]
    sb = load_checkpoint(tmp_path / "b" / "checkpoint-last.pth")["model"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert resumed["heldout_loss_last"] == straight["heldout_loss_last"]
    assert resumed["heldout_loss_first"] == straight["heldout_loss_first"]
    # Artefacts, official key layout for stage 2, and "already complete" on a finished run.
    for name in ("metrics.jsonl", "curves.png", "recon_epoch000.png", "recon_epoch002.png", "summary.json"):
        assert (tmp_path / "a" / name).is_file(), name
    ckpt = tmp_path / "a" / "checkpoint-last.pth"
    missing, unexpected = load_mae_checkpoint(build_mae("mae_vit_tiny_patch8_64"), ckpt)
    assert not missing and not unexpected
    assert main(_cfg(faces, tmp_path / "a"))["epochs"] == 2


def test_bf16_cpu_attention_matches_sdpa():
    from mae_pretrain.models_mae import Attention

    torch.manual_seed(0)
    attn, x = Attention(64, 4), torch.randn(2, 17, 64)
    ref = attn(x)  # fp32: fused SDPA
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attn(x)  # bf16 on CPU: explicit GEMMs with an fp32 softmax
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, atol=3e-2, rtol=3e-2)


def test_unreadable_image_is_skipped_and_counted(faces, tmp_path):
    bad = tmp_path / "faces"
    (bad / "x").mkdir(parents=True)
    for p in sorted((faces / "train").rglob("*.png"))[:7]:
        (bad / "x" / p.name).write_bytes(p.read_bytes())
    (bad / "x" / "broken.png").write_bytes(b"not a png")
    out = main(_cfg(faces, tmp_path / "run", f"train_roots=[{bad}]", "epochs=1", "batch_size=8"))
    rec = [json.loads(s) for s in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rec[-1]["train/skipped_images"] == 1 and out["epochs"] == 1


def test_non_finite_loss_stops_with_step(faces, tmp_path, monkeypatch):
    from mae_pretrain import models_mae

    real = models_mae.MaskedAutoencoderViT.forward_loss
    calls = {"n": 0}

    def nan_at_third(self, imgs, pred, mask):
        calls["n"] += 1 if self.training else 0
        loss = real(self, imgs, pred, mask)
        return loss * float("nan") if self.training and calls["n"] == 3 else loss

    monkeypatch.setattr(models_mae.MaskedAutoencoderViT, "forward_loss", nan_at_third)
    with pytest.raises(FloatingPointError, match="at step 2"):
        main(_cfg(faces, tmp_path / "nan", "epochs=1"))


def test_bad_config_key_exits_nonzero(tmp_path):
    r = subprocess.run([sys.executable, "pretrain_mae.py", "configs/demo/mae_pretrain.yaml", "mask_ratoi=0.5"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "mask_ratio" in r.stderr


def test_two_process_torchrun_on_cpu(faces, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone", "pretrain_mae.py",
           "configs/demo/mae_pretrain.yaml", f"output_dir={out}", f"train_roots=[{faces / 'train'}]",
           f"val_roots=[{faces / 'test'}]", "device=cpu", "precision=fp32", "epochs=1", "batch_size=4",
           "num_workers=0", "grid_samples=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert (out / "checkpoint-last.pth").is_file()
    rec = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    assert rec[-1]["epoch"] == 1 and np.isfinite(rec[-1]["train/train_loss"])
    assert load_checkpoint(out / "checkpoint-last.pth")["epoch"] == 0  # the last finished epoch, 0-based


def test_a_new_run_starts_from_a_public_encoder_file_with_a_fresh_decoder(faces, tmp_path, capsys):
    """`pretrained=` (official `{'model': ...}`, encoder only as mae_pretrain_vit_base.pth): the encoder
    starts from the file, the decoder from its own init, and the report says so; TensorBoard on."""
    torch.manual_seed(7)
    src = build_mae("mae_vit_tiny_patch8_64")
    encoder_only = {k: v for k, v in src.state_dict().items() if not k.startswith(("decoder_", "mask_token"))}
    torch.save({"model": encoder_only}, tmp_path / "public.pth")
    main(_cfg(faces, tmp_path / "run", "epochs=1", "blr=0", f"pretrained={tmp_path / 'public.pth'}",
              "tensorboard=true"))
    out = capsys.readouterr().out
    n_dec = sum(k.startswith(("decoder_", "mask_token")) for k in src.state_dict())
    assert f"{n_dec} keys missing ({n_dec} of the decoder, which starts fresh), 0 unexpected" in out
    trained = load_checkpoint(tmp_path / "run" / "checkpoint-last.pth")["model"]  # lr 0: weights as loaded
    assert all(torch.equal(trained[k], v) for k, v in encoder_only.items())
    assert any((tmp_path / "run" / "tb").iterdir())


def test_loss_keeps_float64_and_passes_gradcheck():
    torch.manual_seed(0)
    mae = build_mae("mae_vit_tiny_patch8_64").double()
    imgs = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    loss, pred, mask = mae(imgs, noise=torch.rand(2, 64, dtype=torch.float64))
    assert loss.dtype == torch.float64
    pred = pred.detach().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p: mae.forward_loss(imgs, p, mask), (pred,))


# The official MAE recipe for ViT pre-training (facebookresearch/mae PRETRAIN.md and main_pretrain.py; the
# FreeAvatar repository ships an unchanged copy and no face-specific stage-1 values), per config key.
MAE_RECIPE = {"model": "mae_vit_base_patch16", "epochs": 800, "batch_size": 64, "blr": 1.5e-4, "min_lr": 0.0,
              "weight_decay": 0.05, "warmup_epochs": 40, "mask_ratio": 0.75, "norm_pix_loss": True,
              "scale_min": 0.2}


def test_paper_stage1_config_is_the_official_mae_recipe():
    cfg = load_config(MAEPretrainConfig, [str(ROOT / "configs/mae_pretrain.yaml")])
    assert {k: getattr(cfg, k) for k in MAE_RECIPE} == MAE_RECIPE
    assert cfg.batch_size * cfg.accum_iter * 8 == 4096  # the MAE effective batch on 8 GPUs
    lines = [ln for ln in (ROOT / "configs/mae_pretrain.yaml").read_text().splitlines()
             if ln and not ln.startswith((" ", "#"))]
    recipe = [ln for ln in lines if ln.split(":")[0] in MAE_RECIPE]
    assert all("(MAE" in ln or "(paper" in ln for ln in recipe), [ln for ln in recipe if "(MAE" not in ln]
    assert all("# (" in ln for ln in lines), [ln for ln in lines if "# (" not in ln]  # every value: a source


def test_a_diverging_run_stops_with_its_message_and_keeps_checkpoint_best(faces, tmp_path, monkeypatch):
    """The last step of an epoch leaves non-finite weights behind (its own loss was still finite, so the
    training-loss check cannot see it): the held-out loss is NaN and the run stops before saving."""
    import mae_pretrain.main as mae_main

    main(_cfg(faces, tmp_path / "run", "epochs=1"))
    best = (tmp_path / "run" / "checkpoint-best.pth").read_bytes()
    last = (tmp_path / "run" / "checkpoint-last.pth").read_bytes()
    real = mae_main.train_one_epoch

    def diverging(model, *args, **kwargs):
        stats = real(model, *args, **kwargs)
        with torch.no_grad():
            next(model.parameters()).fill_(float("nan"))
        return stats

    monkeypatch.setattr(mae_main, "train_one_epoch", diverging)
    with pytest.raises(FloatingPointError, match="epoch 2: non-finite heldout_loss, weights"):
        main(_cfg(faces, tmp_path / "run", "epochs=2"))
    assert (tmp_path / "run" / "checkpoint-best.pth").read_bytes() == best
    assert (tmp_path / "run" / "checkpoint-last.pth").read_bytes() == last


def test_stop_if_diverged_names_what_went_non_finite(tmp_path):
    from common.checkpoint import stop_if_diverged

    net = torch.nn.Linear(2, 2)
    stop_if_diverged(tmp_path, 3, net, {"heldout_loss": 0.5, "note": "text"})  # finite: nothing happens
    with pytest.raises(FloatingPointError, match=r"epoch 3: non-finite heldout_loss; stopping without saving"):
        stop_if_diverged(tmp_path, 3, net, {"heldout_loss": float("nan")})
    with torch.no_grad():
        net.bias[0] = float("inf")
    with pytest.raises(FloatingPointError, match=r"non-finite weights \(bias\)"):
        stop_if_diverged(tmp_path, 3, net, {"heldout_loss": 0.5})
