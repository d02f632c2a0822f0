"""Stage 3a: avatar-format reader, renderer modes, losses, the frozen differentiable renderer."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from common.config import load_config
from data.avatars import AvatarBatchSampler, AvatarFormatError, AvatarRigDataset, box_mask, load_avatars, read_avatar
from data.demo_world.avatar_art import render_avatar
from data.demo_world.avatars import AVATARS
from rig2img import load_renderer
from rig2img.config import Rig2ImgConfig
from rig2img.losses import compute_losses
from rig2img.main import main
from rig2img.models import build_renderer, preset

torch.set_num_threads(2)
ROWS = 24
TINY = ["model.image_size=16", "model.base_channels=4", "model.max_channels=16", "model.id_dim=4",
        "batch_size=8", "lr=0.003", "val_fraction=0.25", "grid_samples=3"]


def write_avatar(folder: Path, name: str, rows: int, size: int = 16, seed: int = 0) -> None:
    """One avatar folder in the product format, rendered by the demo world's drawing code."""
    spec, rng = AVATARS[name], np.random.default_rng(seed)
    (folder / "img").mkdir(parents=True)
    with (folder / "rigs.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", *spec["controls"]])
        for i in range(rows):
            rig = rng.uniform(0, 1, len(spec["controls"])).astype(np.float32)
            Image.fromarray(render_avatar(name, rig, size)).save(folder / "img" / f"{i}.png")
            w.writerow([f"img/{i}.png", *[f"{v:.4f}" for v in rig]])
    meta = {"display_name": name, "controls": spec["controls"], "image_size": size,
            "eye_boxes": spec["eye_boxes"], "mouth_box": spec["mouth_box"]}
    (folder / "avatar.yaml").write_text(yaml.safe_dump(meta))


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("avatars")
    for k, name in enumerate(("robot", "cat", "alien")):  # 12, 18, 26 controls
        write_avatar(root / name, name, ROWS, seed=k)
    return root


def cfg_for(world: Path, out: Path, *extra: str) -> Rig2ImgConfig:
    return load_config(Rig2ImgConfig, ["configs/demo/rig2img.yaml", f"data_root={world}", f"output_dir={out}",
                                       *TINY, *extra])


