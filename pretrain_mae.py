"""Stage 1: MAE pre-training of the ViT face encoder.

    python pretrain_mae.py configs/demo/mae_pretrain.yaml            # CPU demo, a few minutes
    torchrun --nproc_per_node=8 pretrain_mae.py configs/mae_pretrain.yaml train_roots=[/data/faces]
"""
import os

# Idle OpenMP threads sleep instead of spinning: 3-5x faster when other jobs share the CPU cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from common.config import cli  # noqa: E402
from mae_pretrain.config import MAEPretrainConfig  # noqa: E402
from mae_pretrain.main import main  # noqa: E402

if __name__ == "__main__":
    main(cli(MAEPretrainConfig, default="configs/mae_pretrain.yaml"))
