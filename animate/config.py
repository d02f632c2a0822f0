"""Animate's configs: `configs/animate.yaml` (`python animate.py`) and the `test:` section of the stage-3b
config (`python train_emb2rig_multichar.py CONFIG mode=test`), which run the same code.

    cfg = load_config(AnimateConfig, ["configs/animate.yaml", "input=clip.mp4", "pretrained=CKPT"])
    cfg = load_config(Emb2RigCommand, ["configs/configs_emb2rig_multi.yaml", "mode=test", ...]).animate_config()

What the trained models fix comes from the stage-3b checkpoint, not from here: the encoder and renderer
files (unless overridden), the avatars and their control names, the crop margin, and the crop size
(the encoder's input size).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from common.config import check_choice
from common.device import PRECISIONS
from data.face_detect import DetectorConfig
from data.face_track import FACE_PICKS, CropConfig
from data.smoothing import SmoothingConfig
from emb2rig.config import Emb2RigConfig

QUANTIZE = ("none", "int8")  # encoder settings for inference (`animate.inference.prepare`)
DRIVERS = ("freeavatar", "mediapipe")  # what turns a face into rigs (`AnimateSettings.driver`)
GLOB_CHARS = "*?["  # an input holding one of these (and not an existing path) is a glob pattern


@dataclass
class AnimateSettings:
    """How to animate: everything but the model and the device (the stage-3b config's `test:` section).

    Args:
        input: a video file, a folder of images (sorted by path), a single image, or a glob pattern of
            images (quoted, e.g. 'shots/*.jpg'). An image is one "frame".
        out_dir: where outputs go ('' = `outputs/animate/<input name>`; in the stage-3b script's test mode
            `<output_dir>/test/<input name>`).
        encoder / renderer: override the stage-2 / stage-3a checkpoints ('' = the files the stage-3b
            checkpoint was trained with). A file that is not the one it was trained with is refused.
        face: which face to follow when there are several: 'track' (the largest at first, then the same
            person; after a loss the face most like the lost one), 'largest' or 'center'
            (`data.face_track.FaceTracker`).
        batch_size: face crops encoded (and avatars decoded / rendered) together.
        detector: face detector ('auto' | 'mediapipe' | 'yunet' | 'haar') and its settings; frames are
            detected at `max_side` 320 px (small faces in wide shots may be missed: raise it for those).
        detect_window: in a video, once a face is tracked, detect in a window this many track-square
            sides wide around it, scaled to at most `detect_window_side` px (`data.face_track.detect_near`),
            and in the whole frame only when the window does not hold the tracked face (0 = the whole
            frame every frame).
        count_faces_every: in a video, also search the whole frame on every k-th frame, so that other
            people in view are counted (the CSV's `faces`; 0 = only when the window lost the face).
        crop: the video face track (`max_missing` frames held after the face is lost, `min_face`, the
            track's smoothing). Its `size` and `margin` are not settings: they are set at run time to the
            encoder's input size and the margin stored in the checkpoint.
        smoothing: One-Euro filter on the rig curves (video only, at the frames' real times).
        expression_distance_every: measure the expression distance on every k-th frame (0 = never).
        prefetch: frames decoded and detected ahead in a background thread (0 = in the main thread;
            -1 = auto: 32 on CUDA, 0 on CPU, where the thread competes with the networks for the cores).
        preview: write preview.mp4 (input | crop | each avatar).
        preview_size: height in pixels of the preview's panels.
        preview_mesh: a mesh avatar's panel shows its mesh at the decoded rig, rendered headless
            (`avatar3d`, from `mesh:` in its avatar.yaml under `avatars_root`), instead of the neural
            renderer's image; falls back to the latter, with a note, when the mesh cannot be rendered.
        image_fps: frame rate given to images (time_s and the preview video).
        max_frames: stop after this many frames (0 = all).
        quantize: 'none', or 'int8' for a dynamic int8 encoder on CPU (`animate.inference`; faster, not
            the same rigs: check with `scripts/compare_int8.py` on your checkpoint).
        threads: CPU threads (0 = PyTorch's default, the physical cores; `common.device.setup_cpu`).
        avatars_root: the avatar folders, read for the exports (`animate.exports`: a `.glb` for a mesh avatar,
            a Live Link Face CSV for ARKit-named controls; '' = the folders the stage-3b run was trained on).
        driver: 'freeavatar' (the encoder + rig decoder), or 'mediapipe': the baseline users would pick
            instead, MediaPipe's 52 ARKit blend-shape scores of the whole frame retargeted by name onto every
            ARKit-named avatar (other controls stay at 0), then the same smoothing, renders and exports
            (`animate.mediapipe_face`; optional install, see the README).
        mediapipe_model: face_landmarker.task for driver=mediapipe ('' = `.cache/models/face_landmarker.task`).
    """
    input: str = ""
    out_dir: str = ""
    encoder: str = ""
    renderer: str = ""
    face: str = "track"
    batch_size: int = 16
    detector: DetectorConfig = field(default_factory=lambda: DetectorConfig(max_side=320))
    detect_window: float = 1.5
    detect_window_side: int = 160
    count_faces_every: int = 15
    crop: CropConfig = field(default_factory=CropConfig)
    smoothing: SmoothingConfig = field(default_factory=SmoothingConfig)
    expression_distance_every: int = 30
    prefetch: int = -1
    preview: bool = True
    preview_size: int = 256
    preview_mesh: bool = True
    image_fps: float = 30.0
    max_frames: int = 0
    quantize: str = "none"
    threads: int = 0
    avatars_root: str = ""
    driver: str = "freeavatar"
    mediapipe_model: str = ""

    def __post_init__(self):
        check_choice("face", self.face, FACE_PICKS)
        check_choice("driver", self.driver, DRIVERS)
        check_choice("quantize", self.quantize, QUANTIZE)
        if self.batch_size < 1 or min(self.expression_distance_every, self.max_frames, self.count_faces_every,
                                      self.prefetch + 1) < 0:
            raise ValueError("'batch_size' must be >= 1, 'expression_distance_every', 'max_frames' and "
                             "'count_faces_every' >= 0, 'prefetch' >= -1 (auto)")
        if not (self.detect_window == 0 or self.detect_window >= 1) or self.detect_window_side < 32:
            raise ValueError(f"'detect_window' must be 0 (off) or >= 1 and 'detect_window_side' >= 32, "
                             f"got {self.detect_window}, {self.detect_window_side}")
        if (self.crop.size, self.crop.margin) != (CropConfig.size, CropConfig.margin):
            raise ValueError("'crop.size' and 'crop.margin' come from the stage-3b checkpoint (the encoder's input "
                             "size, the margin it was trained with); remove them from the config")
        if self.preview_size < 16 or not self.image_fps > 0 or self.threads < 0:
            raise ValueError(f"'preview_size' must be >= 16, 'image_fps' > 0 and 'threads' >= 0, got "
                             f"{self.preview_size}, {self.image_fps}, {self.threads}")


@dataclass
class AnimateConfig(AnimateSettings):
    """Everything `python animate.py` reads (`configs/animate.yaml`): the settings, plus

    Args:
        pretrained: the stage-3b checkpoint (`checkpoint-best.pth` of `train_emb2rig_multichar.py`).
        device: 'auto' (CUDA when present) | 'cpu' | 'cuda'.
        precision: 'auto' (bf16 on CUDA and on CPUs with native bf16, else fp32) | 'fp32' | 'bf16' | 'fp16'.
    """
    pretrained: str = ""
    device: str = "auto"
    precision: str = "auto"

    def __post_init__(self):
        super().__post_init__()
        check_choice("precision", self.precision, ["auto", *PRECISIONS])
        if not self.pretrained:
            raise ValueError("animate needs a stage-3b checkpoint: pretrained=<run folder>/checkpoint-best.pth")
        if not self.input:
            raise ValueError("animate needs an input: a video file, a folder of images, an image or a glob")

    def resolved_out_dir(self, default_root: str | Path = "outputs/animate") -> Path:
        """`out_dir`, or `<default_root>/<input name>` (a glob's folder name for a pattern)."""
        if self.out_dir:
            return Path(self.out_dir)
        name = Path(self.input.rstrip("/")).stem if not any(c in self.input for c in GLOB_CHARS) \
            else Path(self.input).parent.name or "images"
        return Path(default_root) / name


@dataclass
class Emb2RigCommand(Emb2RigConfig):
    """What `python train_emb2rig_multichar.py` reads: the stage-3b training config (`Emb2RigConfig`)
    plus the script's test mode.

    Args:
        mode: 'train', or 'test': animate `test.input` with the `pretrained` stage-3b checkpoint, as
            `python animate.py` does (the checkpoint decides the models; `device` and `precision` apply).
        test: the animate settings (`AnimateSettings`).
    """
    mode: str = "train"
    test: AnimateSettings = field(default_factory=AnimateSettings)

    def __post_init__(self):
        super().__post_init__()
        check_choice("mode", self.mode, ["train", "test"])
        if self.mode == "test" and not self.pretrained:
            raise ValueError("mode 'test' needs 'pretrained' (a trained stage-3b checkpoint, e.g. "
                             "pretrained=outputs/demo/emb2rig/checkpoint-best.pth)")

    def animate_config(self) -> AnimateConfig:
        """The `AnimateConfig` of test mode; outputs default to `<output_dir>/test/<input name>`."""
        settings = {f.name: getattr(self.test, f.name) for f in dataclasses.fields(AnimateSettings)}
        if not self.test.input:
            raise ValueError("test mode needs an input: test.input=<video file, image folder, image or glob>")
        cfg = AnimateConfig(**settings, pretrained=self.pretrained, device=self.device, precision=self.precision)
        cfg.out_dir = str(cfg.resolved_out_dir(Path(self.output_dir) / "test"))
        return cfg
