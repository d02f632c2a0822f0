"""Headless rendering of a blend-shape mesh with moderngl through EGL (no display needed).

    r = MeshRenderer(mesh, RenderSettings(size=256))
    img = r.render({"jawOpen": 0.8})           # (256, 256, 3) uint8
    imgs = r.render_many(weights)               # weights (N, T) -> (N, 256, 256, 3)
    xy = r.project(mesh.vertices[ids])          # normalised image coordinates (x right, y down)
    r.update(mesh=other, settings=s2, screen=m) # another mesh / light / view / picture roll, same context

EGL picks Mesa's llvmpipe on a machine without a GPU and the GPU's driver where there is one.
Shading: per-vertex normals recomputed for every pose, a key light, a fill light and ambient,
each part in its own base colour, both sides of a triangle lit. The camera is fixed for an avatar:
it looks down -Z at the centre of the neutral mesh's bounds from a distance that fits them, so
expressions move within a still frame.
"""
from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass

import numpy as np

from avatar3d.mesh import BlendShapeMesh

EGL_HELP = ("headless OpenGL needs EGL and Mesa: on Debian/Ubuntu `sudo apt install libegl1 libgl1-mesa-dri` "
            "(and `pip install moderngl`); on a GPU machine the driver's EGL works too")

_VERTEX = """
#version 330
uniform mat4 mvp;
in vec3 in_pos;
in vec3 in_normal;
in vec3 in_color;
out vec3 v_normal;
out vec3 v_color;
void main() {
    gl_Position = mvp * vec4(in_pos, 1.0);
    v_normal = in_normal;
    v_color = in_color;
}
"""
_FRAGMENT = """
#version 330
uniform vec3 key_dir;
uniform vec3 fill_dir;
uniform float ambient;
uniform float specular;
in vec3 v_normal;
in vec3 v_color;
out vec4 f_color;
void main() {
    vec3 n = normalize(v_normal);
    if (!gl_FrontFacing) n = -n;
    float diffuse = max(dot(n, key_dir), 0.0) + 0.35 * max(dot(n, fill_dir), 0.0);
    vec3 h = normalize(key_dir + vec3(0.0, 0.0, 1.0));
    float spec = specular * pow(max(dot(n, h), 0.0), 24.0);
    f_color = vec4(v_color * (ambient + (1.0 - ambient) * diffuse) + spec, 1.0);
}
"""


@dataclass
class RenderSettings:
    """Args:
        size: output images are size x size pixels.
        background: RGB in [0, 1].
        light: direction towards the key light (x right, y up, z towards the camera).
        ambient / specular: light shares.
        fov_deg: vertical field of view of the perspective camera.
        margin: the neutral bounds fill 1/margin of the frame.
        yaw_deg / pitch_deg: turn the head (about its centre) before the camera sees it.
        samples: multisample anti-aliasing (1 = off).
    """
    size: int = 256
    background: tuple[float, float, float] = (0.55, 0.6, 0.65)
    light: tuple[float, float, float] = (0.4, 0.5, 1.0)
    ambient: float = 0.25
    specular: float = 0.08
    fov_deg: float = 20.0
    margin: float = 1.15
    yaw_deg: float = 0.0
    pitch_deg: float = 0.0
    samples: int = 4


def create_context():
    """A standalone EGL OpenGL 3.3 context; a clear error naming the system packages when it fails."""
    if importlib.util.find_spec("torch") is not None:
        # Mesa's llvmpipe and the LLVM that torch._dynamo brings in (through triton; torchvision imports it)
        # segfault when llvmpipe is loaded first, so load torch's side before the context.
        import torch._dynamo  # noqa: F401
    try:
        import moderngl
    except ImportError as e:
        raise RuntimeError(f"moderngl is not installed; {EGL_HELP}") from e
    try:
        return moderngl.create_context(standalone=True, backend="egl", require=330)
    except Exception as e:
        raise RuntimeError(f"cannot create a headless OpenGL context through EGL ({e}); {EGL_HELP}") from e


def vertex_normals(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(V, 3) unit normals: the area-weighted sum of the adjacent triangles' normals."""
    a, b, c = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    fn = np.cross(b - a, c - a)
    n = np.zeros_like(verts)
    for k in range(3):
        idx = faces.ravel()
        n[:, k] = np.bincount(idx, np.repeat(fn[:, k], 3), minlength=len(verts))
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)


def _rotation(yaw_deg: float, pitch_deg: float) -> np.ndarray:
    y, p = math.radians(yaw_deg), math.radians(pitch_deg)
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rx = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    return rx @ ry


