"""Small generated video clips for the tests: exact variable frame times, and cut (truncated) files.

Both helpers run the ffmpeg binary bundled with imageio-ffmpeg, so they work wherever the tests do.
"""
from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def grey_frames(n: int, w: int = 64, h: int = 48) -> list[np.ndarray]:
    """n uint8 (h, w, 3) frames, frame i filled with grey level ``grey_level(i, n)``, so a decoded frame
    tells which source frame it was."""
    return [np.full((h, w, 3), grey_level(i, n), np.uint8) for i in range(n)]


def grey_level(i: int, n: int) -> int:
    """Grey level of frame i of ``grey_frames(n)``: evenly spread over 20..220 (at least 8 levels apart
    for n <= 26, well beyond the error of a lossy H.264 round trip on flat frames)."""
    return round(20 + 200 * i / max(n - 1, 1))


def _ffmpeg(args: list[str], stdin: bytes | None = None) -> None:
    import imageio_ffmpeg

    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", *args]
    res = subprocess.run(cmd, input=stdin, capture_output=True)
    if res.returncode != 0:
        raise RuntimeError(f"ffmpeg failed ({res.returncode}): {' '.join(cmd)}\n{res.stderr.decode()}")


def make_vfr_clip(path: str | Path, frames: Sequence[np.ndarray], times_s: Sequence[float]) -> Path:
    """Write an H.264 clip whose frame i is shown at ``times_s[i]`` seconds (to the millisecond).

    The frames go to ffmpeg as raw video on a 1 ms time base; a ``setpts`` expression then gives frame N
    its time, and ``-fps_mode passthrough`` keeps ffmpeg from dropping or duplicating frames to reach a
    constant rate. The container is chosen by the suffix of ``path`` (mp4, mkv, ...).

    Args:
        path: output file.
        frames: uint8 (H, W, 3) RGB frames of one size, H and W even (yuv420p).
        times_s: strictly increasing presentation times in seconds, one per frame.
    Returns:
        ``path`` as a Path.
    """
    path = Path(path)
    if len(frames) != len(times_s) or not frames:
        raise ValueError(f"need one time per frame, got {len(frames)} frames and {len(times_s)} times")
    if any(b <= a for a, b in zip(times_s, times_s[1:])):
        raise ValueError(f"times must be strictly increasing: {list(times_s)}")
    h, w = frames[0].shape[:2]
    pts = "+".join(f"{float(t)!r}*eq(N,{i})" for i, t in enumerate(times_s))  # time of frame N, seconds
    _ffmpeg(["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-framerate", "1000", "-i", "-",
             "-vf", f"setpts='({pts})/TB'", "-fps_mode", "passthrough",
             "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path)],
            stdin=b"".join(np.ascontiguousarray(f, np.uint8).tobytes() for f in frames))
    return path


def make_truncated_clip(path: str | Path, n_frames: int, fps: float = 25, keep: float = 0.5) -> Path:
    """Write an n_frames H.264 mp4 and keep only the first ``keep`` fraction of its bytes.

    The mp4 is written with its index (moov atom) at the front (``-movflags +faststart``), so the cut
    file still opens and the frames before the cut decode; with the index at the end (ffmpeg's default)
    a cut file cannot be opened at all. Frames are random noise, which does not compress, so the frame
    data outweighs the index and the cut lands part-way through the frames.

    Args:
        path: output .mp4 file.
        n_frames: frames in the complete clip (what the index declares).
        fps: frame rate of the clip.
        keep: fraction of the file's bytes that is kept.
    Returns:
        ``path`` as a Path.
    """
    path = Path(path)
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, (n_frames, 48, 64, 3), dtype=np.uint8).tobytes()
    full = path.with_name(path.stem + "_full.mp4")
    _ffmpeg(["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "64x48", "-framerate", str(fps), "-i", "-",
             "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-movflags", "+faststart",
             str(full)], stdin=raw)
    data = full.read_bytes()
    full.unlink()
    path.write_bytes(data[: int(len(data) * keep)])
    return path
