"""Video and image-folder I/O for real footage.

- ``VideoReader(path)``: frame-by-frame RGB iterator over any mp4/mov/avi/mkv/webm that the
  FFmpeg inside OpenCV decodes; never loads the whole video. Rotation metadata (phone videos)
  is applied, so a vertical video yields vertical frames. ``VideoReader.timed()`` also gives
  each frame's real presentation time, and ``truncated`` tells when a file stops part-way.
- ``retime(timed_frames, fps)``: turns (time, frame) pairs of a variable-frame-rate clip into a
  constant-rate sequence, so a preview written at ``fps`` stays in sync with the source.
- ``write_video(path, frames, fps)``: H.264 mp4 (libx264, yuv420p) through imageio-ffmpeg, so
  the result plays in browsers; ``cv2.VideoWriter`` can only write mp4v.
- ``iter_images(folder)``: RGB images of a folder tree, EXIF orientation applied, unreadable
  files skipped and reported.
All frames are ``uint8`` arrays of shape (H, W, 3) in RGB order.
"""
from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator
from contextlib import closing
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np

VIDEO_EXTS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
T = TypeVar("T")
_NOTHING = object()  # "no frame yet" in retime(), where a frame may be any object, even None
_TIME_TOL = 1e-6  # seconds: a frame time this close to a retime() deadline counts as on time


class VideoError(RuntimeError):
    """A video cannot be opened, decoded or written; the message names the file."""


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTS


