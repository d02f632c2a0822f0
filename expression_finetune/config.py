"""Stage-2 config: one typed schema; defaults are the paper's setting (configs/mae_train_expemb.yaml).

Paths: `train_csv`, `val_csv` and `url_map` are relative to `data_root` (the image root of the
triplet files); `pretrained` and `output_dir` are relative to where you run (the repo root).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from common.config import check_choice
from common.device import PRECISIONS
from expression_finetune.losses import DEFAULT_MARGINS


@dataclass
class ExpressionConfig:
    # run
    output_dir: str = "outputs/expression"
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"  # fp32 | bf16 | fp16 (CUDA only)
    epochs: int = 30
    batch_size: int = 64  # triplets per step per process (3 images each)
    num_workers: int = 8
    steps_per_epoch: int = 0  # > 0: cap each epoch at this many steps (a fresh shuffle each epoch); 0 = full pass
    # data
    data_root: str = "data/fec"
    train_csv: str = "triplets/train.csv"
    val_csv: str = "triplets/test.csv"
    format: str = "auto"  # auto | simple (anchor,positive,negative,type) | fec (raw 28 columns)
    url_map: str | None = None  # `url,path` CSV for raw FEC files
    cache_images: bool = False  # keep decoded images in memory (small datasets)
    crop_margin: float | None = 0.3  # FEC boxes: square face crop with this margin (as test mode); null = exact box
    # model
    model: str = "mae_vit_base_patch16"  # a mae_pretrain.MAE_PRESETS name
    pretrained: str | None = None  # stage-1 / MAE / MAE-Face checkpoint; null = random init
    emb_dim: int = 16
    drop_path: float = 0.1
    # training augmentation (evaluation always uses resize + centre crop)
    crop_scale: list[float] = field(default_factory=lambda: [0.08, 1.0])  # RandomResizedCrop area range
    crop_ratio: list[float] = field(default_factory=lambda: [3 / 4, 4 / 3])  # and aspect-ratio range
    rand_ops: int = 2  # RandAugment ops per image (0 = off)
    rand_magnitude: int = 9
    reprob: float = 0.25  # random erasing probability
    hflip: float = 0.0  # off: flips swap left/right action units (winks, smirks)
    # loss
    margins: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MARGINS))
    # optimisation
    optimizer: str = "sgd"  # sgd | adamw
    lr: float = 0.002
    min_lr: float = 0.0
    schedule: str = "cosine"  # cosine (with warm-up) | constant
    warmup_epochs: float = 1.0
    momentum: float = 0.9  # sgd
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # adamw
    weight_decay: float = 5e-5
    layer_decay: float = 1.0  # layer-wise lr decay (1.0 = off; MAE fine-tuning uses 0.65-0.75)
    clip_grad: float | None = None

    def __post_init__(self):
        check_choice("precision", self.precision, PRECISIONS)
        check_choice("format", self.format, ["auto", "simple", "fec"])
        check_choice("optimizer", self.optimizer, ["sgd", "adamw"])
        check_choice("schedule", self.schedule, ["cosine", "constant"])
        if len(self.crop_scale) != 2 or not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise ValueError(f"'crop_scale' must be [min, max] with 0 < min <= max <= 1, got {self.crop_scale}")
        if len(self.crop_ratio) != 2 or not 0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            raise ValueError(f"'crop_ratio' must be [min, max] with 0 < min <= max, got {self.crop_ratio}")
        if self.crop_margin is not None and self.crop_margin < 0:
            raise ValueError(f"'crop_margin' must be >= 0 or null, got {self.crop_margin}")
        if not 0 < self.layer_decay <= 1:
            raise ValueError(f"'layer_decay' must be in (0, 1], got {self.layer_decay}")
        if self.batch_size < 1 or self.epochs < 1:
            raise ValueError("'batch_size' and 'epochs' must be >= 1")
