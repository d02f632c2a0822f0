"""Stage-2 config: one typed schema; defaults are the paper's setting (configs/mae_train_expemb.yaml,
which says where each value comes from).

Paths: `train_csv`, `val_csv`, `test_csv` and `url_map` are relative to `data_root` (the image root of
the triplet files); `pretrained` and `output_dir` are relative to where you run (the repo root).

`mode: train` trains, picks `checkpoint-best.pth` on `val_csv` and scores `test_csv` once at the end
with it. `mode: eval` scores the encoder checkpoint `pretrained` (ours, or an official stage-2
`epoch_*_acc_*.pth`) on `test_csv` without training.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from common.config import check_choice
from common.device import PRECISIONS
from expression_finetune.losses import DEFAULT_MARGINS, DISTANCES


@dataclass
class ExpressionConfig:
    RENAMED = {"cache_images": "cache"}  # old key -> new key (common.config.renamed_keys); not a field

    # run
    mode: str = "train"  # train | eval (score `pretrained` on `test_csv`, no training)
    output_dir: str = "outputs/expression"
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"  # fp32 | bf16 | fp16 (CUDA only)
    epochs: int = 100
    batch_size: int = 64  # triplets per step per process (3 images each)
    num_workers: int = 8
    steps_per_epoch: int = 0  # > 0: cap each epoch at this many steps (a fresh shuffle each epoch); 0 = full pass
    # data
    data_root: str = "data/fec"
    train_csv: str = "triplets/train.csv"
    val_csv: str = "triplets/val.csv"  # chooses checkpoint-best.pth
    test_csv: str | None = "triplets/test.csv"  # scored once at the end with checkpoint-best.pth; null = none
    format: str = "auto"  # auto | simple (anchor,positive,negative,type) | fec (raw 28 columns)
    url_map: str | None = None  # `url,path` CSV for raw FEC files
    cache: bool = False  # keep decoded images (tensors without augmentation) in memory: small sets; not under torchrun
    crop_margin: float | None = 0.3  # FEC boxes: square face crop with this margin, as every stage frames faces
    # model
    model: str = "mae_vit_base_patch16"  # a mae_pretrain.MAE_PRESETS name
    pretrained: str | None = None  # stage-1 / MAE / MAE-Face / stage-2 (ours or official) file; null = random init
    emb_dim: int = 16
    drop_path: float = 0.1
    # training augmentation (evaluation always uses resize + centre crop); see expression_finetune/transforms.py
    augment: str = "official"  # official (timm create_transform) | ours (torchvision) | camera | none (eval transform)
    camera_p: float = 0.5  # camera: share of the faces degraded as real footage is (data.degrade)
    crop_scale: list[float] = field(default_factory=lambda: [0.08, 1.0])  # RandomResizedCrop area range
    crop_ratio: list[float] = field(default_factory=lambda: [7 / 8, 8 / 7])  # and aspect-ratio range
    auto_augment: str | None = "rand-m9-mstd0.5-inc1"  # official: timm policy string (magnitude of 10)
    rand_ops: int = 2  # ours: torchvision RandAugment ops per image (0 = off)
    rand_magnitude: int = 9  # ours: torchvision magnitude (of 30)
    reprob: float = 0.25  # random erasing probability (official and ours)
    hflip: float = 0.0  # off: flips swap left/right action units (winks, smirks)
    # loss
    margins: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MARGINS))
    distance: str = "euclidean"  # euclidean (nn.TripletMarginLoss, official) | squared
    # optimisation
    optimizer: str = "sgd"  # sgd | adamw
    lr: float = 0.002
    min_lr: float = 0.0
    schedule: str = "constant"  # constant (official) | cosine, after the warm-up (common.optim.LrSchedule)
    warmup_epochs: float = 0.0  # linear warm-up before either schedule (official: none)
    momentum: float = 0.9  # sgd
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # adamw
    weight_decay: float = 5e-5
    layer_decay: float = 1.0  # layer-wise lr decay (1.0 = off; MAE fine-tuning uses 0.65-0.75)
    clip_grad: float | None = None
    tensorboard: bool = False  # also write TensorBoard event files (<output_dir>/tb)

    def __post_init__(self):
        check_choice("mode", self.mode, ["train", "eval"])
        check_choice("precision", self.precision, PRECISIONS)
        check_choice("augment", self.augment, ["official", "ours", "camera", "none"])
        if not 0 <= self.camera_p <= 1:
            raise ValueError(f"'camera_p' must lie in [0, 1], got {self.camera_p}")
        check_choice("distance", self.distance, DISTANCES)
        check_choice("format", self.format, ["auto", "simple", "fec"])
        check_choice("optimizer", self.optimizer, ["sgd", "adamw"])
        check_choice("schedule", self.schedule, ["cosine", "constant"])
        if len(self.crop_scale) != 2 or not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise ValueError(f"'crop_scale' must be [min, max] with 0 < min <= max <= 1, got {self.crop_scale}")
        if len(self.crop_ratio) != 2 or not 0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            raise ValueError(f"'crop_ratio' must be [min, max] with 0 < min <= max, got {self.crop_ratio}")
        if self.crop_margin is None:  # once "crop the box exactly": every stage now frames faces as one square
            raise ValueError("'crop_margin: null' (the exact FEC box) is gone: stage 2 frames faces as every stage "
                             "does, a square around the box (data.face_track); set a margin (0 = the box's size)")
        if self.crop_margin < 0:
            raise ValueError(f"'crop_margin' must be >= 0, got {self.crop_margin}")
        if not 0 < self.layer_decay <= 1:
            raise ValueError(f"'layer_decay' must be in (0, 1], got {self.layer_decay}")
        if self.batch_size < 1 or self.epochs < 1:
            raise ValueError("'batch_size' and 'epochs' must be >= 1")
        if self.mode == "eval" and not (self.pretrained and self.test_csv):
            raise ValueError("mode=eval scores a checkpoint on a triplet file: set pretrained=CKPT and test_csv=PATH")
