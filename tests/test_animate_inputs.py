"""Animate (stage-3b test mode) on harder inputs, with the stand-in networks of tests/test_animate.py: two
people in view (the track stays on the actor through a short hold; faces are counted; the curves restart
after the gap), a variable-frame-rate clip (real frame times in the CSV, a preview in sync), a truncated
video (reported), and the input kinds: a single image, an image folder with an unreadable file, a glob
pattern, and inputs with nothing to read (refused with a message naming them).
"""
from __future__ import annotations

import json
import math
import re

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

import animate.detect as animate_detect
import animate.main as animate_main
import tests.test_animate as test_animate
from animate.config import AnimateSettings
from animate.detect import detect_frames
from animate.outputs import StepTimer
from data.face_detect import Box
from data.face_track import DETECTED, HELD, FaceTracker
from data.video import VideoReader, write_video
from tests.test_animate import NAMES, read_csv, run
from tests.video_clips import grey_level, make_truncated_clip, make_vfr_clip

world = test_animate.world  # the stage-3b world fixture of tests/test_animate.py, found here by pytest
RED = (230, 60, 60)


def disc(f: np.ndarray, cx: float, cy: float, r: float, colour=RED) -> np.ndarray:
    yy, xx = np.mgrid[:f.shape[0], :f.shape[1]]
    f[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = colour
    return f


class ComponentDetector:
    """Fake face detector: one box per red connected component (of >= 30 px), largest first."""
    name = "components"

    def detect(self, rgb):
        mask = ((rgb[..., 0] > 180) & (rgb[..., 1] < 120)).astype(np.uint8)
        _, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        boxes = [Box(float(x), float(y), float(x + w), float(y + h), 0.9) for x, y, w, h, a in stats[1:] if a >= 30]
        return sorted(boxes, key=lambda b: -b.area)


# --- two people: the actor (small, centre-left, hidden in HIDDEN) and a bystander (larger, right, always seen)

T2, HIDDEN = 32, range(8, 11)  # HIDDEN: 3 frames < crop.max_missing (5): the track is held, not ended
BYSTANDER = (102.0, 46.0, 20)  # cx, cy, r


def actor(i: int) -> tuple[float, float, int]:
    """cx, cy, r of the actor's disc in frame i (moves and changes size a little, so the rig moves)."""
    return 46.0 + i % 4, 48.0, 12 + i % 3


def two_people_frames():
    """(96, 128, 3) frames. Frame centre (64, 48): the actor's centre is ~16 px from it, the bystander's
    ~38 px, so `face=center` starts the track on the actor ('track' / 'largest' would pick the bystander).
    The actor's track square (side ~1.6 * 26 px) is far from the bystander (>= 53 px between centres), so
    the bystander can never continue the track."""
    for i in range(T2):
        f = np.full((96, 128, 3), 60, np.uint8)
        f[..., 2] = 40 + 3 * i  # the background drifts
        disc(f, *BYSTANDER, colour=(230, 60, 40))
        if i not in HIDDEN:
            disc(f, *actor(i), colour=(230, 60, 200 - 4 * i))
        yield f


def true_faces(i: int) -> int:
    return 1 if i in HIDDEN else 2


def test_two_people_the_track_stays_on_the_actor_through_a_hold(monkeypatch):
    squares = []

    class Recording(FaceTracker):
        def update(self, boxes, t=None, frame_size=None):
            res = super().update(boxes, t, frame_size)
            squares.append(res.square)
            return res

    monkeypatch.setattr(animate_detect, "FaceTracker", Recording)
    for window in (1.5, 0.0):  # the default: the window around the track, whole frame every 15th; whole frame
        squares.clear()
        cfg = AnimateSettings(face="center", detect_window=window, preview=False)
        cfg.crop.size = 32  # as animate.main.run sets it from the encoder
        assert cfg.count_faces_every == 15 and cfg.crop.max_missing == 5
        timed = ((i / 24, f) for i, f in enumerate(two_people_frames()))
        items = list(detect_frames(timed, ComponentDetector(), cfg, 24, True, StepTimer(torch.device("cpu"))))
        assert len(items) == len(squares) == T2
        status = [it.status for it in items]
        assert [i for i, s in enumerate(status) if s != DETECTED] == list(HIDDEN)
        assert all(status[i] == HELD for i in HIDDEN)
        assert sum(it.new_track for it in items) == 1 and items[0].new_track
        for i, sq in enumerate(squares):
            assert sq is not None
            ax, ay, _ = actor(max(j for j in range(i + 1) if j not in HIDDEN))  # held: the last actor position
            assert math.hypot(sq.cx - ax, sq.cy - ay) < 6, (window, i, sq)
            assert math.hypot(sq.cx - BYSTANDER[0], sq.cy - BYSTANDER[1]) > 40, (window, i, sq)
            assert 30 < sq.side < 50, (window, i, sq)  # the actor's size (the bystander's square: ~64)
            if i not in HIDDEN:  # the crop's centre is the actor's disc (blue 200 - 4i; the bystander's is 40)
                c = items[i].crop[16, 16].astype(int)
                assert c[0] > 180 and c[1] < 120 and abs(c[2] - (200 - 4 * i)) < 25, (window, i, c)
        faces = [it.faces for it in items]
        if window == 0:
            assert faces == [true_faces(i) for i in range(T2)]
        else:  # whole-frame counts on every 15th frame; in between the count may be stale but never too high
            for i in range(0, T2, 15):
                assert faces[i] == true_faces(i), (i, faces)
            assert all(n <= 2 for n in faces) and all(faces[i] >= 1 for i in range(T2))


def test_two_people_end_to_end_counts_faces_and_restarts_the_curves(world, monkeypatch, tmp_path):
    write_video(tmp_path / "two.mp4", two_people_frames(), fps=24)
    monkeypatch.setattr(test_animate, "DiscDetector", ComponentDetector)  # what run()'s build_detector returns
    common = [f"test.input={tmp_path / 'two.mp4'}", "test.face=center", "test.detect_window=0", "test.preview=false"]
    s = run(world, monkeypatch, *common, f"test.out_dir={tmp_path / 'smooth'}")
    r = run(world, monkeypatch, *common, f"test.out_dir={tmp_path / 'raw'}", "test.smoothing.enabled=false")
    assert json.loads((tmp_path / "smooth" / "summary.json").read_text())["detector"] == "components"
    for summary in (s, r):
        assert summary["frames"] == T2 and summary["tracks"] == 1
        assert summary["missing_frames"] == list(HIDDEN) and summary["faces_found"] == T2 - len(HIDDEN)
        assert summary["frames_with_several_faces"] == T2 - len(HIDDEN)
    assert s["smoothed"] and not r["smoothed"]
    first_after = HIDDEN[-1] + 1
    for name in NAMES:
        _, smooth = read_csv(tmp_path / "smooth" / f"{name}.csv")
        _, raw = read_csv(tmp_path / "raw" / f"{name}.csv")
        found, faces = smooth[:, -2], smooth[:, -1]
        np.testing.assert_array_equal(faces, [true_faces(i) for i in range(T2)])
        np.testing.assert_array_equal(found, [0 if i in HIDDEN else 1 for i in range(T2)])
        np.testing.assert_array_equal(raw[:, -2:], smooth[:, -2:])
        cs, cr = smooth[:, 2:-2], raw[:, 2:-2]
        for i in HIDDEN:  # the last rig is kept
            np.testing.assert_array_equal(cs[i], cs[HIDDEN[0] - 1])
            np.testing.assert_array_equal(cr[i], cr[HIDDEN[0] - 1])
        np.testing.assert_allclose(cs[0], cr[0], atol=2e-5)  # the filter passes its first sample
        np.testing.assert_allclose(cs[first_after], cr[first_after], atol=2e-5)  # ... and restarts after the gap
        later = np.abs(cs - cr).max(axis=1)  # (T2,) smoothing changes the frames inside a stretch
        assert later[first_after + 2:].min() > 1e-4 and later[2:HIDDEN[0]].min() > 1e-4, later
        assert np.abs(np.diff(cr[first_after:], axis=0)).max() > 1e-3  # the raw rig follows the actor


# --- variable frame rate

VFR_TIMES = [0.0, 0.04, 0.3, 0.34, 0.9, 0.94, 1.0, 1.5]


def vfr_frames():
    """(96, 128) frames with a red disc ('face') on a flat grey background whose level tells the frame."""
    n = len(VFR_TIMES)
    return [disc(np.full((96, 128, 3), grey_level(i, n), np.uint8), 64, 48, 14 + i % 3) for i in range(n)]


def test_variable_frame_rate_keeps_the_real_times_and_the_preview_in_sync(world, monkeypatch, tmp_path):
    clip = make_vfr_clip(tmp_path / "vfr.mp4", vfr_frames(), VFR_TIMES)
    out = tmp_path / "out"
    s = run(world, monkeypatch, f"test.input={clip}", f"test.out_dir={out}")
    assert s["kind"] == "video" and s["frames"] == len(VFR_TIMES) and s["faces_found"] == len(VFR_TIMES)
    for name in NAMES:
        _, rows = read_csv(out / f"{name}.csv")
        np.testing.assert_allclose(rows[:, 1], VFR_TIMES, atol=2e-3)
    fps = s["source_fps"]
    reader = VideoReader(out / "preview.mp4")
    preview = list(reader)
    assert abs(reader.fps - fps) < 0.05 * fps
    duration = VFR_TIMES[-1] + 1 / fps  # the last frame stays one nominal period
    assert abs(len(preview) / reader.fps - duration) <= 1 / fps + 1e-6, (len(preview), reader.fps, duration)
    # preview frame k shows the source frame on screen at the middle of its period (data.video.retime)
    n = len(VFR_TIMES)
    want = [max(j for j, t in enumerate(VFR_TIMES) if t <= (k + 0.5) / fps + 1e-6) for k in range(len(preview))]
    got = [int(f[28, 1].astype(int).mean()) for f in preview]  # a background pixel of the input panel
    for k, (j, g) in enumerate(zip(want, got)):
        assert abs(g - grey_level(j, n)) < 10, (k, want, got)


# --- truncated video

def test_truncated_video_is_reported(world, monkeypatch, tmp_path):
    clip = make_truncated_clip(tmp_path / "cut.mp4", 40, fps=25, keep=0.5)  # noise frames: faces or not
    out = tmp_path / "out"
    s = run(world, monkeypatch, f"test.input={clip}", f"test.out_dir={out}", "test.preview=false")
    saved = json.loads((out / "summary.json").read_text())
    assert saved["truncated"] is True and s["truncated"] is True
    assert 0 < saved["frames_decoded"] < saved["frames_expected"] == 40
    assert saved["frames"] == saved["frames_decoded"]
    assert saved["warnings"] and any("stopped early" in w for w in saved["warnings"]), saved["warnings"]
    assert "cut.mp4" in saved["warnings"][0]
    assert 0 <= saved["faces_found"] <= saved["frames"]
    _, rows = read_csv(out / "robot.csv")
    assert len(rows) == saved["frames_decoded"] and int(rows[:, -2].sum()) == saved["faces_found"]


# --- input kinds

def save_png(path, face: bool = True, grey: int = 60):
    f = np.full((96, 128, 3), grey, np.uint8)
    Image.fromarray(disc(f, 64, 48, 15) if face else f).save(path)
    return path


def refuse_loading(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("models were loaded")

    monkeypatch.setattr(animate_main, "load_models", boom)


def test_single_image(world, monkeypatch, tmp_path):
    img = save_png(tmp_path / "face.png")
    out = tmp_path / "out"
    s = run(world, monkeypatch, f"test.input={img}", f"test.out_dir={out}")
    assert s["kind"] == "images" and s["frames"] == 1 and s["faces_found"] == 1 and s["missing_frames"] == []
    assert s["images"] == ["face.png"] and s["skipped"] == [] and s["warnings"] == [] and not s["smoothed"]
    header, rows = read_csv(out / "cat.csv")
    assert rows.shape == (1, len(header)) and rows[0, -2] == 1 and rows[0, -1] == 1
    assert (out / "preview.mp4").is_file() and len(list(VideoReader(out / "preview.mp4"))) == 1


def test_image_folder_skips_an_unreadable_file(world, monkeypatch, tmp_path):
    folder = tmp_path / "shots"
    (folder / "sub").mkdir(parents=True)
    save_png(folder / "b.png")
    save_png(folder / "a.png", face=False)
    save_png(folder / "sub" / "c.png")
    (folder / "broken.png").write_text("not an image")
    (folder / "notes.txt").write_text("not an image either, and not an image file name")
    out = tmp_path / "out"
    s = run(world, monkeypatch, f"test.input={folder}", f"test.out_dir={out}", "test.preview=false")
    assert s["kind"] == "images" and s["frames"] == 3
    assert s["images"] == ["a.png", "b.png", "sub/c.png"] and s["missing_frames"] == [0]
    assert len(s["skipped"]) == 1 and s["skipped"][0].startswith("broken.png: unreadable image")
    assert s["frames_expected"] == 4 and s["frames_decoded"] == 3
    assert len(s["warnings"]) == 1 and "skipped 1 unreadable" in s["warnings"][0]
    saved = json.loads((out / "summary.json").read_text())
    assert saved["skipped"] == s["skipped"]
    _, rows = read_csv(out / "alien.csv")
    np.testing.assert_array_equal(rows[:, -2], [0, 1, 1])
    np.testing.assert_allclose(rows[:, 1], np.arange(3) / 30, atol=1e-3)  # image_fps 30


def test_glob_pattern_takes_the_matching_images_in_sorted_order(world, monkeypatch, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name, face in (("c.png", True), ("a.png", True), ("b.png", False), ("d.jpg", True)):
        save_png(folder / name, face)
    out = tmp_path / "out"
    s = run(world, monkeypatch, f"test.input={folder / '*.png'}", f"test.out_dir={out}", "test.preview=false")
    assert s["kind"] == "images" and s["input"] == str(folder / "*.png")
    assert s["images"] == ["a.png", "b.png", "c.png"] and s["frames"] == 3
    assert s["missing_frames"] == [1] and s["skipped"] == []  # b.png (no face) is the second frame
    _, rows = read_csv(out / "robot.csv")
    np.testing.assert_array_equal(rows[:, -2], [1, 0, 1])


def test_empty_folder_is_refused_before_the_models_are_loaded(world, monkeypatch, tmp_path):
    folder = tmp_path / "empty_shots"
    folder.mkdir()
    (folder / "readme.txt").write_text("no images here")
    refuse_loading(monkeypatch)
    with pytest.raises(ValueError, match=re.escape(str(folder))):
        run(world, monkeypatch, f"test.input={folder}", f"test.out_dir={tmp_path / 'out'}")


def test_missing_input_is_refused_before_the_models_are_loaded(world, monkeypatch, tmp_path):
    refuse_loading(monkeypatch)
    missing = tmp_path / "no_such_clip.mp4"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        run(world, monkeypatch, f"test.input={missing}", f"test.out_dir={tmp_path / 'out'}")
    with pytest.raises(FileNotFoundError, match="matches no image"):
        run(world, monkeypatch, f"test.input={tmp_path / 'nothing' / '*.png'}", f"test.out_dir={tmp_path / 'out'}")


def unreadable_folder(tmp_path):
    folder = tmp_path / "all_broken"
    folder.mkdir()
    (folder / "broken.png").write_text("not an image")
    (folder / "bad.jpg").write_bytes(b"\xff\xd8 truncated")
    return folder


def test_folder_of_unreadable_images_without_preview_names_the_input(world, monkeypatch, tmp_path):
    folder = unreadable_folder(tmp_path)
    with pytest.raises(ValueError, match=re.escape(f"nothing could be read from {folder}")) as e:
        run(world, monkeypatch, f"test.input={folder}", f"test.out_dir={tmp_path / 'out'}", "test.preview=false")
    assert "bad.jpg: unreadable image" in str(e.value) and "broken.png: unreadable image" in str(e.value)


def test_folder_of_unreadable_images_with_preview_names_the_input(world, monkeypatch, tmp_path):
    folder = unreadable_folder(tmp_path)
    with pytest.raises(ValueError, match=re.escape(f"nothing could be read from {folder}")) as e:
        run(world, monkeypatch, f"test.input={folder}", f"test.out_dir={tmp_path / 'out'}")
    assert "preview.mp4" not in str(e.value) and not (tmp_path / "out").exists()  # no output started
