"""Every stage streams its data: the file listing is cheap and ordered as before, a dataset decoding in
DataLoader workers gives exactly the samples of its in-memory cache (`cache: true`), and the cache is
refused when torchrun runs several processes."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from common.device import seed_worker
from data.avatars import AvatarBatchSampler, AvatarRigDataset, keep_batch, load_avatars
from data.images import eval_transform
from data.loading import PathArray, build_loader
from data.triplets import TripletDataset, read_triplets
from data.video import IMAGE_EXTS, image_files, image_paths
from emb2rig.data import build_sets

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from data.demo_world import make_world

    root = tmp_path_factory.mktemp("world")
    make_world(root, "tiny", seed=0)
    return root


def _batches(ds, **kw) -> dict:
    """Every batch of a 2-worker DataLoader over `ds`, concatenated (file names joined into one list)."""
    out: dict = {}
    for b in build_loader(ds, num_workers=2, collate_fn=keep_batch, persistent_workers=False, **kw):
        for k, v in b.items():
            out.setdefault(k, []).append(v)
    return {k: sum(v, []) if isinstance(v[0], list) else torch.cat(v) for k, v in out.items()}


def test_listing_walks_nested_folders_in_path_order(tmp_path):
    names = ["b/c.png", "b.png", "b-c.png", "B/x.JPG", "a/deep/deeper/y.webp", "notes.txt", ".hidden.png",
             "dir.png/z.jpeg", "a/q.bmp", "a/r.gif"]
    for n in names:
        (tmp_path / n).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / n).write_bytes(b"")
    old = sorted(p for p in tmp_path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTS)  # the old listing
    assert image_files(tmp_path) == old and image_paths(tmp_path) == [str(p) for p in old]
    assert len(old) == 8 and (tmp_path / "b/c.png") in old and (tmp_path / "a/r.gif") not in old
    paths = PathArray(image_paths(tmp_path))
    assert list(paths) == [str(p) for p in old] and paths[3] == str(old[3]) and len(PathArray([])) == 0


def test_avatar_rows_stream_as_cached(world):
    avatars = load_avatars(world / "avatars")
    cached, streamed = (AvatarRigDataset(avatars, 16, "train", 0.25, cache=c) for c in (True, False))
    assert cached._cache is not None and streamed._cache is None
    sampler = AvatarBatchSampler(cached.avatar, 8, seed=3)
    want, got = _batches(cached, batch_sampler=sampler), _batches(streamed, batch_sampler=sampler)
    assert want.keys() == got.keys() == {"rig", "mask", "avatar", "image", "skipped", "bad"}
    assert all(torch.equal(want[k], got[k]) for k in want if k != "bad") and want["bad"] == got["bad"]


def test_faces_and_renders_stream_as_cached(world):
    avatars = load_avatars(world / "avatars")
    (cached, _), (streamed, _) = (build_sets(avatars, [world / "faces/train"], 16, 0.25, 0.0, cache=c)
                                  for c in (True, False))
    order = torch.randperm(len(cached), generator=torch.Generator().manual_seed(0)).tolist()  # faces and renders mixed
    want, got = _batches(cached, sampler=order, batch_size=16), _batches(streamed, sampler=order, batch_size=16)
    assert (want["source"] >= 0).any() and (want["source"] < 0).any()
    assert all(torch.equal(want[k], got[k]) for k in ("image", "source", "rig", "skipped"))
    one = streamed.__getitems__(order[:5])  # a batch keeps the order it was asked in
    assert all(torch.equal(one["image"][i], streamed[j]["image"]) for i, j in enumerate(order[:5]))


@pytest.mark.parametrize("augment", [False, True])
def test_triplets_stream_as_cached(world, augment):
    from torchvision import transforms as T

    recs = read_triplets(world / "triplets/fec_train.csv", world, "fec", world / "triplets/url_map.csv")
    tf = T.Compose([T.RandomResizedCrop(16, scale=(0.5, 1.0)), T.ToTensor()]) if augment else eval_transform(16)
    out = []
    for cache in (True, False):
        ds = TripletDataset(recs, tf, cache=cache, margin=0.0, deterministic=not augment)
        torch.manual_seed(0)
        out.append([ds[i][0] for i in range(12)])
    assert all(torch.equal(a, b) for a, b in zip(*out))


def test_cache_is_refused_under_torchrun(world, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    avatars = load_avatars(world / "avatars")
    assert AvatarRigDataset(avatars, 16, "train", 0.25, cache=True)._cache is None
    train, val = build_sets(avatars, [world / "faces/train"], 16, 0.25, 0.0, cache=True)
    assert train._cache is None and train.renders._cache is None and val._cache is None
    recs = read_triplets(world / "triplets/fec_train.csv", world, "fec", world / "triplets/url_map.csv")
    assert not TripletDataset(recs, eval_transform(16), cache=True, deterministic=True).cache
    out = capsys.readouterr().out
    assert "cache: true is ignored for avatar renders in a run of 2 processes" in out
    assert "ignored for actor faces" in out and "ignored for training triplets" in out
    monkeypatch.setenv("RANK", "1")  # said once, by rank 0
    AvatarRigDataset(avatars, 16, "train", 0.25, cache=True)
    assert "ignored" not in capsys.readouterr().out


def test_one_loader_builder():
    ds = torch.utils.data.TensorDataset(torch.arange(10))
    g = torch.Generator()
    loader = build_loader(ds, batch_size=4, num_workers=2, device=torch.device("cpu"), generator=g, prefetch_factor=3)
    assert loader.generator is g and loader.worker_init_fn is seed_worker and not loader.pin_memory
    assert loader.persistent_workers and loader.prefetch_factor == 3 and loader.num_workers == 2
    plain = build_loader(ds, batch_size=4, prefetch_factor=3)  # no workers: no persistence, no prefetch
    assert not plain.persistent_workers and plain.prefetch_factor is None
    assert [b[0].tolist() for b in plain] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_face_folders_keep_boxes_per_file(tmp_path):
    from data.images import ImageFolderDataset

    for name in ("a/1.png", "a/2.png", "b/3.png"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        Image.new("RGB", (40, 40), (200, 10, 10)).save(tmp_path / name)
    (tmp_path / "face_boxes.csv").write_text("image,x0,y0,x1,y1\nb/3.png,0.25,0.25,0.75,0.75\n")
    ds = ImageFolderDataset(tmp_path, crop_margin=0.0)
    assert [Path(f).name for f in ds.files] == ["1.png", "2.png", "3.png"]
    assert [ds[i].size for i in range(3)] == [(40, 40), (40, 40), (20, 20)]
