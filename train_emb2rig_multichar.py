"""Stage 3b: train the multi-avatar rig decoder (dynamic identity injection) through the frozen
expression encoder and neural renderer; `mode=test` animates images or a video with a trained one.

    python train_emb2rig_multichar.py configs/demo/emb2rig.yaml          # CPU demo, minutes
    python train_emb2rig_multichar.py configs/configs_emb2rig_multi.yaml  # paper setting
    torchrun --nproc_per_node=8 train_emb2rig_multichar.py configs/configs_emb2rig_multi.yaml
    python train_emb2rig_multichar.py configs/configs_emb2rig_multi.yaml mode=test pretrained=CKPT test.input=clip.mp4

Any config key can be overridden: `loss.weight_perceptual=0 epochs=10`. Test mode is `python animate.py`.
"""
from animate.config import Emb2RigCommand
from common.config import cli

if __name__ == "__main__":
    cfg = cli(Emb2RigCommand, default="configs/configs_emb2rig_multi.yaml")
    if cfg.mode == "test":
        from animate.main import run_cli
        run_cli(cfg.animate_config(), key_prefix="test.")
    else:
        from emb2rig.main import main
        main(cfg)
