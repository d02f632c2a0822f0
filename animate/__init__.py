"""Animate: drive every avatar of a trained stage-3b checkpoint from a face video, images or an image.

    python animate.py clip.mp4 --pretrained outputs/demo/emb2rig/checkpoint-best.pth

`run(AnimateConfig)` is the whole product path; `load_models` and `prepare` are its model half.
"""
from animate.config import AnimateConfig, AnimateSettings, Emb2RigCommand
from animate.inference import prepare
from animate.main import run
from animate.models import load_models

__all__ = ["AnimateConfig", "AnimateSettings", "Emb2RigCommand", "load_models", "prepare", "run"]
