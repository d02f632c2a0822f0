"""Stage 2: per-type margins, the triplet metric against a hand count, checkpoint init, the frozen
public encoder, a short training run that resumes exactly, the best checkpoint chosen on validation and
scored once on test, and `mode=eval` on our and the official checkpoint layouts."""
import argparse
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from common.config import load_config
from data.triplets import TYPE_INDEX
from expression_finetune import build_expression_vit, load_encoder, load_pretrained
from expression_finetune.config import ExpressionConfig
from expression_finetune.losses import (
    DEFAULT_MARGINS,
    accuracy_from_counts,
    margin_tensor,
    triplet_correct,
    triplet_loss,
    type_counts,
)
from mae_pretrain import build_mae

ONE, TWO, THREE = (TYPE_INDEX[t] for t in ("ONE_CLASS_TRIPLET", "TWO_CLASS_TRIPLET", "THREE_CLASS_TRIPLET"))
TINY = "mae_vit_tiny_patch8_64"


def _line(a: float, p: float, n: float) -> torch.Tensor:
    """A triplet of 1-D embeddings (as (3, 1)); distances are |a - p| etc. (squared: (a - p)^2)."""
    return torch.tensor([[a], [p], [n]])


def test_margins_are_applied_by_type():
    m = margin_tensor(DEFAULT_MARGINS)
    assert m.tolist() == pytest.approx([0.1, 0.2, 0.2])
    # a = 0, p = 0.3, n = -0.6 on a line: d(a,p) = 0.09, d(a,n) = 0.36, d(p,n) = 0.81 (squared distances)
    emb = _line(0.0, 0.3, -0.6)[None]  # (1, 3, 1)
    d_ap, d_an, d_pn = 0.09, 0.36, 0.81
    for t, margin in ((ONE, 0.1), (TWO, 0.2), (THREE, 0.2)):
        want = max(0, d_ap - d_an + margin) + max(0, d_ap - d_pn + margin)
        assert triplet_loss(emb, torch.tensor([t]), m, "squared").item() == pytest.approx(want, abs=1e-6)
    assert triplet_loss(emb, torch.tensor([ONE]), m, "squared").item() == pytest.approx(0.0, abs=1e-7)  # < 0
    assert triplet_loss(emb, torch.tensor([TWO]), m, "squared").item() == pytest.approx(0.0, abs=1e-7)  # < 0
    # a tighter triplet: d(a,p) = 0.04, d(a,n) = 0.16, d(p,n) = 0.36 (a = 0, p = 0.2, n = -0.4)
    emb2 = _line(0.0, 0.2, -0.4)[None]
    assert triplet_loss(emb2, torch.tensor([ONE]), m, "squared").item() == pytest.approx(0.0, abs=1e-7)
    assert triplet_loss(emb2, torch.tensor([TWO]), m, "squared").item() == pytest.approx(0.08, abs=1e-6)
    # vectorised batch = mean of the single losses
    batch = torch.cat([emb, emb2, emb2])
    assert triplet_loss(batch, torch.tensor([TWO, ONE, THREE]), m, "squared").item() == pytest.approx(0.08 / 3,
                                                                                                      abs=1e-6)
    # plain Euclidean distance (the official): |a - p| = 0.2, |a - n| = 0.4, |p - n| = 0.6
    assert triplet_loss(emb2, torch.tensor([ONE]), m).item() == pytest.approx(0.0, abs=1e-5)  # 0.2-0.4+0.1 < 0
    assert triplet_loss(emb2, torch.tensor([TWO]), m).item() == pytest.approx(0.0, abs=1e-5)  # 0.2-0.4+0.2 = 0
    emb3 = _line(0.0, 0.2, -0.25)[None]  # |a - p| 0.2, |a - n| 0.25, |p - n| 0.45
    assert triplet_loss(emb3, torch.tensor([ONE]), m).item() == pytest.approx(0.05, abs=1e-5)  # 0.2-0.25+0.1
    with pytest.raises(ValueError, match="margins missing"):
        margin_tensor({"ONE_CLASS_TRIPLET": 0.1})


def test_loss_is_symmetric_in_anchor_and_positive():
    g = torch.Generator().manual_seed(0)
    emb = F.normalize(torch.randn(8, 3, 16, generator=g), dim=-1)
    types = torch.randint(0, 3, (8,), generator=g)
    m = margin_tensor(DEFAULT_MARGINS)
    swapped = emb[:, [1, 0, 2]]
    assert triplet_loss(emb, types, m).item() == pytest.approx(triplet_loss(swapped, types, m).item(), rel=1e-6)


