"""Stage 3b against the official FreeAvatar code (FuxiVirtualHuman/free_avatar at 6f2eb6f): the paper config
holds the official values and says where every value comes from, an official decoder state dict loads
exactly, the official embedding-loss reduction and warm-restart schedule are reproduced, a resumed run
continues exactly, and the demo config keeps its numerics.
"""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from animate.config import Emb2RigCommand
from common.config import ConfigError, load_config
from common.optim import LrSchedule, cosine_lr, warm_restarts_lr
from emb2rig.losses import LossConfig, compute_losses, perceptual_distance
from emb2rig.models import DecoderConfig, build_model
from emb2rig.official import load_official_decoder, load_pretrained, official_key_map
from tests.test_emb2rig import setup

PAPER, DEMO = "configs/configs_emb2rig_multi.yaml", "configs/demo/emb2rig.yaml"
Y, T = "configs_emb2rig_multi.yaml", "train_emb2rig_multichar.py"  # the official files
OFFICIAL = [  # (our key, official value, where the official code sets it)
    ("batch_size", 16, f"{Y} batch_size"),
    ("lr", 1e-5, f"{Y} lr"),
    ("optimizer", "adam", f"{T} L380 torch.optim.Adam"),
    ("betas", [0.0, 0.99], f"{T} L380 betas"),
    ("weight_decay", 0.0, f"{T} L380 (none)"),
    ("schedule", "warm_restarts", f"{T} L381 CosineAnnealingWarmRestarts, stepped per iteration L99"),
    ("restart_period", 500, f"{T} L381 T_0"),
    ("restart_mult", 2, f"{T} L381 T_mult"),
    ("min_lr", 1e-6, f"{T} L381 eta_min"),
    ("warmup_epochs", 0.0, f"{T} (no warm-up)"),
    ("steps_per_epoch", 500, f"{Y} train_step_per_epoch"),
    ("num_workers", 8, f"{T} L400"),
    ("seed", 101010, f"{Y} seed"),
    ("model.width", 512, f"{T} L339 linear_size"),
    ("model.blocks", 2, f"{T} L336 num_blocks"),
    ("model.dropout", 0.1, f"{T} L340 dropout"),
    ("model.norm", "batch", "models/CascadeNet.py BatchNorm1d"),
    ("model.block", "official", "models/CascadeNet.py ResidualBlock"),
    ("model.id_dim", 16, f"{Y} id_embedding_dim"),
    ("loss.weight_rig", 10.0, f"{Y} weight_rig"),
    ("loss.weight_pixel", 1.0, f"{Y} weight_img"),
    ("loss.weight_perceptual", 0.2, f"{Y} weight_emb"),
    ("loss.weight_gan", 0.0, f"{Y} weight_D"),
    ("loss.perceptual", "unit_feature", "models/mae_pipeline.py Pipeline_mae: F.normalize(pooled feature)"),
    ("loss.emb_reduction", "mean", f"{T} L387 nn.MSELoss"),
    ("disc.lr", 1e-6, f"{Y} lr_D"),
]


def get(cfg, dotted: str):
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


@pytest.mark.parametrize("key,value,source", OFFICIAL, ids=[k for k, _, _ in OFFICIAL])
def test_paper_config_holds_the_official_values(key, value, source):
    cfg = load_config(Emb2RigCommand, [PAPER])
    assert get(cfg, key) == value, f"{key}: official {value} ({source}), config {get(cfg, key)}"


def test_every_paper_config_value_says_where_it_comes_from():
    lines = Path(PAPER).read_text().split("\ntest:")[0].splitlines()
    bare = []
    for line in lines:
        m = re.match(r"^\s*(\w+):\s*([^#\s].*?)?\s*(#.*)?$", line)
        if not m or line.lstrip().startswith("#") or not (m.group(2) or "").strip():
            continue  # comments and section headers
        if not re.search(r"\((official: \S|paper|ours)", m.group(3) or ""):
            bare.append(m.group(1))
    assert not bare, f"values without (official: ...), (paper) or (ours: ...): {bare}"
    cfg = load_config(Emb2RigCommand, [PAPER])  # inputs chain from the previous stages' default outputs
    assert load_config(Emb2RigCommand, [PAPER, "mode=train"]).output_dir == "outputs/emb2rig"
    assert cfg.encoder == "outputs/expression/checkpoint-best.pth"  # configs/mae_train_expemb.yaml output_dir
    assert cfg.renderer == "outputs/rig2img/checkpoint-best.pth"  # configs/configs_rig2img.yaml output_dir


# ---- (b) an official FCModel state dict -------------------------------------------------------------------

