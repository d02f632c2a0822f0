"""Stage 3b: every loss term reaches the decoder (and only it), weights scale terms, rigs are
sliced per avatar, the config refuses test mode without a checkpoint, a tiny run trains and resumes.

Tiny random stand-ins with the stage-2 / stage-3a public APIs keep these tests fast and independent.
"""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from animate.config import Emb2RigCommand
from common.config import ConfigError, cli, load_config
from emb2rig.config import Emb2RigConfig
from emb2rig.data import sample_targets
from emb2rig.discriminator import MultiScalePatchGAN
from emb2rig.frozen import Frozen
from emb2rig.losses import LossConfig, compute_losses, discriminator_loss
from emb2rig.models import DecoderConfig, build_model, load_decoder

NAMES = ["a", "b", "c"]
CONTROLS = [[f"{n}{i}" for i in range(k)] for n, k in zip(NAMES, (3, 5, 7))]
TERMS = ("perceptual", "rig", "pixel", "gan")


class StandInEncoder(nn.Module):
    """Stage-2 API: preprocess(img01) -> normalised input; forward -> (pooled (B, 24), unit embedding (B, 16))."""
    image_size = 32

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 4, stride=4)
        self.fc, self.emb = nn.Linear(8 * 64, 24), nn.Linear(24, 16)
        self.requires_grad_(False)

    def preprocess(self, x):
        return (F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False) - 0.45) / 0.27

    def forward(self, x):
        f = self.fc(torch.tanh(self.conv(x)).flatten(1))
        return f, F.normalize(self.emb(f), dim=1)


class StandInRenderer(nn.Module):
    """Stage-3a API: render(rig, name) refuses a rig of the wrong length; output in [0, 1]."""
    image_size = 16

    def __init__(self, names=NAMES, controls=CONTROLS):
        super().__init__()
        self.avatar_names, self.controls = list(names), dict(zip(names, controls))
        self.nets = nn.ModuleDict({n: nn.Linear(len(c), 3 * 16 * 16) for n, c in self.controls.items()})
        self.requires_grad_(False)

    def render(self, rig, name):
        if rig.shape[1] != len(self.controls[name]):
            raise ValueError(f"avatar '{name}' expects {len(self.controls[name])} controls, got {rig.shape[1]}")
        return torch.sigmoid(3 * self.nets[name](rig)).view(-1, 3, 16, 16)


def setup(seed=0):
    torch.manual_seed(seed)
    frozen = Frozen(StandInEncoder(), StandInRenderer(), NAMES, CONTROLS)
    cfg = DecoderConfig(width=32, blocks=2, id_dim=8, id_hidden=16)
    model = build_model(torch.randn(3, 24), [3, 5, 7], cfg)
    disc = MultiScalePatchGAN(scales=2, channels=8, layers=2)
    B = 8
    source = torch.tensor([-1, -1, 0, 1, 2, 0, 1, 2])
    rig = torch.rand(B, 7) * (torch.arange(7)[None] < frozen_sizes(source)[:, None])
    batch = {"image": torch.rand(B, 3, 16, 16), "source": source, "rig": rig,
             "target": sample_targets(source, 3, 2, torch.Generator().manual_seed(0))}
    return frozen, model, disc, batch


def frozen_sizes(source):
    return torch.tensor([3, 5, 7])[source.clamp_min(0)] * (source >= 0)


def decoder_grad(model, frozen, disc, batch, **weights):
    model.eval()  # no dropout: the same weights give the same gradient
    model.zero_grad(set_to_none=True)
    losses, _ = compute_losses(model, frozen, batch, LossConfig(**weights), disc)
    losses["total"].backward()
    return torch.cat([p.grad.flatten() for p in model.parameters()]), losses


@pytest.mark.parametrize("term", TERMS)
def test_each_term_moves_the_decoder_and_its_weight_scales_it(term):
    frozen, model, disc, batch = setup()
    base = {f"weight_{t}": (0.5 if t != term and t != "gan" else 0.0) for t in TERMS}
    g_off, l_off = decoder_grad(model, frozen, disc, batch, **base)
    g_on, l_on = decoder_grad(model, frozen, disc, batch, **{**base, f"weight_{term}": 1.0})
    g_on2, _ = decoder_grad(model, frozen, disc, batch, **{**base, f"weight_{term}": 2.0})
    assert term not in l_off and term in l_on  # weight 0 removes the term
    diff = g_on - g_off
    assert diff.abs().max() > 1e-6, f"the {term} term does not reach the decoder"
    torch.testing.assert_close(g_on2 - g_off, 2 * diff, rtol=1e-3, atol=1e-7)  # the weight scales it
    torch.testing.assert_close(l_on["total"], sum(v for k, v in l_on.items() if k != "total"))


