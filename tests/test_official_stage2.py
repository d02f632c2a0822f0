"""Stage 2 against the official FreeAvatar code (FuxiVirtualHuman/free_avatar at 6f2eb6f, exp_emb_code/):
the paper config's values, the official checkpoint's key layout, the timm augmentation policy, and the
loss against torch's nn.TripletMarginLoss. No download: the official layout is rebuilt from its names."""
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from common.config import load_config
from data.images import FACE_MEAN, FACE_STD
from data.triplets import TRIPLET_TYPES
from expression_finetune import build_expression_vit, load_official_stage2
from expression_finetune.config import ExpressionConfig
from expression_finetune.losses import DEFAULT_MARGINS, margin_tensor, triplet_correct, triplet_loss
from expression_finetune.transforms import build_train_transform, official_train_transform
from mae_pretrain.models_mae import MAE_PRESETS

PAPER = "configs/mae_train_expemb.yaml"
TINY = "mae_vit_tiny_patch8_64"

# (config key, official value, where the official code sets it)
OFFICIAL = [
    ("optimizer", "sgd", "configs/mae_train_expemb.yaml optim (L25); train.py L65-67"),
    ("lr", 0.002, "configs/mae_train_expemb.yaml lr (L22)"),
    ("momentum", 0.9, "configs/mae_train_expemb.yaml momentum (L23)"),
    ("weight_decay", 5e-5, "configs/mae_train_expemb.yaml weight_decay (L24)"),
    ("batch_size", 64, "configs/mae_train_expemb.yaml batch_size (L14)"),
    ("epochs", 100, "configs/mae_train_expemb.yaml num_epochs (L17)"),
    ("num_workers", 8, "configs/mae_train_expemb.yaml num_workers (L15)"),
    ("schedule", "constant", "train.py: no lr scheduler"),
    ("layer_decay", 1.0, "train.py: one SGD parameter group"),
    ("clip_grad", None, "train.py: no gradient clipping"),
    ("model", "mae_vit_base_patch16", "model/mae_pipeline.py model_name 'vit_base_patch16'"),
    ("emb_dim", 16, "model/mae_pipeline.py num_classes"),
    ("drop_path", 0.1, "model/mae_pipeline.py drop_path_rate"),
    ("margins", {"ONE_CLASS_TRIPLET": 0.1, "TWO_CLASS_TRIPLET": 0.2, "THREE_CLASS_TRIPLET": 0.2},
     "train.py compute_loss criterion1 / criterion2"),
    ("distance", "euclidean", "train.py compute_loss nn.TripletMarginLoss (p=2)"),
    ("augment", "official", "dataset.py build_transform(True): timm create_transform"),
    ("crop_scale", [0.08, 1.0], "dataset.py build_transform scale"),
    ("crop_ratio", [7 / 8, 8 / 7], "dataset.py build_transform ratio"),
    ("auto_augment", "rand-m9-mstd0.5-inc1", "dataset.py build_transform auto_augment"),
    ("reprob", 0.25, "dataset.py build_transform re_prob"),
]
OURS = [("hflip", 0.0, "official leaves timm's 0.5 flip on; a flip swaps left/right action units")]


@pytest.mark.parametrize("key,value,source", OFFICIAL + OURS, ids=[k for k, _, _ in OFFICIAL + OURS])
def test_paper_config_and_defaults_hold_the_official_values(key, value, source):
    paper, defaults = load_config(ExpressionConfig, [PAPER]), ExpressionConfig()
    for cfg in (paper, defaults):
        assert getattr(cfg, key) == (pytest.approx(value) if isinstance(value, (float, list)) else value), source
    if key == "model":  # 224 px, patch 16 (mae_pipeline.py img_size=224)
        assert (MAE_PRESETS[value].img_size, MAE_PRESETS[value].patch_size) == (224, 16)


def test_every_paper_config_value_says_where_it_comes_from():
    lines = [ln for ln in open(PAPER).read().splitlines() if ln and not ln.startswith(("#", " "))]
    assert len(lines) >= 30
    for ln in lines:
        assert re.search(r"#.*\((official: exp_emb_code/\S+ \S|paper\)|paper:|ours: \S)", ln), ln
    keys = {ln.split(":")[0] for ln in lines}
    assert {k for k, _, _ in OFFICIAL + OURS} <= keys


