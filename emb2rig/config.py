"""Stage-3b config: `configs/configs_emb2rig_multi.yaml` (paper) and `configs/demo/emb2rig.yaml` (CPU demo).

Paths are relative to the repo root (or absolute on the user's machine, given on the command
line); `faces` and `avatars_root` are relative to `data_root`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from common.config import check_choice
from common.device import PRECISIONS
from emb2rig.losses import LossConfig
from emb2rig.models import DecoderConfig


@dataclass
class DiscConfig:
    """Multiscale PatchGAN (built only when loss.weight_gan > 0).

    Args:
        scales / channels / layers: discriminator size; lr: its Adam learning rate (betas 0, 0.99).
    """
    scales: int = 2
    channels: int = 32
    layers: int = 3
    lr: float = 2e-4


@dataclass
class Emb2RigConfig:
    """The stage-3b training config (`python train_emb2rig_multichar.py` adds its test mode to it:
    `animate.config.Emb2RigCommand`).

    Args:
        pretrained: a stage-3b checkpoint: initial weights (in the script's test mode, the model).
        encoder: stage-2 expression encoder checkpoint (frozen).
        renderer: stage-3a renderer checkpoint (frozen; must know every avatar in `avatars`).
        data_root: folder holding the face folders and the avatars.
        faces: unlabeled face folders under data_root (any tree of images; an actor = a sub-folder).
        avatars_root: avatar folders (`<name>/rigs.csv`, `avatar.yaml`) under data_root.
        avatars: avatar names to train on, in decoder order ([] = every avatar folder, sorted).
        crop_margin: face-crop margin (`data.face_track`) for the actor faces (boxes from each face
            folder's `face_boxes.csv`) and the avatar renders (`face_box` in `avatar.yaml`); use the
            stage-2 encoder's `crop_margin`. Stored in the checkpoint: animate frames detected faces with it.
        val_fraction: share of face actors and avatar rows held out for validation.
        val_samples: validate on this many held-out samples, evenly spaced over faces then renders
            (0 = all); the same subset every epoch.
        targets_per_sample: target avatars each sample is decoded for (renders: their own first).
        steps_per_epoch: 0 = one pass over the mixed training set per epoch.
        num_workers: DataLoader processes that decode the faces and renders (per process).
        cache: decode every face and render once into memory instead of streaming them from disk (small
            worlds such as the demo; ignored under torchrun, where each rank would hold a copy).
        optimizer / betas / lr / weight_decay: 'adam' (official: betas (0, 0.99), lr 1e-5) or 'adamw'
            (decoupled decay); weight decay skips biases and norms either way.
        schedule: per step (`common.optim.LrSchedule`), after `warmup_epochs` of linear warm-up (warmup_epochs *
            steps per epoch, rounded up): 'cosine' decays to `min_lr` over the run; 'warm_restarts' is torch's
            CosineAnnealingWarmRestarts(restart_period, restart_mult, min_lr) (official: 500, 2, 1e-6),
            computed from the step number alone, so a resumed run continues exactly.
        tensorboard: also write TensorBoard event files into the run folder.
    """
    # old names, refused with the new one (common.config); a note after the name goes into the message
    RENAMED = {"warmup_steps": "warmup_epochs (in epochs now: warm-up steps / steps per epoch)"}
    output_dir: str = "outputs/emb2rig"
    pretrained: str = ""
    encoder: str = "outputs/expression/checkpoint-best.pth"
    renderer: str = "outputs/rig2img/checkpoint-best.pth"
    data_root: str = "data/freeavatar"
    faces: list[str] = field(default_factory=lambda: ["faces/train"])
    avatars_root: str = "avatars"
    avatars: list[str] = field(default_factory=list)
    crop_margin: float = 0.3
    val_fraction: float = 0.1
    val_samples: int = 1024
    targets_per_sample: int = 2
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"
    epochs: int = 50
    steps_per_epoch: int = 0
    batch_size: int = 16
    num_workers: int = 0
    cache: bool = False
    optimizer: str = "adam"
    betas: list[float] = field(default_factory=lambda: [0.0, 0.99])
    lr: float = 1e-5
    weight_decay: float = 0.0
    schedule: str = "warm_restarts"
    min_lr: float = 1e-6
    warmup_epochs: float = 0.0
    restart_period: int = 500
    restart_mult: int = 2
    tensorboard: bool = False
    model: DecoderConfig = field(default_factory=DecoderConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    disc: DiscConfig = field(default_factory=DiscConfig)

    def __post_init__(self):
        check_choice("precision", self.precision, list(PRECISIONS))
        check_choice("optimizer", self.optimizer, ["adam", "adamw"])
        check_choice("schedule", self.schedule, ["cosine", "warm_restarts"])
        if len(self.betas) != 2:
            raise ValueError(f"'betas' must be two numbers [beta1, beta2], got {self.betas}")
        if self.warmup_epochs < 0:
            raise ValueError(f"'warmup_epochs' must be >= 0, got {self.warmup_epochs}")
        if self.restart_period < 1 or self.restart_mult < 1:
            raise ValueError(f"'restart_period' and 'restart_mult' must be >= 1, got {self.restart_period}, "
                             f"{self.restart_mult}")
        if self.crop_margin < 0:
            raise ValueError(f"'crop_margin' must be >= 0, got {self.crop_margin}")
        if self.targets_per_sample < 1:
            raise ValueError(f"'targets_per_sample' must be >= 1, got {self.targets_per_sample}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"'val_fraction' must lie in (0, 1), got {self.val_fraction}")
        if self.batch_size < 2 and self.model.norm == "batch":
            raise ValueError("BatchNorm needs batch_size >= 2; raise batch_size or set model.norm=layer")
