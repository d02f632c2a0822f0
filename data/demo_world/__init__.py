"""Synthetic, deterministic demo world for FreeAvatar (faces with known AUs, triplets, avatars).

Public API:
    make_world(out_dir, preset='tiny', seed=0, image_size=64) -> dict  (also world.json)
    AU_NAMES, EXPRESSION_CLASSES, AVATARS (name -> spec dict)
    render_actor(identity, au, pose=None, size=64) -> (RGB uint8 image, face bbox)
    render_avatar(name, rig, size=64) -> RGB uint8 image
    au_to_rig(name, au) -> ground-truth rig;  sample_identity / sample_pose / sample_expression
"""
from .actors import render_actor, sample_identity, sample_pose
from .avatar_art import render_avatar
from .avatars import AVATARS, au_to_rig
from .expressions import AU_NAMES, EXPRESSION_CLASSES, PROTOTYPES, sample_expression
from .world import PRESETS, make_world

__all__ = ["make_world", "AU_NAMES", "EXPRESSION_CLASSES", "PROTOTYPES", "AVATARS", "PRESETS",
           "render_actor", "render_avatar", "au_to_rig", "sample_identity", "sample_pose",
           "sample_expression"]
