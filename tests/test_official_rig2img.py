"""Stage 3a against the official FreeAvatar code (FuxiVirtualHuman/free_avatar at 6f2eb6f): the paper
config's values, official generator weights, the region-loss normalisation, the warm-restart schedule."""
from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from common.config import ConfigError, load_config
from common.optim import warm_restarts_lr
from data.avatars import AvatarBatchSampler, AvatarRigDataset, load_avatars
from rig2img.config import Rig2ImgConfig
from rig2img.losses import compute_losses
from rig2img.main import main
from rig2img.models import RigGenerator, preset
from rig2img.official import convert_official_state_dict, load_official_generator, official_key_map, official_renderer
from tests.test_rig2img import write_avatar

torch.set_num_threads(2)
PAPER = "configs/configs_rig2img.yaml"

# (config key, official value, where it is in the official code)
OFFICIAL = [
    ("model.mode", "per_avatar", "train_rig2img.py L127-128: one Generator per character"),
    ("model.image_size", 256, "train_rig2img.py L140 Resize([256, 256])"),
    ("model.widths", [1024, 512, 256, 128, 128, 128], "models/DCGAN.py Generator L89-182 with ngf 128 (L127)"),
    ("model.out_bias", False, "models/DCGAN.py L135 tconv8 bias=False"),
    ("model.id_dim", 16, "configs_rig2img.yaml L18 id_embedding_dim"),
    ("seed", 101010, "configs_rig2img.yaml L23"),
    ("precision", "fp32", "train_rig2img.py: no autocast"),
    ("batch_size", 128, "configs_rig2img.yaml L6"),
    ("lr", 1e-5, "configs_rig2img.yaml L7, train_rig2img.py L144"),
    ("betas", [0.0, 0.99], "train_rig2img.py L144"),
    ("weight_decay", 0.0, "train_rig2img.py L144 (Adam without weight_decay)"),
    ("schedule", "warm_restarts", "train_rig2img.py L145 CosineAnnealingWarmRestarts, stepped per iteration L31"),
    ("restart_period", 500, "train_rig2img.py L145 T_0"),
    ("restart_mult", 2, "train_rig2img.py L145 T_mult"),
    ("min_lr", 1e-6, "train_rig2img.py L145 eta_min"),
    ("warmup_epochs", 0.0, "train_rig2img.py: no warm-up"),
    ("weight_image", 1.0, "configs_rig2img.yaml L13 weight_img, train_rig2img.py L23"),
    ("weight_region", 10.0, "configs_rig2img.yaml L14 weight_mouth, train_rig2img.py L24"),
    ("region_norm", "image", "train_rig2img.py L24 nn.L1Loss over the whole masked image"),
]

# the official Generator's state dict for n_rig inputs (models/DCGAN.py L89-182, ngf 128, nc 3)
WIDTHS = [1024, 512, 256, 128, 128, 128]


def official_shapes(n_rig: int) -> dict[str, tuple]:
    shapes, c_in = {}, n_rig
    for i, c in enumerate(WIDTHS, 1):
        shapes[f"tconv{i}.weight"] = (c_in, c, 4, 4)
        shapes.update({f"bn{i}.{k}": (c,) for k in ("weight", "bias", "running_mean", "running_var")})
        shapes[f"bn{i}.num_batches_tracked"] = ()
        c_in = c
    shapes["tconv8.weight"] = (128, 3, 4, 4)
    return shapes


class OfficialLayout(nn.Module):
    """A network with the official module names and computation, written from the facts above:
    relu(bn_i(tconv_i(x))) for i = 1..6 (4x4 ... 128x128), then sigmoid(tconv8(.)) at 256x256."""

    def __init__(self, n_rig: int):
        super().__init__()
        c_in = n_rig
        for i, c in enumerate(WIDTHS, 1):
            stride, pad = (1, 0) if i == 1 else (2, 1)
            setattr(self, f"tconv{i}", nn.ConvTranspose2d(c_in, c, 4, stride, pad, bias=False))
            setattr(self, f"bn{i}", nn.BatchNorm2d(c))
            c_in = c
        self.tconv8 = nn.ConvTranspose2d(c_in, 3, 4, 2, 1, bias=False)
        self.upsample = nn.Upsample(scale_factor=2)  # present upstream, unused and stateless

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, n_rig, 1, 1) -> (B, 3, 256, 256)
        for i in range(1, len(WIDTHS) + 1):
            x = torch.relu(getattr(self, f"bn{i}")(getattr(self, f"tconv{i}")(x)))
        return torch.sigmoid(self.tconv8(x))