class Camera:
    """The fixed camera of an avatar, framed from the neutral mesh's bounds (no OpenGL needed).

    Attributes:
        mvp: (4, 4) model-view-projection matrix (column vectors).
    """

    def __init__(self, vertices: np.ndarray, s: RenderSettings):
        lo, hi = vertices.min(0), vertices.max(0)
        centre, half = (lo + hi) / 2, (hi - lo) / 2
        rot = np.eye(4)
        rot[:3, :3] = _rotation(s.yaw_deg, s.pitch_deg)
        to_centre = np.eye(4)
        to_centre[:3, 3] = -centre
        t = math.tan(math.radians(s.fov_deg) / 2)
        dist = max(half[0], half[1]) * s.margin / t + half[2]
        reach = 4 * np.linalg.norm(half)
        near, far = max(dist - reach, 1e-3 * dist), dist + reach
        view = np.eye(4)
        view[2, 3] = -dist
        proj = np.zeros((4, 4))
        proj[0, 0] = proj[1, 1] = 1 / t
        proj[2, 2], proj[2, 3] = -(far + near) / (far - near), -2 * far * near / (far - near)
        proj[3, 2] = -1
        self.mvp = proj @ view @ rot @ to_centre

    def project(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) mesh coordinates -> (N, 2) normalised image coordinates (x right, y down)."""
        p = np.c_[points, np.ones(len(points))] @ self.mvp.T
        ndc = p[:, :2] / p[:, 3:4]
        return np.c_[(ndc[:, 0] + 1) / 2, (1 - ndc[:, 1]) / 2]


class MeshRenderer:
    """Renders poses of one blend-shape mesh; see the module docstring."""

    def __init__(self, mesh: BlendShapeMesh, settings: RenderSettings | None = None):
        self.mesh, self.s = mesh, settings or RenderSettings()
        s = self.s
        self._bounds = np.stack([mesh.vertices.min(0), mesh.vertices.max(0)])  # (2, 3): the camera's framing
        self.camera = Camera(self._bounds, s)
        self.colors = mesh.part_colors[mesh.face_part]  # (F, 3)

        self.ctx = create_context()
        self.prog = self.ctx.program(vertex_shader=_VERTEX, fragment_shader=_FRAGMENT)
        self._set_uniforms()
        self._make_buffers()
        samples = min(s.samples, self.ctx.max_samples) if s.samples > 1 else 0
        size = (s.size, s.size)
        self.fbo_ms = self.ctx.framebuffer(self.ctx.renderbuffer(size, samples=samples),
                                           self.ctx.depth_renderbuffer(size, samples=samples))
        self.fbo = self.ctx.framebuffer(self.ctx.renderbuffer(size)) if samples else self.fbo_ms

    def _set_uniforms(self) -> None:
        s = self.s
        self.prog["mvp"].write(self.camera.mvp.T.astype("f4").tobytes())
        key = np.asarray(s.light, np.float64)
        self.prog["key_dir"].value = tuple(key / np.linalg.norm(key))
        fill = np.array([-key[0], 0.2, 1.0])
        self.prog["fill_dir"].value = tuple(fill / np.linalg.norm(fill))
        self.prog["ambient"].value = s.ambient
        self.prog["specular"].value = s.specular

    def _make_buffers(self) -> None:
        n_vert = len(self.mesh.faces) * 3  # unshared vertices: each triangle takes its part's colour
        self.vbo = self.ctx.buffer(reserve=n_vert * 9 * 4)
        self.vao = self.ctx.vertex_array(self.prog, [(self.vbo, "3f 3f 3f", "in_pos", "in_normal", "in_color")])

    def update(self, mesh: BlendShapeMesh | None = None, settings: RenderSettings | None = None,
               screen: np.ndarray | None = None) -> None:
        """Change what the next renders use, in the same OpenGL context (cheap: no new context).

        Args:
            mesh: another mesh (any triangle count, its own part colours); the camera keeps the framing
                of the first mesh's neutral bounds, so a bigger mesh looks bigger.
            settings: new settings (light, background, yaw/pitch, ...); size and samples cannot change.
            screen: (2, 3) affine map of normalised image coordinates (x right, y down) applied after the
                projection (roll, zoom or shift of the picture, no resampling); None: no map. `project`
                follows it. Each call sets it anew.
        """
        if settings is not None:
            if (settings.size, settings.samples) != (self.s.size, self.s.samples):
                raise ValueError("update() cannot change size or samples; make a new MeshRenderer")
            self.s = settings
        if mesh is not None:
            old, self.mesh = self.mesh, mesh
            self.colors = mesh.part_colors[mesh.face_part]
            if len(mesh.faces) != len(old.faces):
                self.vao.release()
                self.vbo.release()
                self._make_buffers()
        self.camera = Camera(self._bounds, self.s)
        if screen is not None:  # normalised (u, v) -> NDC (x, y) = (2u - 1, 1 - 2v), applied to clip coordinates
            to_uv = np.array([[0.5, 0, 0.5], [0, -0.5, 0.5], [0, 0, 1]])
            a = np.linalg.inv(to_uv) @ np.vstack([screen, [0, 0, 1]]) @ to_uv  # (3, 3) in NDC
            clip = np.eye(4)
            clip[:2, :2], clip[:2, 3] = a[:2, :2], a[:2, 2]  # x' = a x + b y + c w keeps x'/w affine in x/w
            self.camera.mvp = clip @ self.camera.mvp
        self._set_uniforms()

    def project(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) mesh coordinates -> (N, 2) normalised image coordinates (x right, y down)."""
        return self.camera.project(points)

    def render(self, weights: dict[str, float] | np.ndarray) -> np.ndarray:
        """One pose -> (size, size, 3) uint8."""
        verts = self.mesh.deformed(weights)
        normals = vertex_normals(verts, self.mesh.faces)
        f = self.mesh.faces.ravel()
        data = np.concatenate([verts[f], normals[f], np.repeat(self.colors, 3, axis=0)], axis=1)
        self.vbo.write(data.astype("f4").tobytes())
        self.fbo_ms.use()
        self.ctx.enable(self.ctx.DEPTH_TEST)
        self.ctx.clear(*self.s.background, 1.0)
        self.vao.render()
        if self.fbo is not self.fbo_ms:
            self.ctx.copy_framebuffer(self.fbo, self.fbo_ms)
        img = np.frombuffer(self.fbo.read(components=3), np.uint8).reshape(self.s.size, self.s.size, 3)
        return img[::-1].copy()  # OpenGL rows run bottom-up

    def render_many(self, weights: np.ndarray) -> np.ndarray:
        """(N, T) weights -> (N, size, size, 3) uint8."""
        return np.stack([self.render(w) for w in np.asarray(weights, np.float32)])

    def release(self) -> None:
        """Free the OpenGL objects and the context."""
        for obj in {self.vao, self.vbo, self.prog, self.fbo, self.fbo_ms}:
            obj.release()
        self.ctx.release()
