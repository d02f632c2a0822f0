"""Typed config of stage 1 (MAE pre-training): defaults here, then YAML, then `key=value`."""
from __future__ import annotations

from dataclasses import dataclass, field

from common.config import check_choice
from common.device import PRECISIONS

from .models_mae import MAE_PRESETS


@dataclass
class MAEPretrainConfig:
    """Stage-1 settings; defaults follow the paper / official MAE recipe (ViT-B/16, 224 px).

    The learning rate is `blr * batch_size * accum_iter * world_size / 256` unless `lr` is set.
    """
    RENAMED = {"iters_per_epoch": "steps_per_epoch", "grid_images": "grid_samples"}  # old names, refused

    # run
    output_dir: str = "outputs/mae_pretrain"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "bf16"  # fp32 | bf16 | fp16 (fp16: CUDA only)
    epochs: int = 400
    batch_size: int = 64  # per process and per micro-step
    num_workers: int = 8
    steps_per_epoch: int = 0  # cap on iterations per epoch (0: one pass over train_roots)
    stop_after_epochs: int = 0  # stop this invocation after N epochs (0: run to the end); resume later
    # model
    model: str = "mae_vit_base_patch16"
    pretrained: str = ""  # start a new run from a public MAE / MAE-Face file (decoder fresh when absent)
    img_size: int = 0  # 0: the preset's size
    norm_pix_loss: bool = True
    mask_ratio: float = 0.75
    compile: bool = False
    channels_last: bool = False
    # optimiser and schedule
    blr: float = 1.5e-4
    lr: float = 0.0  # absolute lr; 0: derived from blr
    min_lr: float = 0.0
    weight_decay: float = 0.05
    warmup_epochs: float = 40.0
    accum_iter: int = 1
    clip_grad: float = 0.0  # 0: off (as official)
    # data
    train_roots: list[str] = field(default_factory=lambda: ["data/faces/train"])
    val_roots: list[str] = field(default_factory=list)  # held-out faces; empty: no held-out loss
    val_max_images: int = 256  # held-out images used for the per-epoch loss
    scale_min: float = 0.2  # RandomResizedCrop scale range (scale_min, 1)
    crop_margin: float | None = None  # face crop where a folder has face_boxes.csv (as stages 2, 3b); null = whole
    grid_samples: int = 8  # faces in the per-epoch reconstruction grid (0: none)
    tensorboard: bool = False  # also write TensorBoard event files (<output_dir>/tb)
    log_every: int = 20  # iterations between progress updates and finite-loss checks

    def __post_init__(self) -> None:
        check_choice("model", self.model, sorted(MAE_PRESETS))
        check_choice("precision", self.precision, PRECISIONS)
        check_choice("device", self.device.split(":")[0], ["auto", "cpu", "cuda"])
        if not 0.0 < self.mask_ratio < 1.0:
            raise ValueError(f"'mask_ratio' must be in (0, 1), got {self.mask_ratio}")
        for name in ("epochs", "batch_size", "accum_iter", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"'{name}' must be >= 1, got {getattr(self, name)}")
        if 0 < self.steps_per_epoch < self.accum_iter:
            raise ValueError(f"'steps_per_epoch' ({self.steps_per_epoch}) is below 'accum_iter' ({self.accum_iter}): "
                             "an epoch would end before its first optimiser step; raise it or lower accum_iter")
        if not self.train_roots:
            raise ValueError("'train_roots' is empty; list at least one face-image folder")
