"""3-D shaded actors (data/demo_world/actors3d.py) and the demo world's `actors_3d` option."""
import dataclasses
import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from avatar3d.render import MeshRenderer, RenderSettings
from data.demo_world import world
from data.demo_world.actors import render_actor, sample_identity, sample_pose
from data.demo_world.actors3d import PARTS, _identity_mesh, _renderer, render_actor3d, sample_identity3d, sample_pose3d
from data.demo_world.expressions import prototype, sample_expression
from data.demo_world.head3d import build_head
from tests.gl import needs_egl

pytestmark = needs_egl
SIZE = 96


def _idn(k: int) -> dict:
    return sample_identity3d(np.random.default_rng([0, 1, k]))


def _pose(k: int) -> dict:
    return sample_pose3d(np.random.default_rng([0, 2, k]))


def test_update_with_the_same_settings_renders_what_a_new_renderer_does():
    """`MeshRenderer.update` is backward compatible: no change in, the same picture out; the screen map moves it."""
    mesh, s = build_head(), RenderSettings(size=64)
    w = np.linspace(0, 0.8, len(mesh.target_names))
    r = MeshRenderer(mesh, s)
    ref = r.render(w)
    r.update(mesh=mesh.select(["skin", "nose"]))
    r.update(mesh=mesh, settings=dataclasses.replace(s, yaw_deg=20, light=(-1, 0, 1)))
    assert not np.array_equal(r.render(w), ref)
    r.update(mesh=mesh, settings=s)
    assert np.array_equal(r.render(w), ref)
    tip = mesh.vertices[[mesh.vertices[:, 2].argmax()]]
    before = r.project(tip)
    r.update(screen=np.array([[1, 0, 0.125], [0, 1, -0.0625]]))  # the picture shifts 8 px right, 4 px up
    assert np.allclose(r.project(tip), before + [0.125, -0.0625])
    shifted = r.render(w).astype(np.float32)
    assert np.abs(shifted[:-4, 8:] - ref[4:, :-8]).mean() < 1.0
    r.release()