D, W, ID, N_RIG, N_BLOCKS = 768, 512, 16, 67, 2  # official: 768-d pooled ViT-B feature, 67 controls


def official_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors with the names and shapes of the official FCModel (models/CascadeNet.py)."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g) * 0.05  # noqa: E731

    def bn(prefix):
        return {f"{prefix}.weight": 1 + r(W), f"{prefix}.bias": r(W), f"{prefix}.running_mean": r(W),
                f"{prefix}.running_var": 0.5 + torch.rand(W, generator=g), f"{prefix}.num_batches_tracked":
                torch.tensor(1000)}

    sd = {"embedding_layer.weight": torch.randn(10, ID, generator=g), "w1.weight": r(W, ID + D), "w1.bias": r(W),
          **bn("batch_norm1"), "w2.weight": r(N_RIG, W), "w2.bias": r(N_RIG)}
    for i in range(N_BLOCKS):
        p = f"res_blocks.{i}"
        sd.update({f"{p}.w1.weight": r(W, W), f"{p}.w1.bias": r(W), **bn(f"{p}.batch_norm1"),
                   f"{p}.w2.weight": r(W, W), f"{p}.w2.bias": r(W), **bn(f"{p}.batch_norm2")})
    return sd


def official_forward(sd: dict, feat: torch.Tensor, role: torch.Tensor) -> torch.Tensor:
    """The official FCModel in eval mode, written from its documented math: x = cat([id_emb, f]);
    y = Drop(ReLU(BN(W1 x))); per block y = y + Drop(ReLU(BN2(W2 Drop(ReLU(BN1(W1 y)))))); sigmoid(W2 y)."""
    def lbr(x, lin, bn):
        x = F.linear(x, sd[f"{lin}.weight"], sd[f"{lin}.bias"])
        x = F.batch_norm(x, sd[f"{bn}.running_mean"], sd[f"{bn}.running_var"], sd[f"{bn}.weight"], sd[f"{bn}.bias"])
        return F.relu(x)

    y = lbr(torch.cat([sd["embedding_layer.weight"][role], feat], 1), "w1", "batch_norm1")
    for i in range(N_BLOCKS):
        p = f"res_blocks.{i}"
        y = y + lbr(lbr(y, f"{p}.w1", f"{p}.batch_norm1"), f"{p}.w2", f"{p}.batch_norm2")
    return torch.sigmoid(F.linear(y, sd["w2.weight"], sd["w2.bias"]))


def our_model(id_dim: int = ID, block: str = "official", mean_prior: bool = False):
    torch.manual_seed(0)
    cfg = DecoderConfig(width=W, blocks=N_BLOCKS, block=block, id_dim=id_dim, id_hidden=8, mean_prior=mean_prior)
    means = [torch.full((n,), 0.3) for n in (N_RIG, 40, 20)]
    return build_model(torch.randn(3, D), [N_RIG, 40, 20], cfg, means)


OURS_ONLY = ["ids.mlp.0.bias", "ids.mlp.0.weight", "ids.mlp.1.bias", "ids.mlp.1.weight", "ids.mlp.3.bias",
             "ids.mlp.3.weight", "ids.ref_feats", "n_controls", "prior_logit"]


def test_official_decoder_loads_with_an_exact_report_and_the_same_outputs():
    sd, model = official_state_dict(), our_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = load_official_decoder(model, {"state_dict": sd})
    assert report["official_only"] == ["embedding_layer.weight"]
    assert report["not_in_official"] == OURS_ONLY and report["id_columns"] == "copied"
    assert report["loaded"] == sorted(official_key_map(N_BLOCKS).values()) and len(report["loaded"]) == 7 + 2 + 2 * 14
    assert set(sd) - {"embedding_layer.weight"} == set(official_key_map(N_BLOCKS))  # every other key maps
    for k in OURS_ONLY:  # left as built
        assert torch.equal(model.state_dict()[k], before[k]), k
    w = model.decoder.stem[0].weight  # ours [f | e_id], official [e_id | f]
    assert torch.equal(w[:, :D], sd["w1.weight"][:, ID:]) and torch.equal(w[:, D:], sd["w1.weight"][:, :ID])
    torch.testing.assert_close(report["embedding"], sd["embedding_layer.weight"])
    # the same feature and identity embedding give the official output
    feat, role = torch.randn(5, D), torch.tensor([0, 3, 9, 1, 0])
    with torch.no_grad():
        ours = model.eval().decoder(feat, sd["embedding_layer.weight"][role])
    torch.testing.assert_close(ours, official_forward(sd, feat, role), rtol=1e-5, atol=1e-6)


