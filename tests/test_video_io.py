"""Video I/O: H.264 round trip, fps kept, vertical and rotated videos, bad input, image folders,
real frame times of variable-frame-rate clips, truncated files, constant-rate resampling."""
from __future__ import annotations

import itertools
import subprocess

import numpy as np
import pytest
from PIL import Image

from data.video import VideoError, VideoReader, _next_time, iter_images, retime, write_video
from tests.video_clips import grey_frames, grey_level, make_truncated_clip, make_vfr_clip

VFR_TIMES = [0.0, 0.1, 0.15, 0.5, 0.55, 1.2]  # irregular, as in a phone clip that drops frames


def moving_square(n=20, w=64, h=48):
    """n RGB frames (h, w, 3) with a white square moving right; yields lazily."""
    for i in range(n):
        f = np.full((h, w, 3), 40, np.uint8)
        x = 2 + i * (w - 20) // max(n - 1, 1)
        f[h // 2 - 8:h // 2 + 8, x:x + 16] = 255
        yield f


def test_round_trip_h264_keeps_fps_size_and_content(tmp_path):
    p = tmp_path / "a.mp4"
    assert write_video(p, moving_square(), fps=25) == 20
    assert b"avc1" in p.read_bytes()[:100_000]  # H.264, not mp4v
    r = VideoReader(p)
    assert r.fps == pytest.approx(25, abs=0.01) and r.size == (64, 48) and len(r) == 20
    frames = list(r)
    assert len(frames) == 20 and r.frames_read == 20 and not r.truncated
    assert frames[0].shape == (48, 64, 3) and frames[0].dtype == np.uint8
    for got, want in zip(frames, moving_square()):
        assert np.abs(got.astype(int) - want).mean() < 6
    assert len(list(r)) == 20  # iterable again


def test_reader_streams_frames(tmp_path):
    p = tmp_path / "a.mp4"
    write_video(p, moving_square(), fps=10)
    it = iter(VideoReader(p))
    first = next(it)  # a generator: frames come one by one
    assert first.shape == (48, 64, 3)
    it.close()


def test_odd_size_is_padded_and_mismatched_sizes_fail(tmp_path):
    frames = [np.zeros((33, 45, 3), np.uint8)] * 3
    write_video(tmp_path / "odd.mp4", frames, fps=12)
    assert VideoReader(tmp_path / "odd.mp4").size == (46, 34)
    with pytest.raises(VideoError, match="expected"):
        write_video(tmp_path / "bad.mp4", [np.zeros((32, 32, 3), np.uint8),
                                           np.zeros((16, 32, 3), np.uint8)], fps=12)
    with pytest.raises(VideoError, match="no frames"):
        write_video(tmp_path / "empty.mp4", [], fps=12)


def test_vertical_video(tmp_path):
    p = tmp_path / "vertical.mp4"
    write_video(p, moving_square(n=8, w=48, h=96), fps=30)
    r = VideoReader(p)
    assert r.size == (48, 96)
    assert all(f.shape == (96, 48, 3) for f in r)


def test_rotation_metadata_is_applied(tmp_path):
    """A phone video is often stored landscape with a 90 degree rotation flag."""
    import imageio_ffmpeg

    land, rot = tmp_path / "land.mp4", tmp_path / "rot.mp4"
    write_video(land, moving_square(n=5, w=64, h=32), fps=30)
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-display_rotation",
           "90", "-i", str(land), "-c", "copy", str(rot)]
    if subprocess.run(cmd, capture_output=True).returncode != 0:
        pytest.skip("this ffmpeg cannot set rotation metadata (-display_rotation)")
    r = VideoReader(rot)
    assert r.size == (32, 64)
    assert next(iter(r)).shape == (64, 32, 3)


def test_missing_corrupt_and_truncated_videos_name_the_file(tmp_path):
    with pytest.raises(VideoError, match="not found.*nope.mp4"):
        VideoReader(tmp_path / "nope.mp4")
    bad = tmp_path / "garbage.mp4"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(VideoError, match="garbage.mp4"):
        VideoReader(bad)
    # a cut file: with the index at the end (the default) it cannot be opened at all ...
    rng = np.random.default_rng(0)
    good = tmp_path / "good.mp4"
    write_video(good, (rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(30)), 30)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(VideoError, match="cut.mp4"):
        VideoReader(cut)
    # ... with the index first (streaming layout) the frames before the cut are read: see
    # test_truncated_clip_is_reported


def test_iter_images_applies_exif_and_skips_unreadable(tmp_path):
    (tmp_path / "sub").mkdir()
    Image.new("RGB", (40, 20), (255, 0, 0)).save(tmp_path / "a.png")
    im = Image.new("RGB", (40, 20), (0, 255, 0))
    exif = im.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees on display
    im.save(tmp_path / "sub" / "b.jpg", exif=exif)
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "notes.txt").write_text("ignored")
    skipped = []
    got = {p.name: rgb for p, rgb in iter_images(tmp_path, skipped)}
    assert set(got) == {"a.png", "b.jpg"}
    assert got["a.png"].shape == (20, 40, 3) and got["b.jpg"].shape == (40, 20, 3)
    assert [p.name for p, _ in skipped] == ["broken.jpg"] and "unreadable" in skipped[0][1]
    with pytest.raises(FileNotFoundError, match="missing_dir"):
        list(iter_images(tmp_path / "missing_dir"))