def test_metric_equals_hand_computed_example():
    # positions on a line; correct iff d(a,p) is strictly the smallest of the three pairs
    trips = [_line(0, 1, 5),    # ap 1, an 25, pn 16: correct        ONE
             _line(0, 3, 1),    # ap 9, an 1: wrong                  ONE
             _line(0, 2, 3),    # ap 4, an 9, pn 1: wrong (pn closer) TWO
             _line(0, 1, -3),   # ap 1, an 9, pn 16: correct         TWO
             _line(0, 2, -2)]   # ap 4, an 4: tie counts as wrong    TWO
    emb = torch.stack(trips)  # (5, 3, 1)
    types = torch.tensor([ONE, ONE, TWO, TWO, TWO])
    correct = triplet_correct(emb)
    assert correct.tolist() == [True, False, False, True, False]
    acc = accuracy_from_counts(type_counts(correct, types))
    assert acc["triplet_acc"] == pytest.approx(2 / 5)
    assert acc["per_type"] == {"ONE_CLASS_TRIPLET": pytest.approx(0.5), "TWO_CLASS_TRIPLET": pytest.approx(1 / 3),
                               "THREE_CLASS_TRIPLET": None}  # absent type: None, no division by zero
    assert acc["n_per_type"] == {"ONE_CLASS_TRIPLET": 2, "TWO_CLASS_TRIPLET": 3, "THREE_CLASS_TRIPLET": 0}
    # counts from two halves (two ranks / batches) add up to the same result
    halves = type_counts(correct[:2], types[:2]) + type_counts(correct[2:], types[2:])
    assert accuracy_from_counts(halves) == acc
    assert accuracy_from_counts(torch.zeros(3, 2))["per_type"]["ONE_CLASS_TRIPLET"] is None


@pytest.mark.parametrize("layout", ["full", "encoder_only", "ddp_prefixed"])
def test_official_layout_checkpoint_initialises_every_encoder_key(tmp_path, layout):
    torch.manual_seed(0)
    mae = build_mae(TINY)
    sd = mae.state_dict()
    if layout == "encoder_only":  # like the public mae_pretrain_vit_base.pth
        sd = {k: v for k, v in sd.items() if not k.startswith(("decoder_", "mask_token"))}
    if layout == "ddp_prefixed":
        sd = {"module." + k: v for k, v in sd.items()}
    path = tmp_path / "mae.pth"
    torch.save({"model": sd, "args": argparse.Namespace(model=TINY), "epoch": 3}, path)
    model = build_expression_vit(TINY)
    report = load_pretrained(model, path)
    assert report["missing_encoder"] == [] and report["unexpected"] == []
    assert sorted(report["new"]) == ["fc_norm.bias", "fc_norm.weight", "head.bias", "head.weight"]
    assert {"norm.weight", "norm.bias"} <= set(report["unused"])  # final norm replaced by fc_norm: expected
    own = model.state_dict()
    for k, v in mae.state_dict().items():
        if k in own:
            assert torch.equal(own[k], v), k


def test_conv_stem_stage1_checkpoint_initialises_stem_and_its_batchnorm_statistics(tmp_path):
    torch.manual_seed(0)
    mae = build_mae("mae_vit_tiny_conv16_64").train()
    mae(torch.randn(4, 3, 64, 64))  # moves the BatchNorm running statistics off their init
    torch.save({"model": mae.state_dict()}, tmp_path / "mae.pth")
    model = build_expression_vit("mae_vit_tiny_conv16_64")
    report = load_pretrained(model, tmp_path / "mae.pth")
    assert report["missing_encoder"] == [] and report["unexpected"] == []
    stats = mae.patch_embed.stem[1].running_var
    assert not torch.equal(stats, torch.ones_like(stats))
    assert torch.equal(model.patch_embed.stem[1].running_var, stats)


def test_vit_base_encoder_keys_are_the_official_ones():
    own = set(build_expression_vit("mae_vit_base_patch16").state_dict())
    official = set(build_mae("mae_vit_base_patch16").state_dict())
    assert own - official == {"fc_norm.weight", "fc_norm.bias", "head.weight", "head.bias"}
    assert official - own == {k for k in official if k.startswith(("decoder_", "mask_token", "norm."))}


def test_wrong_file_or_preset_fails_clearly(tmp_path):
    torch.save({"model": {"foo.weight": torch.zeros(1)}}, tmp_path / "x.pth")
    with pytest.raises(ValueError, match="no ViT encoder key"):
        load_pretrained(build_expression_vit(TINY), tmp_path / "x.pth")
    torch.save({"model": build_mae("mae_vit_small_patch8_64").state_dict()}, tmp_path / "s.pth")
    with pytest.raises(ValueError, match="shapes differ"):
        load_pretrained(build_expression_vit(TINY), tmp_path / "s.pth")