def test_official_decoder_with_another_identity_size_and_wrong_builds():
    sd, model = official_state_dict(), our_model(id_dim=8)
    init_id = model.decoder.stem[0].weight[:, D:].clone()
    report = load_official_decoder(model, sd)
    assert report["id_columns"] == "left at init" and report["prior_nonzero"] is False
    assert torch.equal(model.decoder.stem[0].weight[:, :D], sd["w1.weight"][:, ID:])
    assert torch.equal(model.decoder.stem[0].weight[:, D:], init_id)
    with pytest.raises(ValueError, match="model.block=official"):
        load_official_decoder(our_model(block="ours"), sd)
    with pytest.raises(ValueError, match=r"unexpected keys \['res_blocks.2.w1.weight'\], missing keys \[\]"):
        load_official_decoder(our_model(), {**sd, "res_blocks.2.w1.weight": torch.zeros(W, W)})
    short = {k: v for k, v in sd.items() if k != "w2.bias"}
    with pytest.raises(ValueError, match=r"missing keys \['w2.bias'\]"):
        load_official_decoder(our_model(), short)
    with pytest.raises(ValueError, match="w2.weight"):  # a head of another size
        load_official_decoder(our_model(), {**sd, "w2.weight": torch.zeros(60, W), "w2.bias": torch.zeros(60)})


def test_official_block_math_and_init():
    dec = our_model().decoder.eval()
    linears = [m for m in dec.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 2 + 2 * N_BLOCKS  # official init: Xavier-uniform weights, zero biases
    for m in linears:
        bound = (6 / (m.in_features + m.out_features)) ** 0.5
        assert (m.bias == 0).all() and m.weight.abs().max() <= bound and m.weight.abs().max() > 0.9 * bound
    blk, x = dec.blocks[0], torch.randn(4, W) - 3  # out = x + y, nothing after the add: negatives survive
    with torch.no_grad():
        y = blk.body(x)
        assert (y >= 0).all() and torch.equal(blk(x), x + y) and (blk(x) < 0).any()


def test_pretrained_official_file_loads_through_the_config_path(tmp_path, capsys):
    sd, model = official_state_dict(), our_model(mean_prior=True)
    torch.save({"state_dict": sd}, tmp_path / "emb2rig_multi_x.pt")
    load_pretrained(model, tmp_path / "emb2rig_multi_x.pt")
    out = capsys.readouterr().out
    assert "official decoder, 37 tensors loaded; official only: ['embedding_layer.weight']" in out
    assert "model.mean_prior=false" in out  # a non-zero prior is named: outputs differ from the official
    assert torch.equal(model.decoder.head.weight, sd["w2.weight"])


# ---- (c) the embedding loss reduction ---------------------------------------------------------------------

def test_emb_reduction_mean_is_the_official_mse_and_sum_over_16():
    torch.manual_seed(0)
    f_out, f_in = torch.randn(6, 24), torch.randn(6, 24)
    e_out, e_in = F.normalize(torch.randn(6, 16), dim=1), F.normalize(torch.randn(6, 16), dim=1)
    d = lambda **kw: perceptual_distance(f_out, e_out, f_in, e_in, LossConfig(**kw))  # noqa: E731
    assert torch.equal(d(emb_reduction="mean"), d(emb_reduction="sum") / 16)
    torch.testing.assert_close(d(emb_reduction="mean"), F.mse_loss(e_out, e_in), rtol=1e-6, atol=0)
    official = F.mse_loss(F.normalize(f_out, dim=1), F.normalize(f_in, dim=1))  # train L76 on Pipeline_mae output
    torch.testing.assert_close(d(perceptual="unit_feature"), official, rtol=1e-6, atol=0)
    assert not torch.allclose(d(perceptual="unit_feature"), d(perceptual="feature"))
    # through compute_losses: the perceptual term of 'mean' is exactly 1/16 of 'sum'
    frozen, model, disc, batch = setup()
    model.eval()
    w = dict(weight_rig=0.0, weight_pixel=0.0, weight_perceptual=1.0)
    mean = compute_losses(model, frozen, batch, LossConfig(**w, emb_reduction="mean"))[0]["perceptual"]
    total = compute_losses(model, frozen, batch, LossConfig(**w, emb_reduction="sum"))[0]["perceptual"]
    assert mean > 0 and torch.equal(mean, total / 16)


# ---- (d) warm restarts and exact resume -------------------------------------------------------------------

def test_warm_restarts_match_torch_cosine_annealing_warm_restarts():
    opt = torch.optim.Adam([nn.Parameter(torch.zeros(1))], lr=1e-5, betas=(0.0, 0.99))
    sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, 500, 2, 1e-6)
    cfg = load_config(Emb2RigCommand, [PAPER])
    torch_lr = []
    for _ in range(1501):
        torch_lr.append(opt.param_groups[0]["lr"])  # the lr of this optimiser step; scheduler steps after it
        sched.step()
    schedule = LrSchedule.from_config(cfg, 500)
    for s in (0, 1, 250, 499, 500, 501, 1499, 1500):
        ours = schedule(s)
        assert ours == pytest.approx(torch_lr[s], rel=1e-12, abs=1e-18), s
    assert warm_restarts_lr(500, 1.0, 0.0, 500, 2) == 1.0 and warm_restarts_lr(1500, 1.0, 0.0, 500, 2) == 1.0
    assert warm_restarts_lr(499, 1.0, 0.0, 500, 2) < 1e-4 and warm_restarts_lr(1499, 1.0, 0.0, 500, 2) < 1e-5


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from data.demo_world import make_world

    root = tmp_path_factory.mktemp("world")
    make_world(root, preset="tiny", seed=0)
    return root


