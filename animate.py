"""Animate: drive every avatar of a trained stage-3b checkpoint from a face video, images or an image.

    python animate.py clip.mp4 --pretrained outputs/demo/emb2rig/checkpoint-best.pth [--out DIR]
    python animate.py 'shots/*.jpg' --pretrained CKPT precision=fp32 quantize=int8 max_frames=100

The checkpoint decides the models; other settings come from configs/animate.yaml and `key=value`.
Same code as `python train_emb2rig_multichar.py CONFIG mode=test pretrained=CKPT test.input=INPUT`.
"""
import argparse
from pathlib import Path

from animate.config import AnimateConfig
from animate.main import run_cli
from common.config import cli

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("input", help="video file, folder of images, image, or a quoted glob pattern of images")
    ap.add_argument("--pretrained", required=True, help="stage-3b checkpoint (its run's checkpoint-best.pth)")
    ap.add_argument("--out", default="", help="output folder (default outputs/animate/<input name>)")
    ap.add_argument("--config", default=str(Path(__file__).parent / "configs" / "animate.yaml"), help="settings")
    args, overrides = ap.parse_known_args()
    run_cli(cli(AnimateConfig, argv=[args.config, f"input={args.input}", f"pretrained={args.pretrained}",
                                     f"out_dir={args.out}", *overrides]))
