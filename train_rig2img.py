"""Stage 3a: train the neural renderer (avatar rig -> avatar image).

    python train_rig2img.py configs/demo/rig2img.yaml [key=value ...]
    python train_rig2img.py configs/demo/rig2img.yaml model.mode=shared output_dir=outputs/demo/rig2img_shared
    torchrun --nproc_per_node N train_rig2img.py configs/configs_rig2img.yaml data_root=PATH
"""
from common.config import cli
from rig2img.config import Rig2ImgConfig
from rig2img.main import main

if __name__ == "__main__":
    main(cli(Rig2ImgConfig, default="configs/configs_rig2img.yaml"))