class VideoReader:
    """Iterate over the RGB frames of a video file, one at a time, with their presentation times.

    Iterating yields frames; ``timed()`` yields ``(t_seconds, frame)``, which a variable-frame-rate
    clip (most phone videos) needs: its frames are not ``1 / fps`` apart.

    Args:
        path: video file.
    Attributes:
        fps: nominal frames per second from the container (30.0 when missing). For a variable-frame-rate
            clip this is an average or a guess; use ``timed()`` for the real frame times.
        frames_expected: number of frames the container declares, 0 when unknown. mp4/mov store an
            exact count; for mkv/webm OpenCV estimates it as duration * fps. ``frame_count`` and
            ``len(reader)`` give the same number (older names).
        size: (width, height) of the decoded, rotation-corrected frames.
        frames_read: frames decoded by the last pass (the real count after a full pass).
        truncated: set when a pass reaches the end of the decodable frames: True when decoding stopped
            clearly before the declared end (a cut download or an interrupted recording): both the
            frames decoded and the time reached cover less than 90% - 2 of ``frames_expected`` (see
            ``_stopped_early``). False before a full pass, after a pass the caller stopped early, and
            when the count is unknown.
    Raises:
        VideoError: the file is missing, not a video, or no frame can be decoded.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise VideoError(f"video not found: {self.path}")
        cap = self._open()
        try:
            fps = cap.get(cv2.CAP_PROP_FPS)
            self.fps = float(fps) if fps and math.isfinite(fps) and fps > 0 else 30.0
            self.frame_count = max(int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0), 0)
            ok, frame = cap.read()  # decode one frame to validate the file and get the size
        finally:
            cap.release()
        if not ok or frame is None:
            raise VideoError(f"cannot decode any frame of {self.path} (corrupt, truncated or "
                             "not a video); re-encode it, e.g. `ffmpeg -i IN -c:v libx264 OUT.mp4`")
        self.size = (frame.shape[1], frame.shape[0])
        self.frames_read = 0
        self.truncated = False

    @property
    def frames_expected(self) -> int:
        """Frames the container declares, 0 when unknown (the same as ``frame_count``)."""
        return self.frame_count

    def _open(self) -> cv2.VideoCapture:
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            cap.release()
            raise VideoError(f"cannot open video {self.path} (corrupt, truncated or unsupported "
                             f"format; supported: {', '.join(VIDEO_EXTS)})")
        return cap

    def __len__(self) -> int:
        return self.frame_count

    def __iter__(self) -> Iterator[np.ndarray]:
        with closing(self.timed()) as frames:  # closing this generator closes the decoder too
            for _, rgb in frames:
                yield rgb

    def timed(self) -> Iterator[tuple[float, np.ndarray]]:
        """Yield ``(t, rgb)`` for each frame: its presentation time in seconds and the (H, W, 3) RGB frame.

        Times come from the decoder: OpenCV's ``CAP_PROP_POS_MSEC`` read right after ``read()`` is the
        presentation time (PTS) of the frame just decoded, also for variable-frame-rate clips and
        with B-frames. They are shifted so that the first frame is at 0.0: some containers start at a
        non-zero time (OpenCV already removes the stream start of mp4/mov, but not of mkv). A missing,
        non-finite or non-increasing time is replaced by the previous time + 1 / fps.
        """
        cap = self._open()
        self.frames_read, self.truncated = 0, False
        start, t = 0.0, 0.0
        try:
            while True:
                ok, bgr = cap.read()
                if not ok or bgr is None:
                    break
                pts = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
                if self.frames_read == 0:
                    start = pts if math.isfinite(pts) else 0.0
                else:
                    t = _next_time(pts - start, t, self.fps)
                self.frames_read += 1
                yield t, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)  # (H, W, 3) uint8 RGB
            self.truncated = _stopped_early(self.frames_read, start + t, self.frame_count, self.fps)
        finally:
            cap.release()

    def __repr__(self) -> str:
        return (f"VideoReader({str(self.path)!r}, fps={self.fps:.3f}, "
                f"frames={self.frame_count}, size={self.size})")


def _next_time(t: float, prev: float, fps: float) -> float:
    """``t`` when it is a usable frame time after ``prev``, else ``prev`` + one nominal period.

    Args:
        t: decoder time of this frame in seconds (OpenCV reports 0 when the frame has none).
        prev: time of the previous frame.
        fps: nominal frame rate, for the fallback.
    """
    return t if math.isfinite(t) and t > prev else prev + 1.0 / fps


def _stopped_early(frames_read: int, end_s: float, frames_expected: int, fps: float) -> bool:
    """Whether a full decoding pass ended clearly before the end the container declares.

    Both the frame count and the time reached must fall short of ``frames_expected`` by more than
    10% + 2 frames (containers often over-declare by a few frames). The time test counts the frames
    that ``end_s`` covers at the nominal rate; it keeps a variable-frame-rate mkv/webm, whose count
    OpenCV only estimates as duration * fps, from being reported as truncated.

    Args:
        frames_read: frames decoded.
        end_s: time of the last decoded frame on the container's timeline (seconds).
        frames_expected: declared frame count; 0 (unknown) never reports truncation.
        fps: nominal frame rate.
    """
    if frames_expected <= 0:
        return False
    enough = 0.9 * frames_expected - 2
    return frames_read < enough and end_s * fps + 1 < enough


def retime(timed_frames: Iterable[tuple[float, T]], fps: float) -> Iterator[T]:
    """Resample ``(t, frame)`` pairs to a constant rate, e.g. for an mp4 preview of a variable-rate clip.

    Output frame k stands for time k / fps and is the latest input frame with t <= (k + 0.5) / fps,
    i.e. the frame on screen in the middle of its display period: input frames closer together than
    a period are dropped, and a gap is filled by repeating the frame before it, so the output
    written at ``fps`` plays in sync with the source. Output slots before the first input frame
    repeat it (there are none when times start at 0). The output ends with the first slot that shows
    the last input frame. Streams: holds one input frame at a time.

    Args:
        timed_frames: (t, frame) pairs, t in seconds and increasing; frames can be any objects.
        fps: output frame rate (> 0).
    Yields:
        the frames, one per output period 1 / fps.
    """
    if not fps > 0:
        raise ValueError(f"retime needs fps > 0, got {fps}")
    held, k = _NOTHING, 0
    for t, frame in timed_frames:
        # slots whose deadline comes before t are final: they show the held frame
        while held is not _NOTHING and t > (k + 0.5) / fps + _TIME_TOL:
            yield held
            k += 1
        held = frame
    if held is not _NOTHING:
        yield held


def _even(frame: np.ndarray) -> np.ndarray:
    """Pad odd heights/widths by one edge pixel: yuv420p needs even dimensions."""
    h, w = frame.shape[:2]
    if h % 2 or w % 2:
        frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    return frame


def write_video(path: str | Path, frames: Iterable[np.ndarray], fps: float,
                crf: int = 20, preset: str = "veryfast") -> int:
    """Write RGB uint8 frames (H, W, 3), all of one size, to an H.264 mp4; returns the count.

    x264's `preset` 'veryfast' takes half the CPU of its default 'medium' on the test-mode previews,
    at a similar file size for `crf` 20 (the ffmpeg process competes with the networks for the cores).

    Frames are streamed to ffmpeg, never held in memory. Odd sizes are padded by one pixel.
    Raises VideoError when there are no frames, sizes differ, or ffmpeg fails.
    """
    import imageio_ffmpeg

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer, size, n = None, None, 0
    try:
        for frame in frames:
            frame = np.asarray(frame)
            if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
                raise VideoError(f"{path}: frames must be uint8 (H, W, 3) RGB, got "
                                 f"{frame.dtype} {frame.shape}")
            frame = _even(frame)
            if writer is None:
                size = (frame.shape[1], frame.shape[0])
                writer = imageio_ffmpeg.write_frames(
                    str(path), size, fps=float(fps), codec="libx264", pix_fmt_in="rgb24",
                    pix_fmt_out="yuv420p", macro_block_size=1, quality=None,
                    ffmpeg_log_level="error", output_params=["-crf", str(crf), "-preset", preset])
                writer.send(None)  # start the generator
            elif (frame.shape[1], frame.shape[0]) != size:
                raise VideoError(f"{path}: frame {n} has size {frame.shape[1]}x{frame.shape[0]}"
                                 f", expected {size[0]}x{size[1]}")
            writer.send(np.ascontiguousarray(frame))
            n += 1
    except (OSError, RuntimeError) as e:
        if isinstance(e, VideoError):
            raise
        raise VideoError(f"writing {path} failed: {e}") from e
    finally:
        if writer is not None:
            writer.close()
    if n == 0:
        raise VideoError(f"no frames to write to {path}")
    return n


def read_image(path: str | Path) -> np.ndarray:
    """An image file as RGB uint8 (H, W, 3), EXIF orientation applied; raises on an unreadable file."""
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))


def image_paths(folder: str | Path) -> list[str]:
    """The image files under ``folder`` (any depth) as strings, sorted as ``Path`` objects sort (folder by
    folder, names within a folder); none is an empty list. One ``os.scandir`` pass per folder: a million
    files take seconds (README, "Data at scale"), not the minutes of ``Path.rglob`` + ``is_file``."""
    out: list[str] = []
    with os.scandir(folder) as it:
        entries = sorted(it, key=lambda e: e.name)
    for e in entries:
        if e.is_dir():
            out += image_paths(e.path)
        elif os.path.splitext(e.name)[1].lower() in IMAGE_EXTS and e.is_file():
            out.append(e.path)
    return out


def image_files(folder: str | Path) -> list[Path]:
    """``image_paths(folder)`` as ``Path`` objects."""
    return [Path(p) for p in image_paths(folder)]


def iter_images(folder: str | Path, skipped: list | None = None
                ) -> Iterator[tuple[Path, np.ndarray]]:
    """Yield (path, RGB uint8 (H, W, 3)) for every image under ``folder``, sorted by path.

    EXIF orientation is applied. Unreadable files are skipped; when ``skipped`` is a list,
    ``(path, reason)`` is appended for each of them.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    for p in image_files(folder):
        try:
            rgb = read_image(p)
        except Exception as e:  # noqa: BLE001 - any decoder failure means "skip this file"
            if skipped is not None:
                skipped.append((p, f"unreadable image: {type(e).__name__}: {e}"))
            continue
        yield p, rgb
