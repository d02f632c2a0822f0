"""Stage-2 data: both triplet CSV formats, skipping with counts, bbox crops, eval vs train transforms."""
import csv

import numpy as np
import pytest
import torch
from PIL import Image

from data.images import eval_transform
from data.triplets import (
    TYPE_INDEX,
    ImageListDataset,
    TripletDataset,
    crop_box,
    read_fec_csv,
    read_simple_csv,
    read_triplets,
    unique_images,
)
from expression_finetune.transforms import preprocess_tensor, train_transform

BOX = ["0.25", "0.75", "0.125", "0.875"]  # tl_col, br_col, tl_row, br_row


def _fec_row(urls, ttype, answers, box=BOX):
    row = []
    for u in urls:
        row += [u, *box]
    row.append(ttype)
    for k, a in enumerate(answers):
        row += [str(100 + k), str(a)]
    return row


@pytest.fixture()
def fec_dir(tmp_path):
    """Four 40x32 images (w x h) with distinct colours, a url map, and a raw FEC file with bad rows."""
    for i in range(4):
        Image.new("RGB", (40, 32), (60 * i, 10, 200 - 40 * i)).save(tmp_path / f"im{i}.png")
    with open(tmp_path / "url_map.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["url", "path"])
        for i in range(4):
            w.writerow([f"http://x/{i}.jpg", f"im{i}.png"])
        w.writerow(["http://x/gone.jpg", "gone.png"])  # mapped, but the file does not exist
    u = [f"http://x/{i}.jpg" for i in range(4)]
    rows = [
        _fec_row(u[:3], "ONE_CLASS_TRIPLET", [1, 1, 1, 1, 2, 1]),  # odd = image 1 -> (u1, u2 | u0)
        _fec_row([u[3], u[1], u[2]], "THREE_CLASS_TRIPLET", [3, 3, 3, 2, 1, 3]),  # odd = u2
        _fec_row(u[:3], "TWO_CLASS_TRIPLET", [2, 2, 2, 2, 2])[:-1],  # malformed: 27 columns
        _fec_row([u[0], "http://x/gone.jpg", u[2]], "TWO_CLASS_TRIPLET", [1] * 6),  # missing image
        _fec_row(u[:3], "TWO_CLASS_TRIPLET", [1, 1, 1, 2, 2, 2]),  # 3-3 tie: no majority
        _fec_row(u[:3], "FOUR_CLASS_TRIPLET", [1] * 6),  # malformed: unknown type
        _fec_row([u[1], "http://x/unmapped.jpg", u[2]], "ONE_CLASS_TRIPLET", [1] * 6),  # url not in map
    ]
    with open(tmp_path / "fec.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return tmp_path


def test_raw_fec_skips_malformed_and_missing_and_reports_both(fec_dir, capsys):
    recs = read_fec_csv(fec_dir / "fec.csv", fec_dir / "url_map.csv", fec_dir)
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("[triplets] fec.csv: 2 triplets loaded")
    assert "2 malformed rows" in line and "2 with missing images" in line and "1 without a majority" in line
    # majority odd-one-out becomes the negative; the other two keep their file order
    assert [p.name for p in recs[0].paths] == ["im1.png", "im2.png", "im0.png"]
    assert [p.name for p in recs[1].paths] == ["im3.png", "im1.png", "im2.png"]
    assert recs[0].type == "ONE_CLASS_TRIPLET" and recs[1].type == "THREE_CLASS_TRIPLET"
    assert recs[0].boxes[0] == (0.25, 0.125, 0.75, 0.875)  # (left, top, right, bottom)


def test_fec_bbox_crop_and_auto_format(fec_dir):
    recs = read_triplets(fec_dir / "fec.csv", fec_dir, "auto", url_map=fec_dir / "url_map.csv")
    img = crop_box(Image.open(recs[0].paths[0]), recs[0].boxes[0])
    assert img.size == (20, 24)  # 40 * (0.75 - 0.25) x 32 * (0.875 - 0.125)
    with pytest.raises(ValueError, match="url_map"):
        read_triplets(fec_dir / "fec.csv", fec_dir, "auto")


def test_simple_csv_skips_and_counts(fec_dir, capsys):
    (fec_dir / "t.csv").write_text("anchor,positive,negative,type\n"
                                   "im0.png,im1.png,im2.png,TWO_CLASS_TRIPLET\n"
                                   "im0.png,im1.png,nope.png,ONE_CLASS_TRIPLET\n"
                                   "im0.png,im1.png\n"
                                   "im3.png,im2.png,im1.png,ONE_CLASS_TRIPLET\n")
    recs = read_simple_csv(fec_dir / "t.csv", fec_dir)
    assert len(recs) == 2 and recs[1].paths[0].name == "im3.png"
    assert "1 malformed rows, 1 with missing images" in capsys.readouterr().out
    (fec_dir / "bad.csv").write_text("a,b,c,d\n")
    with pytest.raises(ValueError, match="header"):
        read_simple_csv(fec_dir / "bad.csv", fec_dir)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_triplets(fec_dir / "absent.csv", fec_dir)


def test_dataset_items_and_unique_images(fec_dir):
    recs = read_fec_csv(fec_dir / "fec.csv", fec_dir / "url_map.csv", fec_dir)
    ds = TripletDataset(recs, eval_transform(16), cache=True)
    imgs, t, bad = ds[1]
    assert imgs.shape == (3, 3, 16, 16) and t == TYPE_INDEX["THREE_CLASS_TRIPLET"] and bad == ""
    items, index = unique_images(recs)
    assert index.shape == (2, 3) and len(items) == 4  # im1, im2 shared (same box) by both triplets
    single = ImageListDataset(items, eval_transform(16))
    for k in range(3):
        assert torch.equal(single[int(index[1, k])], imgs[k])
    # without augmentation each image is transformed once: the cached tensors are the same objects
    calls = []
    counted = lambda img: calls.append(1) or eval_transform(16)(img)
    once = TripletDataset(recs, counted, cache=True, deterministic=True)
    first, *_ = once[1]
    again, *_ = once[1]
    assert len(calls) == 3 and torch.equal(first, imgs) and torch.equal(again, imgs)
    TripletDataset(recs, counted, cache=True)[1]  # an augmenting transform runs on every access
    assert len(calls) == 6


@pytest.fixture(scope="module")
def demo_world(tmp_path_factory):
    from data.demo_world import make_world

    root = tmp_path_factory.mktemp("world")
    return root, make_world(root, "tiny", seed=0)


def _key(r):
    """A triplet as (similar pair, odd one, type), independent of the anchor/positive order."""
    return frozenset(p.relative_to(p.parents[1]) for p in r.paths[:2]), r.paths[2].relative_to(r.paths[2].parents[1]), \
        r.type


def test_raw_fec_of_demo_world_matches_its_simple_csv(demo_world, capsys):
    root, _ = demo_world
    simple = read_triplets(root / "triplets/train.csv", root)
    raw = read_triplets(root / "triplets/fec_train.csv", root, url_map=root / "triplets/url_map.csv")
    out = capsys.readouterr().out
    assert "fec_train.csv: 300 triplets loaded; skipped 3 malformed rows, 1 with missing images" in out
    assert raw.skipped == {"malformed rows": 3, "with missing images": 1} and simple.skipped == {}
    assert len(raw) == len(simple) and {_key(r) for r in raw} == {_key(r) for r in simple}


def test_demo_world_validation_triplets_come_from_the_validation_actors(demo_world):
    root, summary = demo_world
    url_map = root / "triplets/url_map.csv"
    val = read_triplets(root / "triplets/fec_val.csv", root, url_map=url_map)
    simple = read_triplets(root / "triplets/val.csv", root)
    test = read_triplets(root / "triplets/fec_test.csv", root, url_map=url_map)
    assert val.skipped == {} and len(val) == summary["counts"]["triplets"]["val"]["total"] > 60
    assert {_key(r) for r in val} == {_key(r) for r in simple}
    assert not {p for r in val for p in r.paths} & {p for r in test for p in r.paths}  # no image shared
    held_out = (root / "faces/val", root / "triplets/avatar_images/val")
    assert all(p.is_relative_to(held_out[0]) or p.is_relative_to(held_out[1]) for r in val for p in r.paths)
    assert {r.type for r in val} == set(TYPE_INDEX)


def test_eval_transform_is_deterministic_and_train_augmentation_is_not():
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    ev = eval_transform(64)
    assert torch.equal(ev(img), ev(img))
    tr = train_transform(64, (0.08, 1.0), 2, 9, 0.25)
    torch.manual_seed(0)
    assert not torch.equal(tr(img), tr(img))


def test_tensor_preprocess_matches_pil_eval_transform():
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)
    ref = eval_transform(64)(Image.fromarray(arr))
    x = torch.from_numpy(arr).permute(2, 0, 1)[None]  # (1, 3, 64, 80) uint8
    out = preprocess_tensor(x, 64)[0]
    assert out.shape == ref.shape and torch.allclose(out, ref, atol=1e-5)  # same size: pure centre crop
    small = preprocess_tensor(torch.rand(2, 3, 96, 96, requires_grad=True), 64)
    assert small.shape == (2, 3, 64, 64) and small.requires_grad


def test_tensor_preprocess_resizes_bf16_frames():
    """Stage 3b can feed bf16 renders: the antialiased resize has no bf16 CPU kernel, so it runs in fp32."""
    x = torch.rand(2, 3, 96, 96)
    out = preprocess_tensor(x.bfloat16(), 64)
    assert out.dtype == torch.bfloat16 and out.shape == (2, 3, 64, 64)
    assert torch.allclose(out.float(), preprocess_tensor(x, 64), atol=0.05)