@pytest.fixture(scope="module")
def shared_run(world, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "shared"
    main(cfg_for(world, out, "model.mode=shared", "epochs=2"))
    return out


def test_configs_load():
    paper = load_config(Rig2ImgConfig, ["configs/configs_rig2img.yaml"])
    assert (paper.model.image_size, paper.lr, paper.betas, paper.weight_region) == (256, 1e-5, [0.0, 0.99], 10.0)
    demo = load_config(Rig2ImgConfig, ["configs/demo/rig2img.yaml"])
    assert demo.model.image_size == 64 and demo.data_root == "outputs/demo/world/avatars"
    # the demo keeps the numerics it was tuned with where the defaults now follow the official code
    assert (demo.region_norm, demo.schedule, demo.model.out_bias, demo.model.channels()) == \
        ("box", "cosine", True, [128, 128, 64, 32])
    with pytest.raises(Exception, match="model.mode"):
        load_config(Rig2ImgConfig, ["configs/demo/rig2img.yaml", "model.mode=both"])


@pytest.mark.parametrize("size", [16, 32, 256])
def test_output_size_sets_upsampling_stages(size):
    net = build_renderer([3, 5], preset("tiny", image_size=size, mode="shared"))
    out = net(torch.rand(2, 5), torch.ones(2, 5), torch.tensor([0, 1]))
    assert out.shape == (2, 3, size, size) and 0 <= out.min() and out.max() <= 1


def _edit_first_row(edit):
    def fix(text: str) -> str:
        header, first, *rest = text.split("\n")
        return "\n".join([header, ",".join(edit(first.split(","))), *rest])
    return fix


@pytest.mark.parametrize("fix, message", [
    (_edit_first_row(lambda c: c[:-1]), "line 2: 18 columns, expected 19"),  # a missing column
    (_edit_first_row(lambda c: [c[0], "1.7", *c[2:]]), r"line 2: rig values must lie in \[0, 1\]"),
    (_edit_first_row(lambda c: [c[0], "abc", *c[2:]]), "line 2: rig values must be numbers"),
    (_edit_first_row(lambda c: ["img/missing.png", *c[1:]]), "image 'img/missing.png' not found"),
])
def test_reader_errors_name_the_file(tmp_path, fix, message):
    write_avatar(tmp_path / "cat", "cat", 4)
    rigs = tmp_path / "cat" / "rigs.csv"
    rigs.write_text(fix(rigs.read_text()))
    with pytest.raises(AvatarFormatError, match=message) as e:
        read_avatar(tmp_path / "cat")
    assert "rigs.csv" in str(e.value)


def test_reader_checks_avatar_yaml(tmp_path):
    write_avatar(tmp_path / "cat", "cat", 2)
    meta = tmp_path / "cat" / "avatar.yaml"
    meta.write_text(meta.read_text().replace("mouth_box", "mouth"))
    with pytest.raises(AvatarFormatError, match="avatar.yaml: missing key 'mouth_box'"):
        read_avatar(tmp_path / "cat")


def test_split_is_deterministic_and_disjoint(world):
    avatars = load_avatars(world, ["robot", "cat", "alien"])
    train, val = (AvatarRigDataset(avatars, 16, s, 0.25) for s in ("train", "val"))
    assert len(train) + len(val) == 3 * ROWS and len(val) > 0
    again = AvatarRigDataset(avatars, 16, "val", 0.25)
    assert torch.equal(val.rig, again.rig) and val[0]["image"].dtype == torch.uint8
    assert train.rig.shape[1] == 26 and val.mask.sum(1).tolist() == [len(avatars[a].controls) for a in val.avatar]


def test_avatar_batches_hold_one_avatar_and_ranks_stay_in_step(world):
    ds = AvatarRigDataset(load_avatars(world), 16, "all")
    shards = [list(AvatarBatchSampler(ds.avatar, 4, rank, 2, seed=1)) for rank in (0, 1)]
    assert len(shards[0]) == len(shards[1]) > 0
    for b0, b1 in zip(*shards):
        assert len(set(ds.avatar[b0].tolist())) == 1 and ds.avatar[b0[0]] == ds.avatar[b1[0]]
        assert not set(b0) & set(b1)


def test_every_loss_weight_is_applied():
    pred, target = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    region = torch.zeros(2, 1, 8, 8)
    region[..., 2:5, 2:6] = 1
    base = compute_losses(pred, target, region, 1.0, 0.0, "box")
    assert torch.isclose(base["loss"], base["l1"])
    only_region = compute_losses(pred, target, region, 0.0, 10.0, "box")
    assert torch.isclose(only_region["loss"], 10 * only_region["region_term"])
    assert torch.equal(only_region["region_term"], only_region["region_l1"])
    inside = (pred - target).abs()[..., 2:5, 2:6].mean()
    assert torch.isclose(only_region["region_l1"], inside)


def test_shared_mode_trains_avatars_of_different_rig_sizes_together(world):
    ds = AvatarRigDataset(load_avatars(world), 16, "all")
    batch = ds.__getitems__(list(range(0, len(ds), 4)))
    sizes = {int(m.sum()) for m in batch["mask"]}
    assert sizes == {12, 18, 26}  # one batch mixes all three rig sizes
    torch.manual_seed(0)
    net = build_renderer([12, 18, 26], preset("tiny", mode="shared"))
    opt = torch.optim.Adam(net.parameters(), 3e-3, betas=(0.0, 0.99))
    target = batch["image"].float() / 255
    regions = torch.zeros(len(target), 1, 16, 16)
    losses = []
    for _ in range(30):
        loss = compute_losses(net(batch["rig"], batch["mask"], batch["avatar"]), target, regions, 1.0, 0.0)["loss"]
        opt.zero_grad()
        loss.backward()
        if not losses:
            assert (net.id_embed.weight.grad.abs().sum(1) > 0).all()  # every avatar's identity row learns
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_shared_run_writes_results_and_load_renderer_is_frozen_but_differentiable(shared_run):
    assert (shared_run / "grid_epoch001.png").is_file() and (shared_run / "curves.png").is_file()
    summary = json.loads((shared_run / "summary.json").read_text())
    assert set(summary["avatars"]) == {"alien", "cat", "robot"} and "val/cat/psnr" in summary["final"]
    r = load_renderer(shared_run / "checkpoint-last.pth")
    assert r.image_size == 16 and r.controls["cat"] == AVATARS["cat"]["controls"] and not r.training
    rig = torch.rand(2, 18, requires_grad=True)
    img = r(rig, "cat")
    assert img.shape == (2, 3, 16, 16) and 0 <= img.min() and img.max() <= 1
    img.mean().backward()
    assert all(not p.requires_grad and p.grad is None for p in r.parameters())
    assert rig.grad is not None and rig.grad.abs().sum() > 0
    r.train()  # e.g. called by a stage-3b model that holds the renderer
    assert not r.training and torch.allclose(r.render(rig, "cat"), img)
    e_id = r.identity_embedding("cat")  # identity injection from outside gives the same image
    assert e_id.shape == (4,) and torch.allclose(r(rig, "cat", e_id=e_id), img, atol=1e-6)
    mixed = r.render_padded(torch.nn.functional.pad(rig, (0, 8)), torch.tensor([1, 1]))
    assert torch.allclose(mixed, img, atol=1e-6)


def test_wrong_rig_length_is_refused(shared_run):
    r = load_renderer(shared_run / "checkpoint-best.pth")
    with pytest.raises(ValueError, match=r"avatar 'alien' expects a rig of length 26.*length 18"):
        r(torch.rand(1, 18), "alien")
    with pytest.raises(KeyError, match="unknown avatar 'dog'"):
        r(torch.rand(1, 18), "dog")


def test_per_avatar_run_resumes_and_finishes(world, tmp_path, capsys):
    out = tmp_path / "pa"
    main(cfg_for(world, out, "epochs=1"))
    first = torch.load(out / "checkpoint-last.pth", weights_only=True)["model"]
    main(cfg_for(world, out, "epochs=2"))
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [0, 1] and "resumed" in capsys.readouterr().out
    r = load_renderer(out / "checkpoint-last.pth")
    assert r.mode == "per_avatar" and r.id_dim == 0 and len(r.net.gens) == 3
    assert any(not torch.equal(first[k], v) for k, v in r.net.state_dict().items())
    with pytest.raises(ValueError, match="shared"):
        r(torch.rand(1, 12), "robot", e_id=torch.zeros(4))
    done = json.loads((out / "summary.json").read_text())
    assert main(cfg_for(world, out, "epochs=2")) == done and "already complete" in capsys.readouterr().out


def test_folding_batchnorm_keeps_images_and_rig_gradients(shared_run):
    from animate.inference import fold_batchnorm_

    r = load_renderer(shared_run / "checkpoint-last.pth")
    for m in r.modules():  # trained statistics are close to the identity; make the folding matter
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.3, 3.0), m.bias.uniform_(-0.3, 0.3)
    rig = torch.rand(3, 18, requires_grad=True)
    img = r(rig, "cat")
    (grad,) = torch.autograd.grad(img.square().sum(), rig)
    n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in r.modules())
    assert n_bn > 0 and fold_batchnorm_(r) == n_bn  # animate's inference numerics
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in r.modules())
    assert all(not p.requires_grad for p in r.parameters()) and not r.training
    folded = r(rig, "cat")
    torch.testing.assert_close(folded, img, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(torch.autograd.grad(folded.square().sum(), rig)[0], grad, atol=1e-4, rtol=1e-3)


def test_region_decoders_repaint_only_their_boxes():
    boxes = [[[0.1, 0.2, 0.45, 0.5], [0.55, 0.2, 0.9, 0.5], [0.25, 0.6, 0.75, 0.9]]]
    net = build_renderer([6], preset("tiny", region_patch=8), boxes).eval()
    rig = torch.rand(3, 6, requires_grad=True)
    img = net(rig, torch.ones(3, 6), torch.zeros(3, dtype=torch.long))  # (3, 3, 16, 16)
    inside = box_mask(boxes[0], 16)[0].bool()  # (16, 16), the pixels the region loss weights
    plain = net.gens[0](rig)
    assert torch.equal(img[..., ~inside], plain[..., ~inside])
    assert not torch.allclose(img[..., inside], plain[..., inside])
    region_params = list(net.region_decoders.parameters())
    grads = torch.autograd.grad(img[..., ~inside].sum(), region_params, allow_unused=True, retain_graph=True)
    assert all(g is None or not g.any() for g in grads)  # outside the boxes they play no part
    grads = torch.autograd.grad(img[..., inside].sum(), [rig, *region_params])
    assert grads[0].abs().sum() > 0 and all(g.abs().sum() > 0 for g in grads[1:])


def test_region_decoder_run_reloads_with_its_boxes(world, tmp_path):
    from scripts.rig2img_errors import error_maps

    out = tmp_path / "regions"
    main(cfg_for(world, out, "epochs=1", "model.region_patch=8"))
    r = load_renderer(out / "checkpoint-best.pth")
    n_boxes = [len(AVATARS[n]["eye_boxes"]) + 1 for n in r.avatar_names]  # eyes and the mouth
    assert [len(d.decoders) for d in r.net.region_decoders] == n_boxes
    state = torch.load(out / "checkpoint-best.pth", weights_only=True)["model"]
    assert all(torch.equal(state[k], v) for k, v in r.net.state_dict().items())
    # animate's inference numerics (BatchNorm folded, bf16 weights) and bf16 autocast keep the images
    from animate.inference import prepare_renderer

    rig = torch.rand(2, 12)
    ref = r(rig, "robot")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.testing.assert_close(r(rig, "robot").float(), ref, atol=0.05, rtol=0)
    fast = prepare_renderer(load_renderer(out / "checkpoint-best.pth"), "bf16")
    torch.testing.assert_close(fast(rig.bfloat16(), "robot").float(), ref, atol=0.05, rtol=0)
    # the error maps reproduce the run's own held-out figures
    val = json.loads((out / "summary.json").read_text())["final"]
    ds = AvatarRigDataset(load_avatars(world, r.avatar_names), 16, "val", 0.25)
    for k, name in enumerate(r.avatar_names):
        err, std = error_maps(r, ds, k, batch_size=4)
        inside = box_mask(ds.avatars[k].boxes, 16)[0].bool()
        assert err.mean().item() == pytest.approx(val[f"val/{name}/l1"], rel=1e-4)
        assert err[inside].mean().item() == pytest.approx(val[f"val/{name}/region_l1"], rel=1e-4)
        assert std.shape == (16, 16) and std.max() > 0.05


def test_error_split_on_known_maps():
    from scripts.rig2img_errors import summarise

    err, std = torch.zeros(4, 4), torch.zeros(4, 4)
    boxes = torch.zeros(4, 4, dtype=torch.bool)
    boxes[:2, :2] = True  # 4 box pixels, all moving, error 0.4
    err[:2, :2], std[:2, :2] = 0.4, 0.1
    err[3, 3], std[3, 3] = 0.8, 0.1  # one moving pixel outside; the other 11 still and exact
    s = summarise(err, std, boxes, moving=0.01)
    assert s["image_l1"] == pytest.approx(2.4 / 16) and s["box_l1"] == pytest.approx(0.4)
    assert s["outside_l1"] == pytest.approx(0.8 / 12) and s["moving_l1"] == pytest.approx(2.4 / 5)
    assert s["moving_outside_l1"] == pytest.approx(0.8) and s["still_share"] == pytest.approx(11 / 16)
    assert s["box_share_of_motion"] == pytest.approx(0.8) and s["box_share"] == pytest.approx(0.25)


@pytest.mark.parametrize("fix, message", [
    (dict(region_patch=12), "power of two"),
    (dict(region_patch=8, mode="shared"), "per_avatar"),
])
def test_bad_region_decoder_settings_are_refused(fix, message):
    with pytest.raises(ValueError, match=message):
        preset("tiny", **fix)


def test_region_decoders_need_the_boxes():
    with pytest.raises(ValueError, match="boxes"):
        build_renderer([6, 8], preset("tiny", region_patch=8), [[[0, 0, 1, 1]]])