def _official_vit_b_state(prefix: str = "main.") -> dict[str, torch.Tensor]:
    """The official stage-2 file's names and shapes (timm ViT-B/16 with global pool, 16-d head, no `norm`)."""
    D, shapes = 768, {"cls_token": (1, 1, 768), "pos_embed": (1, 197, 768),
                      "patch_embed.proj.weight": (768, 3, 16, 16), "patch_embed.proj.bias": (768,)}
    for i in range(12):
        b = f"blocks.{i}."
        shapes.update({b + "norm1.weight": (D,), b + "norm1.bias": (D,), b + "attn.qkv.weight": (3 * D, D),
                       b + "attn.qkv.bias": (3 * D,), b + "attn.proj.weight": (D, D), b + "attn.proj.bias": (D,),
                       b + "norm2.weight": (D,), b + "norm2.bias": (D,), b + "mlp.fc1.weight": (4 * D, D),
                       b + "mlp.fc1.bias": (4 * D,), b + "mlp.fc2.weight": (D, 4 * D), b + "mlp.fc2.bias": (D,)})
    shapes.update({"fc_norm.weight": (D,), "fc_norm.bias": (D,), "head.weight": (16, D), "head.bias": (16,)})
    g = torch.Generator().manual_seed(0)
    return {prefix + k: torch.randn(s, generator=g) for k, s in shapes.items()}


def test_official_vit_b_stage2_state_loads_every_key():
    sd = _official_vit_b_state()
    assert len(sd) == 152 and not any(k.startswith("main.norm.") for k in sd)
    model, report = load_official_stage2(sd)
    assert report == {"missing": [], "unexpected": []}
    own = model.state_dict()
    assert set(own) == {k[len("main."):] for k in sd}
    assert all(torch.equal(own[k[len("main."):]], v) for k, v in sd.items())
    assert model.emb_dim == 16 and not model.training


@pytest.mark.parametrize("prefix", ["main.", "module.main."])
def test_official_layout_prefixes_and_exact_key_report(prefix, tmp_path):
    torch.manual_seed(0)
    ref = build_expression_vit(TINY).state_dict()
    sd = {prefix + k: v for k, v in ref.items()}
    torch.save(sd, tmp_path / "epoch_90_acc_0.8736.pth")  # a raw state dict, as the official train.py saves
    model, report = load_official_stage2(tmp_path / "epoch_90_acc_0.8736.pth", name=TINY)
    assert report == {"missing": [], "unexpected": []}
    assert all(torch.equal(model.state_dict()[k], v) for k, v in ref.items())
    sd.pop(prefix + "blocks.1.mlp.fc2.bias")
    sd[prefix + "norm.weight"] = torch.ones(192)  # a final norm (timm without global pool): not used
    sd[prefix + "head_dist.weight"] = torch.zeros(16, 192)
    _, report = load_official_stage2(sd, name=TINY)
    assert report == {"missing": ["blocks.1.mlp.fc2.bias"], "unexpected": ["norm.weight", "head_dist.weight"]}


def test_non_official_files_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="not an official stage-2"):
        load_official_stage2({"model": build_expression_vit(TINY).state_dict()}, name=TINY)
    sd = {"main." + k: v for k, v in build_expression_vit("mae_vit_small_patch8_64").state_dict().items()}
    with pytest.raises(ValueError, match="shapes differ"):
        load_official_stage2(sd, name=TINY)


