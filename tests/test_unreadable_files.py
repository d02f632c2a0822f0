"""Unreadable images in every stage's data are skipped and counted, never fatal: a face or render
overwritten with random bytes is replaced by the next readable sample (batch shapes stay fixed), the
skip travels with the batches out of DataLoader worker processes, the engines return the epoch's count
and print a warning naming the file; every other sample is exactly what the clean data gives."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Subset

from common.config import load_config
from common.device import make_scaler
from common.dist import DistInfo
from data.avatars import AvatarRigDataset, keep_batch, load_avatars
from data.images import eval_transform
from data.triplets import TripletDataset, read_triplets

CPU = DistInfo(0, 1, 0, torch.device("cpu"))
VAL_FRACTION = 0.25


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _corrupt(path: Path, seed: int) -> None:
    """Random bytes over a valid image (same name, same size)."""
    path.write_bytes(np.random.default_rng(seed).bytes(path.stat().st_size))


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    """(clean tiny world, the same world with corrupt files, {what: corrupt file relative to the world})."""
    from data.avatars import is_held_out
    from data.demo_world import make_world

    clean = tmp_path_factory.mktemp("clean")
    make_world(clean, "tiny", seed=0)
    bad_root = tmp_path_factory.mktemp("corrupt") / "world"
    shutil.copytree(clean, bad_root)
    trip = read_triplets(clean / "triplets/fec_train.csv", clean, "fec", clean / "triplets/url_map.csv")
    held = read_triplets(clean / "triplets/fec_test.csv", clean, "fec", clean / "triplets/url_map.csv")
    renders = sorted((clean / "avatars/cat/images").glob("*.png"))
    rel = lambda p: p.relative_to(clean).as_posix()
    bad = {"train_face": rel(trip[0].paths[0]), "test_face": rel(held[0].paths[0]),
           "train_render": rel(next(p for p in renders if not is_held_out(f"images/{p.name}", VAL_FRACTION))),
           "val_render": rel(next(p for p in renders if is_held_out(f"images/{p.name}", VAL_FRACTION)))}
    for k, f in enumerate(bad.values()):
        _corrupt(bad_root / f, k)
    return clean, bad_root, bad


def _iterate(ds, num_workers: int = 2, **kw) -> list:
    return list(DataLoader(ds, num_workers=num_workers, shuffle=False, **kw))


def test_stage1_face_folder(worlds, tmp_path, capsys):
    from mae_pretrain import build_mae
    from mae_pretrain.config import MAEPretrainConfig
    from mae_pretrain.data import FaceImages
    from mae_pretrain.engine import build_optimizer, train_one_epoch

    clean, corrupt, bad = worlds
    ref = FaceImages(clean / "faces/train", eval_transform(64))
    ds = FaceImages(corrupt / "faces/train", eval_transform(64))
    i = [str(f) for f in ds.files].index(str(corrupt / bad["train_face"]))
    batches = _iterate(ds, batch_size=64)
    x = torch.cat([b[0] for b in batches])
    flags = [f for b in batches for f in b[1]]
    assert flags == ["" if k != i else str(corrupt / bad["train_face"]) for k in range(len(ds))]
    want = torch.stack([ref[k][0] for k in range(len(ref))])
    want[i] = want[(i + 1) % len(ref)]  # the next readable image
    assert torch.equal(x, want)

    cfg = load_config(MAEPretrainConfig, [f"output_dir={tmp_path}", "model=mae_vit_tiny_patch8_64", "device=cpu",
                                          "precision=fp32", "epochs=1", "steps_per_epoch=2", "warmup_epochs=0"])
    model = build_mae(cfg.model)
    loader = DataLoader(Subset(ds, [(i + k) % len(ds) for k in range(-3, 5)]), batch_size=4, num_workers=2)
    stats = train_one_epoch(model, loader, build_optimizer(model, 1e-4, 0.05, CPU.device), make_scaler(CPU.device,
                            "fp32"), 0, cfg, device=CPU.device, lr=1e-4, show_progress=False)
    assert stats["skipped_images"] == 1 and np.isfinite(stats["train_loss"])
    out = capsys.readouterr().out
    assert "WARNING epoch 1: 1 of 8 images (12.50%) could not be read" in out and bad["train_face"] in out

    (tmp_path / "junk").mkdir()
    for f in ("a.png", "b.png"):
        (tmp_path / "junk" / f).write_bytes(b"not an image")
    with pytest.raises(RuntimeError, match=f"none of the 2 items under {tmp_path / 'junk'} can be read"):
        FaceImages(tmp_path / "junk", eval_transform(64))[0]


def test_stage2_triplets_train_and_held_out(worlds, tmp_path, capsys):
    from expression_finetune import build_expression_vit
    from expression_finetune.config import ExpressionConfig
    from expression_finetune.engine import train_one_epoch
    from expression_finetune.evaluate import read_triplet_set, score
    from expression_finetune.losses import DEFAULT_MARGINS, margin_tensor

    clean, corrupt, bad = worlds
    read = lambda root: read_triplets(root / "triplets/fec_train.csv", root, "fec", root / "triplets/url_map.csv")
    ref = TripletDataset(read(clean), eval_transform(16), margin=0.0)
    ds = TripletDataset(read(corrupt), eval_transform(16), margin=0.0)
    uses = [k for k, r in enumerate(read(corrupt)) if corrupt / bad["train_face"] in r.paths]
    assert uses and uses[0] == 0
    batches = _iterate(ds, batch_size=100)
    x, flags = torch.cat([b[0] for b in batches]), [f for b in batches for f in b[2]]
    assert [k for k, f in enumerate(flags) if f] == uses and all(f.endswith(bad["train_face"]) for f in flags if f)
    for k in range(len(ds)):  # a triplet with the corrupt image is the next readable triplet, the others as clean
        j = next(j for j in range(k, len(ds)) if j not in uses)
        assert torch.equal(x[k], ref[j][0]), k

    torch.manual_seed(0)
    model = build_expression_vit("mae_vit_tiny_patch16_64", 16)
    train = TripletDataset(read(corrupt), eval_transform(64), margin=0.0)
    loader = DataLoader(Subset(train, list(range(8))), batch_size=4, num_workers=2)
    margins = margin_tensor(DEFAULT_MARGINS)
    stats = train_one_epoch(model, loader, torch.optim.AdamW(model.parameters(), 1e-4), make_scaler(CPU.device, "fp32"),
                            margins, 0, CPU, "fp32", lambda e: 1e-4, max_steps=2)
    n_bad = sum(k < 8 for k in uses)
    assert stats["train/skipped_triplets"] == n_bad and np.isfinite(stats["train/loss"])
    out = capsys.readouterr().out
    assert f"WARNING epoch 0: {n_bad} of 8 training triplets" in out and bad["train_face"] in out

    # held-out: the triplets that use the corrupt test face are left out of the score and counted
    cfg = lambda root: load_config(ExpressionConfig, ["configs/demo/expression.yaml", f"data_root={root}",
                                                      f"output_dir={tmp_path}", "num_workers=2", "precision=fp32"])
    model.eval()
    clean_set, bad_set = read_triplet_set(cfg(clean), "triplets/fec_test.csv", 64), \
        read_triplet_set(cfg(corrupt), "triplets/fec_test.csv", 64)
    res = score(model, bad_set, cfg(corrupt), CPU)
    rows = [k for k, (p, _) in enumerate(bad_set.images.items) if p == corrupt / bad["test_face"]]
    left_out = torch.isin(bad_set.index, torch.tensor(rows)).any(1)  # (T,) the triplets that use it
    assert res["skipped"]["with unreadable images"] == int(left_out.sum()) > 0
    assert res["n_triplets"] == len(bad_set.types) - int(left_out.sum())
    clean_set.index, clean_set.types = clean_set.index[~left_out], clean_set.types[~left_out]
    want = score(model, clean_set, cfg(clean), CPU)
    assert res["triplet_acc"] == want["triplet_acc"] and res["loss"] == pytest.approx(want["loss"], rel=1e-5)
    assert "are left out of the score" in capsys.readouterr().out


def test_stage3a_avatar_renders(worlds, tmp_path, capsys):
    from rig2img.config import Rig2ImgConfig
    from rig2img.main import main

    clean, corrupt, bad = worlds
    ref = AvatarRigDataset(load_avatars(clean / "avatars"), 16, "train", VAL_FRACTION, cache=True)
    ds = AvatarRigDataset(load_avatars(corrupt / "avatars"), 16, "train", VAL_FRACTION, cache=True)
    assert ds.unreadable == [str(corrupt / bad["train_render"])] and "1 of" in capsys.readouterr().out
    every = list(range(len(ds)))
    got, clean_rows = ds.__getitems__(every), ref.__getitems__(every)
    j = int(got["skipped"].nonzero())
    assert got["bad"] == ["" if k != j else str(corrupt / bad["train_render"]) for k in every]
    src = next(k for k in range(j + 1, len(ref)) if ref.avatar[k] == ref.avatar[j])
    for key in ("rig", "image", "avatar", "mask"):
        want = clean_rows[key].clone()
        want[j] = want[src]  # the next readable row of the same avatar
        assert torch.equal(got[key], want), key
    streamed = AvatarRigDataset(load_avatars(corrupt / "avatars"), 16, "train", VAL_FRACTION)  # decoded in workers
    batches = _iterate(streamed, batch_size=64, collate_fn=keep_batch)
    assert sum(int(b["skipped"].sum()) for b in batches) == 1
    assert torch.equal(torch.cat([b["image"] for b in batches]), got["image"])

    n = len(ds)
    bs = max(b for b in range(2, 17) if n % b == 0)  # every training row is drawn once per epoch
    args = ["configs/demo/rig2img.yaml", f"data_root={corrupt / 'avatars'}", f"output_dir={tmp_path / 'run'}",
            "model.image_size=16", "model.base_channels=4", "model.max_channels=16", "model.id_dim=4",
            f"val_fraction={VAL_FRACTION}", "grid_samples=2", "epochs=1", "num_workers=2", "model.mode=shared",
            f"batch_size={bs}"]
    main(load_config(Rig2ImgConfig, args))
    rec = [json.loads(s) for s in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert rec[-1]["train/skipped_images"] == 1 and np.isfinite(rec[-1]["val/psnr"])
    assert f"epoch 0: 1 of {n} rows" in capsys.readouterr().out

    # held-out metrics leave the unreadable row out
    from data.avatars import box_mask
    from rig2img.engine import evaluate
    from rig2img.models import build_renderer

    val_bad = AvatarRigDataset(load_avatars(corrupt / "avatars"), 16, "val", VAL_FRACTION)
    clean_avatars = load_avatars(clean / "avatars")  # without the row whose image is corrupt in the other world
    cat = next(a for a in clean_avatars if a.name == "cat")
    k = cat.images.index(clean / bad["val_render"])
    cat.images.pop(k)
    cat.rigs = np.delete(cat.rigs, k, 0)
    val_ref = AvatarRigDataset(clean_avatars, 16, "val", VAL_FRACTION)
    cfg = load_config(Rig2ImgConfig, args)
    torch.manual_seed(0)
    net = build_renderer([len(a.controls) for a in val_bad.avatars], cfg.model)
    regions = torch.stack([box_mask(a.boxes, 16) for a in val_bad.avatars])
    got, want = evaluate(net, val_bad, regions, cfg, CPU), evaluate(net, val_ref, regions, cfg, CPU)
    assert got == pytest.approx(want, rel=1e-5)

    shutil.copytree(clean / "avatars/robot", tmp_path / "avatars/robot")
    for f in (tmp_path / "avatars/robot/images").iterdir():
        _corrupt(f, 0)
    with pytest.raises(RuntimeError, match=f"under {tmp_path / 'avatars/robot'} \\(avatar 'robot', all rows\\) can"):
        AvatarRigDataset(load_avatars(tmp_path / "avatars"), 16, "all", cache=True)
    with pytest.raises(RuntimeError, match="avatar 'robot'"):  # streaming: when a robot row is asked for
        AvatarRigDataset(load_avatars(tmp_path / "avatars"), 16, "all")[-1]


def test_stage3b_faces_and_renders(worlds):
    from emb2rig.data import build_sets

    clean, corrupt, bad = worlds
    sets = {r: build_sets(load_avatars(r / "avatars"), [r / "faces/train"], 16, VAL_FRACTION, 0.0, cache=True)
            for r in (clean, corrupt)}
    (ref_train, ref_val), (train, val) = sets[clean], sets[corrupt]
    assert sorted(train.unreadable + val.unreadable) == sorted(str(corrupt / bad[k]) for k in
                                                               ("train_face", "train_render", "val_render"))
    for ref_set, ds in ((ref_train, train), (ref_val, val)):
        assert len(ds) == len(ref_set) and ds.n_faces == ref_set.n_faces
        got, ref = ds.__getitems__(list(range(len(ds)))), ref_set.__getitems__(list(range(len(ds))))
        rows = got["skipped"].nonzero().flatten().tolist()
        named = [f for f in got["bad"] if f]  # each flagged row names its unreadable file
        assert len(named) == len(rows) and set(named) <= {str(corrupt / f) for f in bad.values()}
        same = torch.ones(len(ds), dtype=torch.bool)
        same[rows] = False
        for key in ("image", "source", "rig"):
            assert torch.equal(got[key][same], ref[key][same]), key
        for j in rows:  # a readable row of the same kind (face, or render of the same avatar) stands in
            assert got["source"][j] == ref["source"][j] and any(
                torch.equal(got["image"][j], ref["image"][k]) for k in range(len(ds))
                if ref["source"][k] == ref["source"][j] and k != j)
    streamed, _ = build_sets(load_avatars(corrupt / "avatars"), [corrupt / "faces/train"], 16, VAL_FRACTION, 0.0)
    batches = _iterate(streamed, batch_size=64, collate_fn=keep_batch)
    cached = train.__getitems__(list(range(len(train))))
    assert sum(int(b["skipped"].sum()) for b in batches) == int(cached["skipped"].sum()) >= 1
    assert torch.equal(torch.cat([b["image"] for b in batches]), cached["image"])


def test_stage3b_training_counts_them(worlds, tmp_path, monkeypatch, capsys):
    """The whole stage-3b run on the corrupt world: it trains, and the epoch's count reaches the metrics."""
    import json

    from animate.config import Emb2RigCommand
    from common.config import load_config
    from emb2rig import main as main_mod
    from tests.test_emb2rig import stand_in_networks

    _, corrupt, _ = worlds
    stand_in_networks(corrupt, monkeypatch)
    cfg = load_config(Emb2RigCommand, ["configs/demo/emb2rig.yaml", f"output_dir={tmp_path / 'run'}",
                                       f"data_root={corrupt}", "epochs=1", "batch_size=64", "model.width=32",
                                       "val_samples=16", "num_workers=0"])
    main_mod.main(cfg)
    rec = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert rec["train/skipped_images"] >= 1 and np.isfinite(rec["train/total"])
    assert "could not be read" in capsys.readouterr().out