@pytest.fixture(scope="module")
def official():
    torch.manual_seed(0)
    net = OfficialLayout(n_rig=5)
    for m in net.modules():  # non-trivial statistics so that a swapped BatchNorm shows in the output
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1), m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5), m.bias.data.uniform_(-0.1, 0.1), m.num_batches_tracked.fill_(7)
    return net.eval()


def test_paper_config_matches_the_official_recipe():
    cfg = load_config(Rig2ImgConfig, [PAPER])
    for key, value, where in OFFICIAL:
        got = cfg
        for part in key.split("."):
            got = getattr(got, part)
        assert got == value, f"{PAPER}: {key} = {got!r}, official {value!r} ({where})"
    assert preset("official").channels() == cfg.model.channels() == WIDTHS


def test_every_paper_config_value_says_where_it_comes_from():
    lines = [x for x in Path(PAPER).read_text().splitlines() if x.strip() and not x.lstrip().startswith("#")]
    for line in lines:
        if line.rstrip().endswith(":"):  # a section header such as `model:`
            continue
        assert re.search(r"#.*\((official: \S.*|paper|ours: \S.*)\)", line), f"{PAPER}: no provenance in {line!r}"
    official_keys = {k.split(".")[-1] for k, _, _ in OFFICIAL}
    for line in lines:
        key = line.split(":")[0].strip()
        if key in official_keys:
            assert "(official:" in line, f"{PAPER}: {key} is an official value; cite it"


def test_renamed_schedule_key_is_refused_with_its_new_name():
    with pytest.raises(ConfigError, match="'lr_schedule' is now called 'schedule'"):
        load_config(Rig2ImgConfig, [PAPER, "lr_schedule=cosine"])
    with pytest.raises(ConfigError, match="warmup_epochs"):
        load_config(Rig2ImgConfig, [PAPER, "warmup_epochs=-1"])
    with pytest.raises(ConfigError, match="model.widths"):
        load_config(Rig2ImgConfig, [PAPER, "model.image_size=128"])  # 6 widths need 256 px


def test_official_state_dict_loads_with_exact_report_and_same_output(official):
    sd = {"state_dict": official.state_dict()}  # what the official code saves (train_rig2img.py L49, L92)
    assert {k: tuple(v.shape) for k, v in sd["state_dict"].items()} == official_shapes(5)
    gen = load_official_generator(sd, n_rig=5)
    converted, report = convert_official_state_dict(sd, gen)
    assert report == {"missing": [], "unexpected": [], "shape_mismatch": []}
    key_map = official_key_map(gen)  # no official key without a counterpart, none of ours without one
    assert set(key_map) == set(sd["state_dict"]) and set(key_map.values()) == set(gen.state_dict())
    rig = torch.rand(1, 5)
    with torch.no_grad():
        want = official(rig.view(1, 5, 1, 1))  # (1, n_rig) -> (1, n_rig, 1, 1) as upstream feeds it
        torch.testing.assert_close(gen(rig), want, atol=1e-6, rtol=1e-5)
        r = official_renderer(sd, "hero", [f"c{i}" for i in range(5)])
        torch.testing.assert_close(r(rig, "hero"), want, atol=1e-6, rtol=1e-5)
    assert want.shape == (1, 3, 256, 256) and not r.training


def test_official_loader_names_what_does_not_fit(official):
    sd = dict(official.state_dict())
    sd["tconv7.weight"] = torch.zeros(128, 128, 4, 4)  # commented out upstream: no counterpart here
    del sd["bn3.running_var"]
    sd["bn5.bias"] = torch.zeros(64)
    gen = RigGenerator(5, preset("official"))
    _, report = convert_official_state_dict(sd, gen)
    assert report == {"missing": ["net.13.bias", "net.7.running_var"], "unexpected": ["tconv7.weight"],
                      "shape_mismatch": ["bn5.bias: (64,) vs (128,)"]}
    with pytest.raises(ValueError, match=r"missing \['net.13.bias', 'net.7.running_var'\], unexpected \['tconv7"):
        load_official_generator(sd)
    with pytest.raises(ValueError, match="takes 5 rig values"):
        load_official_generator(official.state_dict(), n_rig=6)
    _, report = convert_official_state_dict(official.state_dict(), RigGenerator(5, preset("official", out_bias=True)))
    assert report["missing"] == ["net.18.bias"] and not report["unexpected"]