def test_model_outputs_pooled_feature_and_unit_embedding():
    model = build_expression_vit(TINY, emb_dim=16, drop_path=0.2).eval()
    feat, emb = model(torch.randn(4, 3, 64, 64))
    assert feat.shape == (4, 192) and emb.shape == (4, 16)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(4), atol=1e-5)
    assert [round(b.drop_prob, 3) for b in model.blocks] == [0.0, 0.04, 0.08, 0.12, 0.16, 0.2]


def test_cast_encoder_stores_what_autocast_recasts_and_gives_the_same_outputs():
    from animate.inference import cast_weights_
    from expression_finetune import ExpressionEncoder

    torch.manual_seed(0)
    enc = ExpressionEncoder(build_expression_vit(TINY))
    x = torch.randn(8, 3, 64, 64)
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16):
        feat, emb = enc(x)
        assert cast_weights_(enc, torch.bfloat16) is enc
        feat16, emb16 = enc(x)
    m = enc.model
    assert m.blocks[0].attn.qkv.weight.dtype == m.patch_embed.proj.weight.dtype == torch.bfloat16
    kept = [m.pos_embed, m.cls_token, *m.fc_norm.parameters(), *m.blocks[0].norm1.parameters(), *m.head.parameters()]
    assert all(p.dtype == torch.float32 for p in kept)  # residual stream and embedding head stay fp32
    assert feat16.dtype == emb16.dtype == torch.float32
    torch.testing.assert_close(feat16, feat.float(), atol=1e-5, rtol=1e-5)  # the weights autocast used anyway
    torch.testing.assert_close(emb16, emb, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("core", [torch.float32, torch.bfloat16])
def test_int8_encoder_quantizes_the_block_linears_only_and_stays_close(core):
    from animate.inference import InferenceAttention, Int8Encoder, quantize_int8
    from expression_finetune import ExpressionEncoder

    torch.manual_seed(0)
    enc = ExpressionEncoder(build_expression_vit(TINY))
    x = torch.randn(8, 3, 64, 64)
    with torch.inference_mode():
        feat, emb = enc(x)
        q = quantize_int8(enc, core)
        assert isinstance(q, Int8Encoder) and q.encoder is enc and q.image_size == enc.image_size
        with torch.autocast("cpu", torch.bfloat16):  # int8 runs in fp32 even inside animate's autocast
            feat8, emb8 = q(x)
    qkv, head = enc.model.blocks[0].attn.qkv, enc.model.head
    assert type(qkv).__module__.startswith("torch.ao.nn.quantized") and type(head) is torch.nn.Linear
    assert all(isinstance(b.attn, InferenceAttention) for b in enc.model.blocks)
    assert all(b.attn.core_dtype == (None if core == torch.float32 else core) for b in enc.model.blocks)
    assert feat8.dtype == emb8.dtype == torch.float32
    assert F.cosine_similarity(emb8, emb).min() > 0.99 and not torch.equal(emb8, emb)


def test_inference_attention_shares_the_weights_and_changes_only_the_core():
    from animate.inference import InferenceAttention
    from mae_pretrain.models_mae import Attention

    torch.manual_seed(0)
    attn, x = Attention(32, 4).eval(), torch.randn(2, 10, 32)
    with torch.inference_mode():
        ref = attn(x)
        torch.testing.assert_close(InferenceAttention(attn)(x), ref)  # fp32: the same attention
        fast = InferenceAttention(attn, torch.bfloat16)
        assert fast.qkv is attn.qkv and fast.proj is attn.proj
        out = fast(x)  # fp32 projections around a bf16 core: fp32 out, within bf16 rounding of fp32
    assert out.dtype == torch.float32 and not torch.equal(out, ref)
    torch.testing.assert_close(out, ref, atol=2e-2, rtol=2e-2)  # the bf16 softmax: tests/test_mae_model.py


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from data.demo_world import make_world

    root = tmp_path_factory.mktemp("world")
    make_world(root, "tiny", seed=0)
    for name, src, n in (("val_small", "fec_val", 24), ("test_small", "fec_test", 30),  # fast evaluation
                         ("train_head", "fec_train", 40)):  # with the 4 bad rows the world puts at rows 3-18
        lines = (root / f"triplets/{src}.csv").read_text().splitlines()  # the demo config reads raw FEC rows
        (root / f"triplets/{name}.csv").write_text("\n".join(lines[:n]) + "\n")
    return root


def _cfg(world, out, *extra):
    return load_config(ExpressionConfig, ["configs/demo/expression.yaml", f"data_root={world}", f"output_dir={out}",
                                          "pretrained=null", "val_csv=triplets/val_small.csv",
                                          "test_csv=triplets/test_small.csv", "batch_size=4", "steps_per_epoch=2",
                                          "num_workers=0", "schedule=constant", *extra])


def test_training_resumes_exactly_and_load_encoder_is_frozen_but_differentiable(world, tmp_path, capsys):
    from expression_finetune.main import main

    # random augmentation drawn in two persistent DataLoader workers: a resumed run still draws what an
    # uninterrupted one draws (per-sample seeds, common/seeding.py)
    aug = ("augment=ours", "num_workers=2")
    full = main(_cfg(world, tmp_path / "a", "epochs=2", *aug))
    main(_cfg(world, tmp_path / "b", "epochs=1", *aug))
    resumed = main(_cfg(world, tmp_path / "b", "epochs=2", *aug))  # continues from b's epoch 0
    assert "resumed from" in capsys.readouterr().out
    a = torch.load(tmp_path / "a/checkpoint-last.pth", weights_only=True)["model"]
    b = torch.load(tmp_path / "b/checkpoint-last.pth", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["triplet_acc"] == full["triplet_acc"]
    assert {**resumed["test"], "checkpoint": ""} == {**full["test"], "checkpoint": ""}  # same best, same score
    summary = json.loads((tmp_path / "a/summary.json").read_text())
    assert set(summary["per_type"]) == set(TYPE_INDEX) and 0 <= summary["triplet_acc"] <= 1
    assert summary["best_epoch"] in (0, 1) and (tmp_path / "a/checkpoint-best.pth").is_file()
    assert main(_cfg(world, tmp_path / "a", "epochs=2", *aug)) == summary  # a finished run returns its summary
    assert "already complete" in capsys.readouterr().out

    enc = load_encoder(tmp_path / "a/checkpoint-best.pth")
    enc.train()  # a parent module's .train() must not switch the frozen encoder to training mode
    assert not enc.training and not any(p.requires_grad for p in enc.parameters())
    img = Image.open(next((world / "faces/test").rglob("*.png")))
    x = enc.preprocess(img)[None]  # (1, 3, 64, 64)
    x01 = torch.from_numpy(np.array(img.convert("RGB"))).permute(2, 0, 1)[None] / 255.0
    assert torch.allclose(enc.preprocess(x01), x, atol=1e-5)  # tensor path == PIL path at the native size
    x01.requires_grad_(True)
    feat, emb = enc(enc.preprocess(x01))
    assert feat.shape == (1, enc.feature_dim) and emb.shape == (1, 16) and enc.image_size == 64
    (feat.sum() + emb.sum()).backward()
    assert x01.grad is not None and x01.grad.abs().sum() > 0
    assert all(p.grad is None for p in enc.parameters())
    torch.testing.assert_close(enc(x)[1], enc(x)[1])  # deterministic (no drop-path at inference)


def test_best_checkpoint_is_chosen_on_val_and_test_is_scored_once_with_it(world, tmp_path, monkeypatch):
    import expression_finetune.evaluate as ev
    import expression_finetune.main as m

    real, val_accs, test_calls = m.evaluate, iter([0.9, 0.1]), []

    def scripted_val(*args, **kw):  # epoch 0 is the best on validation, epoch 1 the last
        return {**real(*args, **kw), "val/acc": next(val_accs)}

    def recorded_test(model, *args, **kw):
        test_calls.append({k: v.clone() for k, v in model.state_dict().items()})
        return real(model, *args, **kw)

    monkeypatch.setattr(m, "evaluate", scripted_val)
    monkeypatch.setattr(ev, "evaluate", recorded_test)
    fast = ["precision=fp32", "model=mae_vit_tiny_patch16_64"]
    summary = m.main(_cfg(world, tmp_path / "run", "epochs=2", "steps_per_epoch=1", *fast))
    best = torch.load(tmp_path / "run/checkpoint-best.pth", weights_only=True)
    last = torch.load(tmp_path / "run/checkpoint-last.pth", weights_only=True)
    assert summary["best_epoch"] == best["epoch"] == 0 and last["epoch"] == 1 and summary["triplet_acc"] == 0.1
    assert len(test_calls) == 1  # once, at the end
    assert all(torch.equal(test_calls[0][k], v) for k, v in best["model"].items())
    assert not all(torch.equal(test_calls[0][k], v) for k, v in last["model"].items())
    test = summary["test"]
    assert test["epoch"] == 0 and test["file"].endswith("test_small.csv") and test["n_triplets"] == 30
    assert set(test["per_type"]) == set(TYPE_INDEX) and test["rows_skipped"] == 0
    assert json.loads((tmp_path / "run/summary.json").read_text())["test"] == json.loads(json.dumps(test))
    assert not any(k.startswith("test") for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()
                   for k in json.loads(line))
    monkeypatch.undo()
    best_path = tmp_path / "run/checkpoint-best.pth"
    again = m.main(_cfg(world, tmp_path / "ev", "mode=eval", *fast, f"pretrained={best_path}"))
    assert again["triplet_acc"] == test["triplet_acc"] and again["per_type"] == test["per_type"]


def test_eval_mode_scores_our_and_official_checkpoints_and_counts_skipped_rows(world, tmp_path, capsys):
    from data.images import eval_transform
    from data.triplets import crop_box, read_triplets
    from expression_finetune.main import main

    torch.manual_seed(0)
    name = "mae_vit_tiny_patch16_64"  # an official-layout file takes the architecture from the config
    model = build_expression_vit(name).eval()
    torch.save({"main." + k: v for k, v in model.state_dict().items()}, tmp_path / "epoch_0_acc_0.5.pth")
    torch.save({"model": model.state_dict(), "config": {"model": name, "emb_dim": 16}}, tmp_path / "ours.pth")
    args = ["mode=eval", "test_csv=triplets/train_head.csv", "precision=fp32", f"model={name}"]  # 4 bad rows
    official = main(_cfg(world, tmp_path / "ev", *args, f"pretrained={tmp_path / 'epoch_0_acc_0.5.pth'}"))
    out = capsys.readouterr().out
    assert "[eval]" in out and "on 36 triplets" in out
    assert "rows skipped: 4 (3 malformed rows, 1 with missing images)" in out
    saved = json.loads((tmp_path / "ev/eval_train_head.json").read_text())
    assert saved == json.loads(json.dumps(official)) and saved["init_report"]["unexpected"] == []
    assert saved["skipped"] == {"malformed rows": 3, "with missing images": 1} and saved["rows_skipped"] == 4
    assert sum(saved["n_per_type"].values()) == 36 and set(saved["per_type"]) == set(TYPE_INDEX)
    ours = main(_cfg(world, tmp_path / "ev2", *args, f"pretrained={tmp_path / 'ours.pth'}"))
    assert ours["triplet_acc"] == official["triplet_acc"] and ours["per_type"] == official["per_type"]
    # the same number by hand: the official rule d(a,n) > d(a,p) and d(p,n) > d(a,p) on the model's embeddings
    recs = read_triplets(world / "triplets/train_head.csv", world, "fec", world / "triplets/url_map.csv")
    tf = eval_transform(64)
    x = torch.stack([tf(crop_box(Image.open(p).convert("RGB"), b, 0.0)) for r in recs
                     for p, b in zip(r.paths, r.boxes)])  # (3T, 3, 64, 64)
    with torch.no_grad():
        a, p, n = model(x)[1].view(-1, 3, 16).unbind(1)
    d_ap, d_an, d_pn = F.pairwise_distance(a, p), F.pairwise_distance(a, n), F.pairwise_distance(p, n)
    assert official["triplet_acc"] == pytest.approx(((d_an > d_ap) & (d_pn > d_ap)).double().mean().item())
    torch.save({"model": build_mae(name).state_dict()}, tmp_path / "mae.pth")
    with pytest.raises(ValueError, match="needs a stage-2 checkpoint"):
        main(_cfg(world, tmp_path / "ev3", *args, f"pretrained={tmp_path / 'mae.pth'}"))
    with pytest.raises(Exception, match="mode=eval scores a checkpoint"):
        _cfg(world, tmp_path / "ev4", "mode=eval", "test_csv=null")


def test_a_run_stopped_after_its_last_epoch_still_gets_its_summary_and_test_score(world, tmp_path):
    from expression_finetune.main import main

    first = main(_cfg(world, tmp_path / "r", "epochs=1"))
    (tmp_path / "r" / "summary.json").unlink()  # as if stopped after the last checkpoint, before the summary
    again = main(_cfg(world, tmp_path / "r", "epochs=1"))
    assert again["test"]["triplet_acc"] == first["test"]["triplet_acc"] and again["best_epoch"] == 0
    assert again["triplet_acc"] == first["triplet_acc"]  # the last weights, scored again on val
    assert (tmp_path / "r" / "summary.json").is_file()
    assert main(_cfg(world, tmp_path / "r", "epochs=1")) == again  # now complete: its summary
