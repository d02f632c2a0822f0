"""Test helper: skip a test where no headless OpenGL context (EGL + Mesa or a GPU driver) can be made."""
import pytest

from avatar3d.render import create_context


def egl_available() -> bool:
    try:
        create_context().release()
        return True
    except RuntimeError:
        return False


needs_egl = pytest.mark.skipif(not egl_available(), reason="no headless OpenGL (EGL/Mesa) on this machine")
