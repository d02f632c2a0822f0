"""Stage 3a config: `python train_rig2img.py configs/configs_rig2img.yaml key=value ...`."""
from __future__ import annotations

from dataclasses import dataclass, field

from common.config import check_choice
from common.device import PRECISIONS
from rig2img.losses import REGION_NORMS
from rig2img.models import GeneratorConfig

SCHEDULES = ("constant", "cosine", "warm_restarts")


@dataclass
class Rig2ImgConfig:
    """Neural-renderer training (rig -> avatar image).

    Args:
        data_root: folder of avatar folders (`<name>/rigs.csv`, images, `avatar.yaml`).
        avatars: avatar folder names to train on, in index order (empty: every folder, sorted).
        val_fraction: share of each avatar's rows held out for evaluation (stable hash of the image path).
        model: GeneratorConfig (`mode` per_avatar | shared, `image_size`, widths).
        batch_size: samples per step and process.
        num_workers: DataLoader processes that decode the images (per process).
        cache: decode every image once into memory instead of streaming them from disk (small worlds such as
            the demo; ignored under torchrun, where each rank would hold a copy: `data.loading.use_cache`).
        lr, betas, weight_decay: Adam settings (official: 1e-5, (0, 0.99), 0).
        schedule: per-step learning rate after `warmup_epochs` of linear warm-up (`common.optim.LrSchedule`):
            'constant'; 'cosine' (down to `min_lr` at the last step); 'warm_restarts' (official: torch's
            CosineAnnealingWarmRestarts stepped every iteration: cosine from `lr` to `min_lr` over
            `restart_period` steps, each next period `restart_mult` times longer).
        warmup_epochs: linear warm-up before any schedule (official: none).
        min_lr: floor of the 'cosine' and 'warm_restarts' schedules.
        restart_period, restart_mult: first period (steps) and period growth of 'warm_restarts'.
        weight_image: weight of the L1 over the whole image.
        weight_region: weight of the L1 inside the eye and mouth boxes (official: 10).
        region_norm: 'image' (official: the masked L1 is averaged over the whole image) or 'box'
            (averaged over the in-box pixels only, so about 1 / box share stronger).
        grid_samples: held-out samples per avatar in each epoch's ground-truth-vs-render grid.
        eval_every: evaluate (and draw the grid) every N epochs and at the last epoch.
        tensorboard: also write TensorBoard scalars to `<output_dir>/tb` (metrics.jsonl always).
    """
    RENAMED = {"lr_schedule": "schedule"}  # old key -> new key (common.config.renamed_keys); not a field

    output_dir: str = "outputs/rig2img"
    data_root: str = "data/avatars"
    avatars: list[str] = field(default_factory=list)
    val_fraction: float = 0.1
    model: GeneratorConfig = field(default_factory=GeneratorConfig)
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"
    epochs: int = 200
    batch_size: int = 32
    num_workers: int = 0
    cache: bool = False
    lr: float = 1e-5
    betas: list[float] = field(default_factory=lambda: [0.0, 0.99])
    weight_decay: float = 0.0
    schedule: str = "constant"
    warmup_epochs: float = 0.0
    min_lr: float = 0.0
    restart_period: int = 500
    restart_mult: int = 2
    weight_image: float = 1.0
    weight_region: float = 10.0
    region_norm: str = "image"
    grid_samples: int = 8
    eval_every: int = 1
    tensorboard: bool = False

    def __post_init__(self):
        check_choice("precision", self.precision, PRECISIONS)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_choice("region_norm", self.region_norm, REGION_NORMS)
        if len(self.betas) != 2:
            raise ValueError(f"'betas' must be two numbers [beta1, beta2], got {self.betas}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"'val_fraction' must be in (0, 1), got {self.val_fraction}")
        for key in ("epochs", "batch_size", "eval_every", "restart_period", "restart_mult"):
            if getattr(self, key) < 1:
                raise ValueError(f"'{key}' must be >= 1, got {getattr(self, key)}")
        if self.warmup_epochs < 0:
            raise ValueError(f"'warmup_epochs' must be >= 0, got {self.warmup_epochs}")