def _run(world: Path, out: Path, monkeypatch, *extra: str):
    from emb2rig import main as main_mod
    from tests.test_emb2rig import stand_in_networks

    stand_in_networks(world, monkeypatch)
    args = [PAPER, f"output_dir={out}", f"data_root={world}", "epochs=3", "steps_per_epoch=3", "batch_size=8",
            "model.width=32", "val_samples=16", "restart_period=2", "precision=fp32", "num_workers=0",
            *extra]
    cfg = load_config(Emb2RigCommand, args)
    return main_mod, cfg


def test_warm_restarts_resume_exactly(world, tmp_path, monkeypatch):
    """Also with two DataLoader workers: the resumed run's weights equal the uninterrupted run's."""
    main_mod, cfg = _run(world, tmp_path / "straight", monkeypatch, "tensorboard=true", "num_workers=2")
    main_mod.main(cfg)
    main_mod, cfg2 = _run(world, tmp_path / "resumed", monkeypatch, "num_workers=2")
    main_mod.main(dataclasses.replace(cfg2, epochs=2))
    main_mod.main(cfg2)  # resumes at epoch 2
    read = lambda p: [json.loads(x) for x in (p / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    a, b = read(tmp_path / "straight"), read(tmp_path / "resumed")
    assert len(a) == len(b) == 3
    for ra, rb in zip(a, b):
        assert {k: v for k, v in ra.items() if k != "time_s"} == {k: v for k, v in rb.items() if k != "time_s"}
    # steps 2, 5, 8 end the epochs: the lr of step 8 is warm restarts (period 2, x2) from the step number alone
    assert a[-1]["lr"] == pytest.approx(warm_restarts_lr(8, cfg.lr, cfg.min_lr, 2, 2), rel=1e-12)
    wa = torch.load(tmp_path / "straight" / "checkpoint-last.pth", weights_only=False)["model"]
    wb = torch.load(tmp_path / "resumed" / "checkpoint-last.pth", weights_only=False)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert any((tmp_path / "straight" / "tb").glob("events.*"))  # tensorboard=true reaches the logger


# ---- (e) the demo config ----------------------------------------------------------------------------------

def test_demo_config_keeps_its_numerics():
    cfg = load_config(Emb2RigCommand, [DEMO])
    schedule = LrSchedule.from_config(cfg, cfg.steps_per_epoch)
    assert schedule.warmup_steps == 50
    total = cfg.steps_per_epoch * cfg.epochs  # 480; the schedule it was tuned with, counted in steps:
    assert [schedule(s) for s in range(total)] == pytest.approx([cosine_lr(s, total, 50, 1e-3, 1e-5)
                                                                 for s in range(total)], rel=1e-13, abs=0)
    assert (cfg.optimizer, cfg.betas, cfg.weight_decay, cfg.batch_size) == ("adamw", [0.9, 0.999], 1e-4, 32)
    assert (cfg.model.block, cfg.model.id_dim, cfg.loss.emb_reduction, cfg.loss.perceptual) == \
        ("ours", 64, "sum", "embedding")
    assert (cfg.loss.weight_perceptual, cfg.loss.weight_rig, cfg.loss.weight_pixel, cfg.loss.weight_gan) == \
        (0.25, 4.0, 1.0, 0.0)
    with pytest.raises(ConfigError, match="'warmup_steps' is now called 'warmup_epochs'"):
        load_config(Emb2RigCommand, [DEMO, "warmup_steps=50"])
