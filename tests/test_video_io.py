"""Video I/O: H.264 round trip, fps kept, vertical and rotated videos, bad input, image folders."""
from __future__ import annotations

import subprocess

import numpy as np
import pytest
from PIL import Image

from data.video import VideoError, VideoReader, iter_images, write_video


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
    # ... with the index first (streaming layout) the frames before the cut are read
    import imageio_ffmpeg

    fast, cut2 = tmp_path / "fast.mp4", tmp_path / "cut2.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-i", str(good),
                    "-c", "copy", "-movflags", "+faststart", str(fast)], check=True)
    cut2.write_bytes(fast.read_bytes()[: fast.stat().st_size // 2])
    r = VideoReader(cut2)
    n = len(list(r))
    assert 0 < n < 30 and r.frames_read == n and r.truncated


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