def test_expressions_move_the_mouth_more_than_the_forehead():
    idn, size = _idn(0), SIZE
    imgs = {c: render_actor3d(idn, prototype(c), None, size) for c in ("neutral", "happy", "sad", "surprise")}
    (x0, x1, y0, y1) = (np.asarray(imgs["neutral"][1]) * size).astype(int)
    for a in imgs:
        for b in imgs:
            assert a == b or not np.array_equal(imgs[a][0], imgs[b][0]), (a, b)
    diff = np.abs(imgs["happy"][0].astype(np.float32) - imgs["neutral"][0]).sum(2)  # (size, size)
    h, cols = y1 - y0, slice(x0 + (x1 - x0) // 4, x1 - (x1 - x0) // 4)
    forehead = diff[y0 + int(0.1 * h):y0 + int(0.3 * h), cols].mean()
    mouth = diff[y0 + int(0.65 * h):y0 + int(0.9 * h), cols].mean()
    assert mouth > 5 * max(forehead, 0.5), (mouth, forehead)


def test_identities_differ_and_renders_are_deterministic():
    au, pose = prototype("happy"), _pose(0)
    a1, b1 = render_actor3d(_idn(0), au, pose, SIZE)
    other, _ = render_actor3d(_idn(1), au, pose, SIZE)  # the renderer switches meshes and back
    a2, b2 = render_actor3d(_idn(0), au, pose, SIZE)
    assert np.array_equal(a1, a2) and np.array_equal(b1, b2)
    assert np.abs(a1.astype(np.float32) - other).mean() > 10


@pytest.mark.parametrize("k", range(4))
def test_face_box_frames_the_face_in_the_picture(k):
    """The box comes from the same projection as the picture: the nose tip lies inside it and shows there."""
    idn, pose = _idn(k), _pose(k)
    img, (x0, x1, y0, y1) = render_actor3d(idn, prototype("surprise"), pose, SIZE)
    mesh = _identity_mesh(idn)
    nose = np.unique(mesh.faces[mesh.face_part == PARTS.index("nose")])
    tip = _renderer(SIZE).project(mesh.vertices[[nose[mesh.vertices[nose, 2].argmax()]]])[0]
    assert x0 < tip[0] < x1 and y0 < tip[1] < y1
    assert 0.45 < y1 - y0 < 0.95 and 0.3 < x1 - x0 < 0.9 and 0 < x0 and x1 < 1 and 0 < y0 and y1 < 1
    px = img[int(tip[1] * SIZE), int(tip[0] * SIZE)].astype(np.float32)
    corner = img[1, 1].astype(np.float32)  # background
    assert np.abs(px - corner).sum() > 30


@pytest.mark.parametrize("kind", ["drawn", "3d"])
def test_face_boxes_frame_faces_as_test_mode_does(kind):
    """Stage 2 crops training faces by their world boxes, test mode crops by YuNet's: the two framings
    agree on both kinds of actor (the crop's side and centre within a few % of the face size), so an encoder
    sees a real face in test mode at the scale it learned synthetic ones."""
    from data.face_detect import Box, DetectorUnavailable, build_detector
    from data.face_track import face_size
    try:
        det = build_detector("yunet")
    except DetectorUnavailable as e:
        pytest.skip(str(e))
    rng = np.random.default_rng(11)
    scale, shift = [], []
    for _ in range(24):
        au = rng.uniform(0, 1, 14) * (rng.random(14) < 0.3)
        if kind == "3d":
            img, (x0, x1, y0, y1) = render_actor3d(sample_identity3d(rng), au, sample_pose3d(rng), 128)
        else:
            img, (x0, x1, y0, y1) = render_actor(sample_identity(rng), au, sample_pose(rng), 128)
        found = det.detect(img)
        assert found, "YuNet finds every demo face"
        b, w = max(found, key=lambda b: b.width * b.height), Box(x0 * 128, y0 * 128, x1 * 128, y1 * 128)
        scale.append(face_size(b) / face_size(w))
        shift.append(np.hypot(b.center[0] - w.center[0], b.center[1] - w.center[1]) / face_size(w))
    assert 0.95 < np.mean(scale) < 1.05 and np.mean(shift) < 0.05, (np.mean(scale), np.mean(shift))


# --- the world's actors_3d option: a few actors with a few faces each
_FEW = dict(train_actors=4, val_actors=2, test_actors=2, faces_per_train=6, faces_per_test=12, face_size=48,
            triplets_train=20, triplets_val=8, triplets_test=8, avatar_pairs=3, avatar_trip_train=4,
            avatar_trip_val=2, avatar_trip_test=2, eval_train_actors=2)


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    root = tmp_path_factory.mktemp("worlds3d")
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(world.PRESETS, "tiny", _FEW)
        world.make_world(root / "default", "tiny", 0, image_size=32, workers=1)
        world.make_world(root / "zero", "tiny", 0, image_size=32, workers=1, actors_3d=0.0)
        world.make_world(root / "half", "tiny", 0, image_size=32, workers=1, actors_3d=0.5)
    return root


def _hashes(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_no_3d_actors_leaves_the_world_byte_identical(worlds):
    assert _hashes(worlds / "zero") == _hashes(worlds / "default")
    assert "actors_3d" not in json.loads((worlds / "zero/world.json").read_text())


def test_a_share_of_the_actors_is_rendered_in_3d(worlds):
    s = json.loads((worlds / "half/world.json").read_text())
    n = _FEW["train_actors"] + _FEW["val_actors"] + _FEW["test_actors"]
    listed = s["actors_3d_indices"]
    assert s["actors_3d"] == 0.5 and 0 < len(listed) < n and listed == sorted(listed)
    drawn = [a for a in range(_FEW["train_actors"]) if a not in listed]
    three = [a for a in range(_FEW["train_actors"]) if a in listed]
    assert drawn and three, "pick a seed with both kinds among the training actors"
    for a, is_3d in ((drawn[0], False), (three[0], True)):  # each face is its kind's render of the same expression
        rel = f"faces/train/actor_{a:04d}/000.png"
        rng = np.random.default_rng([0, world.K_FACE, a * _FEW["faces_per_train"]])
        _, au = sample_expression(rng)
        idn_rng = np.random.default_rng([0, world.K_IDENTITY, a])
        if is_3d:
            ref, _ = render_actor3d(sample_identity3d(idn_rng), np.round(au, 4), sample_pose3d(rng), 48)
        else:
            ref, _ = render_actor(sample_identity(idn_rng), np.round(au, 4), sample_pose(rng), 48)
        img = cv2.cvtColor(cv2.imread(str(worlds / "half" / rel)), cv2.COLOR_BGR2RGB)
        assert np.array_equal(img, ref), rel
        assert (_hashes(worlds / "half")[rel] == _hashes(worlds / "default")[rel]) == (not is_3d)
    # the expression labels are the ones the drawn actors had
    assert (worlds / "half/eval/test_actors.csv").read_bytes() == (worlds / "default/eval/test_actors.csv").read_bytes()


def test_the_demo_does_not_reuse_a_3d_world_of_an_older_kind(tmp_path):
    """A 3-D world made before the face boxes were put in YuNet's framing (no `actors_3d_version`) is not
    taken for a current one: under an --out with finished steps the demo stops and says why."""
    from data.demo_world.actors3d import ACTORS3D_VERSION
    from scripts import demo
    info = dict(preset="tiny", seed=0, version=world.WORLD_VERSION, actors_3d=0.5)
    (tmp_path / "world").mkdir()
    (tmp_path / "mae").mkdir()
    (tmp_path / "mae/summary.json").write_text("{}")
    (tmp_path / "world/world.json").write_text(json.dumps(info))
    with pytest.raises(SystemExit, match="holds a run on another world"):
        demo.make_world(tmp_path / "world", "tiny", 0, 0.5)
    (tmp_path / "world/world.json").write_text(json.dumps(dict(info, actors_3d_version=ACTORS3D_VERSION)))
    assert demo.make_world(tmp_path / "world", "tiny", 0, 0.5) == 0.0  # current: kept
