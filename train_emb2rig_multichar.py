"""Stage 3b: train the multi-avatar rig decoder (dynamic identity injection) through the frozen
expression encoder and neural renderer.

    python train_emb2rig_multichar.py configs/demo/emb2rig.yaml          # CPU demo, minutes
    python train_emb2rig_multichar.py configs/configs_emb2rig_multi.yaml  # paper setting
    torchrun --nproc_per_node=8 train_emb2rig_multichar.py configs/configs_emb2rig_multi.yaml

Any config key can be overridden: `loss.weight_perceptual=0 epochs=10`.
"""
from common.config import cli
from emb2rig.config import Emb2RigConfig
from emb2rig.main import main

if __name__ == "__main__":
    main(cli(Emb2RigConfig, default="configs/configs_emb2rig_multi.yaml"))