def test_region_norm_image_is_the_official_masked_l1_and_box_the_in_box_mean():
    torch.manual_seed(0)
    pred, target = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    region = torch.zeros(2, 1, 16, 16)
    region[0, :, 2:5, 3:9] = 1
    region[1, :, 8:12, 1:4] = 1
    mask = region.expand(-1, 3, -1, -1)
    official = nn.L1Loss()(pred * mask, target * mask)  # train_rig2img.py L24: mean over B x 3 x H x W
    image = compute_losses(pred, target, region, 1.0, 10.0, "image")
    torch.testing.assert_close(image["region_term"], official)
    torch.testing.assert_close(image["loss"], nn.L1Loss()(pred, target) + 10 * official)
    box = compute_losses(pred, target, region, 1.0, 10.0, "box")
    in_box = torch.cat([(pred - target)[0, :, 2:5, 3:9].flatten(), (pred - target)[1, :, 8:12, 1:4].flatten()])
    torch.testing.assert_close(box["region_term"], in_box.abs().mean())
    torch.testing.assert_close(box["region_l1"], image["region_l1"])  # the metric does not depend on the switch
    assert image["region_term"] < 0.2 * box["region_term"]  # boxes cover 30 of 256 pixels


@pytest.mark.parametrize("period, mult, steps, restarts", [(500, 2, (0, 499, 500, 1499, 1500), [500, 1500]),
                                                           (7, 1, (0, 6, 7, 13, 14, 29), [7, 14, 21, 28])])
def test_warm_restarts_follow_torch_scheduler(period, mult, steps, restarts):
    opt = torch.optim.Adam([nn.Parameter(torch.zeros(1))], lr=1e-5, betas=(0.0, 0.99))
    sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, period, mult, 1e-6)
    torch_lr = []
    for _ in range(max(steps) + 1):  # the lr of iteration s is the lr after s scheduler steps
        torch_lr.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    for s in steps:
        assert warm_restarts_lr(s, 1e-5, 1e-6, period, mult) == pytest.approx(torch_lr[s], rel=1e-12, abs=1e-18), s
    ours = [warm_restarts_lr(s, 1e-5, 1e-6, period, mult) for s in range(max(steps) + 1)]
    assert [s for s in range(1, len(ours)) if ours[s] > ours[s - 1]] == restarts
    assert [s for s in range(1, len(ours)) if torch_lr[s] > torch_lr[s - 1]] == restarts


def test_warm_restarts_run_resumes_exactly(tmp_path):
    world = tmp_path / "avatars"
    for k, name in enumerate(("robot", "cat")):
        write_avatar(world / name, name, 24, seed=k)
    args = ["configs/demo/rig2img.yaml", f"data_root={world}", "model.image_size=16", "model.base_channels=4",
            "model.max_channels=16", "batch_size=8", "lr=0.003", "val_fraction=0.25", "grid_samples=1",
            "schedule=warm_restarts", "restart_period=2", "restart_mult=2", "min_lr=0.0001", "warmup_epochs=0",
            "region_norm=image"]
    main(load_config(Rig2ImgConfig, [*args, f"output_dir={tmp_path / 'straight'}", "epochs=2", "tensorboard=true"]))
    for epochs in (1, 2):
        main(load_config(Rig2ImgConfig, [*args, f"output_dir={tmp_path / 'resumed'}", f"epochs={epochs}"]))
    runs = {}
    for name in ("straight", "resumed"):
        runs[name] = [json.loads(x) for x in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        state = torch.load(tmp_path / name / "checkpoint-last.pth", weights_only=True)
        runs[name + "_model"] = state["model"]
    for a, b in zip(runs["straight"], runs["resumed"], strict=True):
        assert (a["train/loss"], a["lr"], a["val/psnr"]) == (b["train/loss"], b["lr"], b["val/psnr"])
    assert all(torch.equal(v, runs["resumed_model"][k]) for k, v in runs["straight_model"].items())
    if importlib.util.find_spec("tensorboard"):
        assert any((tmp_path / "straight" / "tb").iterdir()) and not (tmp_path / "resumed" / "tb").exists()
    ds = AvatarRigDataset(load_avatars(world), 16, "train", 0.25)
    n = len(AvatarBatchSampler(ds.avatar, 8, 0, 1, seed=0))  # steps per epoch
    for epoch, rec in enumerate(runs["straight"]):  # the last step's lr, from the step number alone
        assert rec["lr"] == warm_restarts_lr(epoch * n + n - 1, 0.003, 0.0001, 2, 2)
        assert rec["train/region_term"] < 0.5 * rec["train/region_l1"]  # 'image' normalisation reached the loss