def test_official_augmentation_is_timms_policy_with_the_official_arguments():
    from timm.data.auto_augment import RandAugment
    from timm.data.random_erasing import RandomErasing
    from timm.data.transforms import RandomResizedCropAndInterpolation
    from torchvision.transforms import InterpolationMode, Normalize, RandomHorizontalFlip

    tf, deterministic = build_train_transform(load_config(ExpressionConfig, [PAPER]), 224)
    assert not deterministic
    crop, ra, _, norm, erase = tf.transforms  # no flip: hflip 0
    assert isinstance(crop, RandomResizedCropAndInterpolation) and crop.size == (224, 224)
    assert crop.scale == pytest.approx((0.08, 1.0)) and crop.ratio == pytest.approx((7 / 8, 8 / 7))
    assert crop.interpolation == InterpolationMode.BICUBIC
    assert isinstance(ra, RandAugment) and ra.num_layers == 2 and ra.choice_weights is None
    names = [op.name for op in ra.ops]  # 'inc1': the increasing variants of the magnitude-dependent ops
    assert names == ["AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing", "SolarizeIncreasing",
                     "SolarizeAdd", "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing",
                     "SharpnessIncreasing", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"]
    assert {(op.magnitude, op.magnitude_std, op.prob) for op in ra.ops} == {(9, 0.5, 0.5)}
    assert isinstance(norm, Normalize) and list(norm.mean) == pytest.approx(FACE_MEAN)
    assert list(norm.std) == pytest.approx(FACE_STD)
    assert isinstance(erase, RandomErasing) and erase.probability == 0.25 and erase.mode == "pixel"
    assert (erase.min_count, erase.max_count) == (1, 1)
    flipped = official_train_transform(224, hflip=0.5)  # timm's default, which the official call keeps
    assert any(isinstance(t, RandomHorizontalFlip) and t.p == 0.5 for t in flipped.transforms)
    demo, deterministic = build_train_transform(load_config(ExpressionConfig, ["configs/demo/expression.yaml"]), 64)
    assert deterministic and "RandAugment" not in str(demo)


def test_official_augmentation_survives_the_top_magnitude():
    """'PosterizeIncreasing' at magnitude 10 keeps 0 bits: Pillow 13 raises on it (a run of the paper config
    ended in a DataLoader worker after a few hundred images); ours gives the black image older Pillow gave."""
    from PIL import Image
    from timm.data.auto_augment import AugmentOp

    tf, _ = build_train_transform(load_config(ExpressionConfig, [PAPER]), 32)
    face = Image.new("RGB", (40, 40), (200, 120, 90))
    assert tf(face).shape == (3, 32, 32)
    for name in ("PosterizeIncreasing", "Posterize", "PosterizeOriginal"):
        for magnitude in (0, 5, 10):
            AugmentOp(name, prob=1.0, magnitude=magnitude)(face)
    assert AugmentOp("PosterizeIncreasing", prob=1.0, magnitude=10)(face).getpixel((0, 0)) == (0, 0, 0)


def _reference_loss(emb: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
    """The official per-sample loop: crit(a, p, n) + crit(p, a, n), summed, divided by the batch size."""
    total = 0
    for (a, p, n), t in zip(emb, types):
        crit = nn.TripletMarginLoss(margin=0.1 if TRIPLET_TYPES[t] == "ONE_CLASS_TRIPLET" else 0.2)
        total = total + crit(a[None], p[None], n[None]) + crit(p[None], a[None], n[None])
    return total / len(emb)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_euclidean_loss_equals_torch_triplet_margin_loss(dtype):
    g = torch.Generator().manual_seed(0)
    emb = F.normalize(torch.randn(32, 3, 16, generator=g, dtype=dtype), dim=-1)
    emb[:8, 2] = F.normalize(emb[:8, 0] + 0.05 * torch.randn(8, 16, generator=g, dtype=dtype), dim=-1)  # hinge on
    types = torch.randint(0, 3, (32,), generator=g)
    m = margin_tensor(DEFAULT_MARGINS)
    loss, ref = triplet_loss(emb, types, m), _reference_loss(emb, types)
    assert loss.dtype == dtype and ref.item() > 0
    torch.testing.assert_close(loss, ref.to(dtype), rtol=1e-6, atol=1e-7)
    sq = triplet_loss(emb, types, m, "squared")  # the squared form stays available, and differs
    assert abs(sq.item() - loss.item()) > 1e-3


def test_loss_never_downcasts_and_passes_gradcheck():
    g = torch.Generator().manual_seed(1)
    emb = F.normalize(torch.randn(6, 3, 8, generator=g, dtype=torch.float64), dim=-1).requires_grad_(True)
    types = torch.tensor([0, 1, 2, 0, 1, 2])
    m = margin_tensor({t: 1.0 for t in TRIPLET_TYPES})  # large margins: every hinge active, no kink nearby
    assert triplet_loss(emb, types, m).dtype == torch.float64
    assert torch.autograd.gradcheck(lambda e: triplet_loss(e, types, m), (emb,))
    assert torch.autograd.gradcheck(lambda e: triplet_loss(e, types, m, "squared"), (emb,))
    assert triplet_loss(emb.detach().bfloat16(), types, m).dtype == torch.float32  # bf16 is promoted


def test_accuracy_rule_is_the_official_one():
    g = torch.Generator().manual_seed(2)
    emb = F.normalize(torch.randn(200, 3, 4, generator=g), dim=-1)
    d1, d2, d3 = (F.pairwise_distance(emb[:, i], emb[:, j]) for i, j in ((0, 1), (0, 2), (1, 2)))
    official = ((d2 - d1) > 0) & ((d3 - d1) > 0)  # utils/metrics.py: c1 > 0 and c2 > 0
    assert 0 < official.sum() < 200
    assert torch.equal(triplet_correct(emb), official)
    swapped = emb[:, [0, 2, 1]]  # the annotated pair is now (a, n): correct exactly where a-n was closest
    assert torch.equal(triplet_correct(swapped), ((d1 - d2) > 0) & ((d3 - d2) > 0))


def test_load_encoder_takes_the_official_stage2_file(tmp_path):
    """Later stages and animate load encoders with `load_encoder`: the official file works there too."""
    from expression_finetune import load_encoder

    sd = _official_vit_b_state("module.main.")
    torch.save(sd, tmp_path / "epoch_90_acc_0.8736.pth")
    enc = load_encoder(tmp_path / "epoch_90_acc_0.8736.pth")
    assert enc.crop_margin is None and enc.feature_dim == 768 and enc.image_size == 224
    assert torch.equal(enc.model.head.weight, sd["module.main.head.weight"])
    assert not any(p.requires_grad for p in enc.parameters())
