"""What animate reads: a video file, a folder of images, a single image, or a glob pattern of images.

    src = open_source("clip.mp4", image_fps=30)      # or "shots/", "face.jpg", "shots/*.png"
    for t, rgb in src.frames(): ...                   # presentation time in seconds, (H, W, 3) uint8 RGB
    src.report()                                      # frames decoded / expected, skipped images, warnings

A video's frames carry their own presentation times (`data.video.VideoReader.timed`), so a clip with a
variable frame rate keeps its timeline; images are spaced 1 / `image_fps` apart. Unreadable images are
skipped and listed; a video that stops decoding early is reported. An input with nothing to read
(no such file, an empty folder, a pattern that matches nothing) is refused before anything is loaded.
"""
from __future__ import annotations

import glob
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from animate.config import GLOB_CHARS
from data.images import common_folder
from data.video import IMAGE_EXTS, VIDEO_EXTS, VideoReader, image_files, is_video, read_image


class InputError(ValueError):
    """An input animate cannot read (an empty folder, no readable image, not a video or image)."""


class Source:
    """Frames of one input, streamed.

    Args:
        spec: the input as given (a path or a glob pattern).
        video: a VideoReader, or None for images.
        images: the image files in frame order (images only).
        image_fps: frames per second given to images.
    Attributes:
        kind: 'video' or 'images'; fps: the video's nominal rate or `image_fps`.
        skipped: 'name: reason' of each unreadable image (filled while reading).
    """

    def __init__(self, spec: str, video: VideoReader | None, images: list[Path], image_fps: float):
        self.spec, self.video, self.images = spec, video, images
        self.kind = "video" if video is not None else "images"
        self.fps = video.fps if video is not None else float(image_fps)
        self.skipped: list[str] = []
        self.read: list[str] = []  # image names actually used, in frame order
        self._base = Path(common_folder(images)) if images else None

    def frames(self) -> Iterator[tuple[float, np.ndarray]]:
        """(time in seconds, RGB frame) in order; unreadable images are skipped (listed in `skipped`)."""
        if self.video is not None:
            yield from self.video.timed()
            return
        for p in self.images:
            try:
                rgb = read_image(p)
            except Exception as e:  # noqa: BLE001 - any decoder failure means "skip this file"
                self.skipped.append(f"{self._name(p)}: unreadable image: {type(e).__name__}: {e}")
                continue
            self.read.append(self._name(p))
            yield (len(self.read) - 1) / self.fps, rgb

    def _name(self, p: Path) -> str:
        return str(p.relative_to(self._base)) if self._base is not None else p.name

    def report(self) -> dict:
        """After `frames()` is exhausted: frames decoded and expected, and warnings for a reader."""
        if self.video is not None:
            v = self.video
            out = {"frames_decoded": v.frames_read, "frames_expected": v.frames_expected, "truncated": v.truncated}
            out["warnings"] = [f"decoding stopped early: {v.frames_read} of {v.frames_expected} frames decoded "
                               f"from {self.spec} (a damaged or incomplete file?)"] if v.truncated else []
            return out
        out = {"frames_decoded": len(self.read), "frames_expected": len(self.images), "truncated": False,
               "images": list(self.read), "skipped": list(self.skipped)}
        out["warnings"] = [f"skipped {len(self.skipped)} unreadable image(s) of {self.spec}"] if self.skipped else []
        return out


def open_source(spec: str | Path, image_fps: float = 30.0) -> Source:
    """The Source for a video file, an image folder, an image file or a glob pattern of images."""
    spec = str(spec)
    kinds = f"a video ({', '.join(VIDEO_EXTS)}), a folder of images, an image ({', '.join(IMAGE_EXTS)}) " \
            f"or a quoted glob pattern of images"
    path = Path(spec)
    if any(c in spec for c in GLOB_CHARS) and not path.exists():
        images = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).suffix.lower() in IMAGE_EXTS)
        if not images:
            raise FileNotFoundError(f"input pattern '{spec}' matches no image ({', '.join(IMAGE_EXTS)})")
        return Source(spec, None, images, image_fps)
    if not path.exists():
        raise FileNotFoundError(f"input not found: {spec} (expected {kinds})")
    if path.is_dir():
        images = image_files(path)
        if not images:
            raise InputError(f"input folder '{spec}' holds no images ({', '.join(IMAGE_EXTS)}); "
                             f"for a video pass the file itself")
        src = Source(spec, None, images, image_fps)
        src._base = path
        return src
    if is_video(path):
        return Source(spec, VideoReader(path), [], image_fps)
    if path.suffix.lower() in IMAGE_EXTS:
        return Source(spec, None, [path], image_fps)
    raise InputError(f"input '{spec}' is neither {kinds}")
