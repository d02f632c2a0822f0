"""Animate: drive every avatar of a trained stage-3b checkpoint from a face video, images or an image.

    python animate.py clip.mp4 --pretrained outputs/demo/emb2rig/checkpoint-best.pth

`animate.main.run(AnimateConfig)` is the whole product path; `animate.models.load_models` and
`animate.inference.prepare` are its model half. Nothing is imported here, so the stage-3b script can
read `animate.config` without loading video and detector libraries.
"""
