"""Stage 2: fine-tune the stage-1 ViT into a 16-d expression embedding on comparison triplets.

    python train.py configs/demo/expression.yaml                 # CPU demo (after the demo MAE run)
    python train.py configs/demo/expression.yaml pretrained=null output_dir=outputs/demo/expression_scratch
    torchrun --nproc_per_node 8 train.py configs/mae_train_expemb.yaml data_root=/data/fec batch_size=8
    python train.py CONFIG mode=eval pretrained=CKPT test_csv=PATH [format=fec url_map=...]   # score a checkpoint
"""
from common.config import cli
from expression_finetune.config import ExpressionConfig
from expression_finetune.main import main

if __name__ == "__main__":
    main(cli(ExpressionConfig, default="configs/mae_train_expemb.yaml"))
