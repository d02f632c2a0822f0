"""Stage 3a: neural renderer, avatar rig -> avatar image. Later stages use only `load_renderer`."""
from rig2img.renderer import Renderer, load_renderer

__all__ = ["Renderer", "load_renderer"]