def test_frozen_networks_and_discriminator_get_no_gradient():
    frozen, model, disc, batch = setup()
    all_on = dict(weight_perceptual=1, weight_rig=1, weight_pixel=1, weight_gan=1)
    _, losses = decoder_grad(model, frozen, disc, batch, **all_on)
    assert set(losses) == {*TERMS, "total"}
    for net in (frozen.encoder, frozen.renderer, disc):
        assert all(p.grad is None for p in net.parameters()), type(net).__name__
    assert all(p.requires_grad for p in disc.parameters())  # restored after the generator term
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_discriminator_step_does_not_touch_the_decoder():
    frozen, model, disc, batch = setup()
    model.train()
    losses, out = compute_losses(model, frozen, batch, LossConfig(weight_gan=1.0), disc)
    losses["total"].backward()
    before = [p.grad.clone() for p in model.parameters()]
    d_loss = discriminator_loss(disc, frozen, batch, out["render"])
    d_loss.backward()
    for b, p in zip(before, model.parameters()):
        assert torch.equal(b, p.grad)
    assert all(p.grad is not None for p in disc.parameters())
    faces_only = {k: v[:2] for k, v in batch.items()}
    assert discriminator_loss(disc, frozen, faces_only, out["render"][:2]) is None


def test_rigs_are_sliced_to_each_avatars_own_controls():
    frozen, model, disc, batch = setup()
    feat = torch.randn(6, 24)
    avatar = torch.tensor([0, 1, 2, 0, 1, 2])
    rig = model.eval()(feat, avatar)
    assert rig.shape == (6, 7)
    for i, n in enumerate([3, 5, 7, 3, 5, 7]):
        assert (rig[i, n:] == 0).all() and (rig[i, :n] > 0).all()
    frozen.render(rig, avatar)  # the stand-in refuses any rig of the wrong length
    # the rig loss ignores padded entries: garbage past an avatar's controls changes nothing
    w = dict(weight_perceptual=0, weight_pixel=0)
    _, l1 = decoder_grad(model, frozen, disc, batch, **w)
    junk = dict(batch, rig=batch["rig"] + 5 * (batch["rig"] == 0))
    _, l2 = decoder_grad(model, frozen, disc, junk, **w)
    torch.testing.assert_close(l1["rig"], l2["rig"])
    # a new avatar needs only a reference feature
    k = model.add_avatar(torch.randn(24), 4)
    assert (model(feat[:1], torch.tensor([k]))[0, 4:] == 0).all()


def test_mean_prior_is_the_starting_point():
    means = [torch.rand(n) * 0.8 + 0.1 for n in (3, 5, 7)]
    model = build_model(torch.randn(3, 24), [3, 5, 7], DecoderConfig(width=16, id_dim=4, id_hidden=8), means).eval()
    nn.init.zeros_(model.decoder.head.weight)
    nn.init.zeros_(model.decoder.head.bias)
    rig = model(torch.randn(3, 24), torch.tensor([0, 1, 2]))
    for a, m in enumerate(means):
        torch.testing.assert_close(rig[a, :len(m)], m)


def test_sample_targets_put_the_own_avatar_first():
    source = torch.tensor([-1, 0, 1, 2, 2])
    t = sample_targets(source, 3, 2, torch.Generator().manual_seed(1))
    assert t.shape == (5, 2) and torch.equal(t[1:, 0], source[1:])
    assert (t[:, 0] != t[:, 1]).all()
    assert sample_targets(source, 3, 9).shape == (5, 3)


def test_all_weights_zero_is_refused():
    frozen, model, disc, batch = setup()
    with pytest.raises(ValueError, match="every loss weight is 0"):
        compute_losses(model, frozen, batch, LossConfig(0, 0, 0, 0), disc)


def test_configs_load_and_test_mode_needs_pretrained():
    for path in ("configs/configs_emb2rig_multi.yaml", "configs/demo/emb2rig.yaml"):
        cfg = load_config(Emb2RigCommand, [path])
        assert isinstance(cfg, Emb2RigConfig) and cfg.mode == "train"
        assert cfg.model.width == 512 and cfg.model.blocks == 2
    with pytest.raises(ConfigError, match="pretrained"):
        load_config(Emb2RigCommand, ["configs/demo/emb2rig.yaml", "mode=test"])
    with pytest.raises(SystemExit) as e:  # the entry script stops before building anything
        cli(Emb2RigCommand, argv=["configs/demo/emb2rig.yaml", "mode=test"])
    assert e.value.code == 2
    cfg = load_config(Emb2RigCommand, ["configs/demo/emb2rig.yaml", "mode=test", "pretrained=x.pth"])
    assert cfg.mode == "test"
    with pytest.raises(ConfigError, match="weight_perceptual"):
        load_config(Emb2RigCommand, ["configs/demo/emb2rig.yaml", "loss.weight_perceptul=1"])
    with pytest.raises(ConfigError, match="mode"):  # the training config alone has no test mode
        load_config(Emb2RigConfig, ["mode=test"])