@pytest.mark.parametrize("ext", ["mp4", "mkv"])
def test_timed_gives_the_real_times_of_a_vfr_clip(tmp_path, ext):
    """Frames of a variable-frame-rate clip are not index / fps apart: times come from the file."""
    r = VideoReader(make_vfr_clip(tmp_path / f"vfr.{ext}", grey_frames(6), VFR_TIMES))
    got = list(r.timed())
    assert [t for t, _ in got] == pytest.approx(VFR_TIMES, abs=0.002)
    assert [f.mean() for _, f in got] == pytest.approx([grey_level(i, 6) for i in range(6)], abs=4)
    # the mkv declares no count: OpenCV estimates 1.2 s * 1000 fps = 1201 frames, yet it is complete
    assert r.frames_read == 6 and not r.truncated
    assert [f.mean() for f in r] == pytest.approx([f.mean() for _, f in got])  # plain iteration: same frames


def test_times_start_at_the_first_frame(tmp_path):
    """An mkv keeps a non-zero start time; timed() counts from the first frame."""
    r = VideoReader(make_vfr_clip(tmp_path / "late.mkv", grey_frames(3), [0.5, 0.6, 0.9]))
    assert [t for t, _ in r.timed()] == pytest.approx([0.0, 0.1, 0.4], abs=0.002)


def test_cfr_clip_times_are_index_over_fps(tmp_path):
    p = tmp_path / "cfr.mp4"
    write_video(p, moving_square(n=12), fps=24)  # x264 'veryfast' uses B-frames: decode order != display order
    r = VideoReader(p)
    assert [t for t, _ in r.timed()] == pytest.approx([i / 24 for i in range(12)], abs=1e-6)
    assert r.frames_read == r.frames_expected == len(r) == 12 and not r.truncated


def test_missing_or_backward_times_fall_back_to_one_period():
    assert _next_time(0.5, 0.4, fps=10) == 0.5
    for bad in (0.4, -0.1, float("nan"), float("inf")):  # repeated, OpenCV's 0 minus the start, broken
        assert _next_time(bad, 0.4, fps=10) == pytest.approx(0.5)


def test_truncated_clip_is_reported(tmp_path):
    whole = VideoReader(make_truncated_clip(tmp_path / "whole.mp4", 30, fps=25, keep=1.0))
    assert len(list(whole)) == 30 and whole.frames_expected == 30 and not whole.truncated
    cut = VideoReader(make_truncated_clip(tmp_path / "cut.mp4", 30, fps=25, keep=0.5))
    times = [t for t, _ in cut.timed()]
    assert cut.frames_expected == 30 and 0 < cut.frames_read < 30 and cut.truncated
    assert times == pytest.approx([i / 25 for i in range(cut.frames_read)], abs=1e-6)
    it = iter(whole)  # a pass the caller stops early says nothing about the file
    next(it)
    it.close()
    assert whole.frames_read == 1 and not whole.truncated


def test_retime_duplicates_and_drops_frames():
    """Output frame k is the latest input frame with t <= (k + 0.5) / fps; it ends at the last input."""
    pairs = list(zip(VFR_TIMES[:2] + [0.14, 0.5, 0.53, 1.2], "abcdef"))
    assert "".join(retime(pairs, fps=10)) == "a" + "cccc" + "eeeeeee" + "f"  # b, d dropped; gaps held
    assert list(retime([(i / 25, i) for i in range(50)], fps=25)) == list(range(50))  # same rate
    assert list(retime([(i / 50, i) for i in range(10)], fps=25)) == [1, 3, 5, 7, 9]  # twice the rate
    assert list(retime([(i / 10, i) for i in range(5)], fps=20)) == [0, 0, 1, 1, 2, 2, 3, 3, 4]  # half
    assert list(retime([(0.3, None), (0.4, "x")], fps=10)) == [None] * 4 + ["x"]  # any objects, late start
    assert list(retime([], fps=10)) == []
    with pytest.raises(ValueError, match="fps"):
        list(retime([(0.0, 1)], fps=0))


def test_retime_streams():
    endless = ((i / 30, i) for i in itertools.count())
    assert list(itertools.islice(retime(endless, fps=15), 4)) == [1, 3, 5, 7]


def test_vfr_clip_preview_stays_in_sync(tmp_path):
    """VFR clip -> retime -> 10 fps mp4: frame k of the preview is the source frame on screen at k / 10 s."""
    src = make_vfr_clip(tmp_path / "vfr.mp4", grey_frames(6), VFR_TIMES)
    n = write_video(tmp_path / "preview.mp4", retime(VideoReader(src).timed(), fps=10), fps=10)
    preview = VideoReader(tmp_path / "preview.mp4")
    shown = [0, 2, 2, 2, 2, 4, 4, 4, 4, 4, 4, 4, 5]  # source frame at slots 0.0, 0.1, ..., 1.2 s
    assert n == len(shown) and preview.fps == pytest.approx(10)
    assert [f.mean() for f in preview] == pytest.approx([grey_level(i, 6) for i in shown], abs=4)