def stand_in_networks(world, monkeypatch):
    """The tiny world's avatars and stand-in encoder / 64 px renderer, which emb2rig.main then loads
    (patched `load_frozen`); returns (avatars, names, controls, encoder, renderer)."""
    from data.avatars import load_avatars
    from emb2rig import main as main_mod

    avs = load_avatars(world / "avatars")
    names, controls = [a.name for a in avs], [a.controls for a in avs]
    torch.manual_seed(0)
    renderer = StandInRenderer(names, controls)
    renderer.image_size = 64
    renderer.nets = nn.ModuleDict({n: nn.Linear(len(c), 3 * 64 * 64) for n, c in zip(names, controls)})
    renderer.render = lambda rig, name: torch.sigmoid(renderer.nets[name](rig)).view(-1, 3, 64, 64)
    renderer.requires_grad_(False)
    encoder = StandInEncoder()
    monkeypatch.setattr(main_mod, "load_frozen", lambda e, r, n, c, d, *crop: Frozen(encoder, renderer, n, c, *crop))
    return avs, names, controls, encoder, renderer


def test_tiny_run_trains_resumes_and_loads(tmp_path, monkeypatch):
    from data.demo_world import make_world
    from emb2rig import main as main_mod

    world = tmp_path / "world"
    make_world(world, preset="tiny", seed=0)
    (world / "eval").rename(tmp_path / "eval_hidden")  # training must not need eval/
    avs, names, controls, encoder, renderer = stand_in_networks(world, monkeypatch)
    args = ["configs/demo/emb2rig.yaml", f"output_dir={tmp_path / 'run'}", f"data_root={world}", "epochs=2",
            "steps_per_epoch=3", "batch_size=16", "model.width=32", "loss.weight_gan=0.1", "disc.channels=8"]
    cfg = load_config(Emb2RigCommand, args)
    summary = main_mod.main(cfg)
    run = tmp_path / "run"
    assert summary["steps"] == 6 and (run / "checkpoint-best.pth").is_file() and (run / "samples.png").is_file()
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 2 and {"train/perceptual", "train/gan", "train/disc", "val/total"} <= set(metrics[0])
    assert main_mod.main(cfg) == summary  # already complete: the finished run's summary
    model, meta = load_decoder(run / "checkpoint-last.pth")
    assert meta["avatars"] == names and model(torch.randn(2, 24), torch.tensor([0, 2])).shape == (2, 26)
    refs = meta["references"]  # what animate checks its encoder and renderer against
    assert refs["images"].shape == (len(names), 3, 64, 64)
    assert [len(r) for r in refs["rigs"]] == [len(c) for c in controls]
    with torch.no_grad():
        redrawn = torch.cat([renderer.render(torch.tensor([r]), n) for r, n in zip(refs["rigs"], names)])
        assert (redrawn - refs["images"].float()).abs().max() < 1e-3
        again = Frozen(encoder, renderer, names, controls, [a.face_box for a in avs], cfg.crop_margin)
        feats = again.encode(refs["images"].float(), torch.arange(len(names)))[0]
    torch.testing.assert_close(feats, model.ids.ref_feats, atol=2e-3, rtol=2e-3)  # from the fp16 renders
    longer = dataclasses.replace(cfg, epochs=3)
    assert main_mod.main(longer)["steps"] == 9  # resumes from epoch 2
    # A new run from these weights through another encoder: the identity inputs are this run's own, so
    # the stored references and the decoder's reference features agree (animate checks one against the other)
    encoder.conv.weight.mul_(-1)  # "another encoder"
    again_cfg = dataclasses.replace(cfg, output_dir=str(tmp_path / "again"), epochs=1,
                                    pretrained=str(run / "checkpoint-last.pth"))
    main_mod.main(again_cfg)
    model2, meta2 = load_decoder(tmp_path / "again" / "checkpoint-last.pth")
    with torch.no_grad():
        feats2 = again.encode(meta2["references"]["images"].float(), torch.arange(len(names)))[0]
    torch.testing.assert_close(feats2, model2.ids.ref_feats, atol=2e-3, rtol=2e-3)
    assert not torch.allclose(model2.ids.ref_feats, model.ids.ref_feats, atol=1e-2)


def test_renders_are_cropped_to_their_face_box_and_gradients_stay_inside():
    """Frozen.encode crops each render to its avatar's face square (faces, source -1, pass whole);
    the crop is differentiable and pixels outside the square get no gradient."""
    torch.manual_seed(0)
    box = [0.25, 0.25, 0.75, 0.75]  # 8 px face in a 16 px render; margin 0.25 -> 12 px square
    frozen = Frozen(StandInEncoder(), StandInRenderer(), NAMES, CONTROLS, [box, None, None], margin=0.25)
    img = torch.rand(3, 3, 16, 16, requires_grad=True)
    avatar = torch.tensor([0, -1, 1])
    x = frozen.encoder_input(img, avatar)
    pre = frozen.encoder.preprocess
    assert torch.allclose(x[0], pre(img[:1, :, 2:14, 2:14])[0])
    assert torch.allclose(x[1], pre(img[1:2])[0]) and torch.allclose(x[2], pre(img[2:3])[0])
    frozen.encode(img, avatar)[1].sum().backward()
    g = img.grad[0].abs().sum(0)  # (16, 16)
    assert g[2:14, 2:14].sum() > 0 and g.sum() == g[2:14, 2:14].sum()
    assert img.grad[1].abs().sum() > 0
