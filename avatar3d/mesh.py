"""Blend-shape meshes: read glTF 2.0 morph targets or a folder of OBJs, write glTF binary (.glb).

    mesh = read_mesh("head.glb")                  # or a folder: neutral OBJ + one OBJ per shape
    verts = mesh.deformed({"jawOpen": 0.7})       # (V, 3) float32
    face = mesh.select(["M_Face", "M_IrisLeft"])  # keep some parts (OBJ materials / glTF primitives)
    write_glb("out.glb", face, times=t, weights=w)  # optional morph-weight animation, w: (N, T)

A mesh is one topology: neutral vertices, triangles, one delta per shape (target) and a part per
triangle (an OBJ `usemtl` material or a glTF primitive) with a base colour. glTF targets are named
by `mesh.extras.targetNames` (Blender's, three.js' and most exporters' convention). An OBJ folder
is ICT FaceKit's layout: a neutral OBJ (`--neutral`, default the one whose name contains
"neutral") and one full-mesh OBJ per shape, the shape's name being the file's stem; a shape is its
OBJ's positions minus the neutral's. Errors name the file and what is wrong.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

GLTF_EXTS = (".glb", ".gltf")
_DEFAULT_COLOR = (0.72, 0.62, 0.56)


class MeshFormatError(ValueError):
    """A mesh file or folder that cannot be used as a blend-shape avatar; the message names it."""


@dataclass
class BlendShapeMesh:
    """One blend-shape mesh.

    Args:
        vertices: (V, 3) float32 neutral positions (+Y up, the face looking down +Z, glTF's convention).
        faces: (F, 3) int32 triangles, counter-clockwise seen from outside.
        targets: (T, V, 3) float32 deltas from the neutral, one per shape.
        target_names: T unique shape names.
        face_part: (F,) int32 index into `parts` for every triangle.
        parts: part names (materials or primitives); part_colors: (P, 3) base colours in [0, 1].
        source: the file or folder it came from (for messages).
    """
    vertices: np.ndarray
    faces: np.ndarray
    targets: np.ndarray
    target_names: list[str]
    face_part: np.ndarray
    parts: list[str] = field(default_factory=lambda: ["mesh"])
    part_colors: np.ndarray = field(default_factory=lambda: np.asarray([_DEFAULT_COLOR], np.float32))
    source: str = ""

    def __post_init__(self):
        self.targets = np.ascontiguousarray(self.targets, np.float32)  # (T, V * 3) views for one matrix product
        v, t = len(self.vertices), len(self.target_names)
        problems = []
        if self.targets.shape != (t, v, 3):
            problems.append(f"targets have shape {self.targets.shape}, expected ({t}, {v}, 3)")
        if len(set(self.target_names)) != t or not all(self.target_names):
            problems.append("target names must be non-empty and unique")
        if len(self.faces) and (self.faces.min() < 0 or self.faces.max() >= v):
            problems.append("a triangle indexes a vertex that does not exist")
        if problems:
            raise MeshFormatError(f"{self.source}: " + "; ".join(problems))

    def weight_vector(self, weights: dict[str, float] | np.ndarray) -> np.ndarray:
        """(T,) float32 from a {name: weight} dict (unknown names are an error) or a vector."""
        if isinstance(weights, dict):
            unknown = sorted(set(weights) - set(self.target_names))
            if unknown:
                raise KeyError(f"{self.source}: no shapes named {unknown}; it has {self.target_names}")
            w = np.zeros(len(self.target_names), np.float32)
            for k, val in weights.items():
                w[self.target_names.index(k)] = val
            return w
        return np.asarray(weights, np.float32).reshape(len(self.target_names))

    def deformed(self, weights: dict[str, float] | np.ndarray) -> np.ndarray:
        """(V, 3) positions: neutral + sum_t w_t * delta_t."""
        w = self.weight_vector(weights)
        # einsum, not BLAS: a matrix-vector product this small is ~50x slower on BLAS threads of a busy CPU
        return self.vertices + np.einsum("t,tk->k", w, self.targets.reshape(len(w), -1)).reshape(-1, 3)

    def select(self, parts: list[str]) -> BlendShapeMesh:
        """The mesh with only the triangles of `parts` and the vertices they use."""
        unknown = sorted(set(parts) - set(self.parts))
        if unknown:
            raise MeshFormatError(f"{self.source}: no parts named {unknown}; it has {self.parts}")
        keep_parts = [self.parts.index(p) for p in parts]
        keep = np.isin(self.face_part, keep_parts)
        faces = self.faces[keep]
        used = np.unique(faces)
        remap = np.full(len(self.vertices), -1, np.int64)
        remap[used] = np.arange(len(used))
        part_remap = np.full(len(self.parts), -1, np.int64)
        part_remap[keep_parts] = np.arange(len(keep_parts))
        return BlendShapeMesh(self.vertices[used], remap[faces].astype(np.int32), self.targets[:, used],
                              list(self.target_names), part_remap[self.face_part[keep]].astype(np.int32),
                              list(parts), self.part_colors[keep_parts], self.source)


def read_mesh(path: str | Path, neutral: str | None = None) -> BlendShapeMesh:
    """Read a `.glb`/`.gltf` file with morph targets or a folder of OBJs of one topology."""
    path = Path(path)
    if path.is_dir():
        return read_obj_folder(path, neutral)
    if not path.is_file():
        raise MeshFormatError(f"{path}: not found; give a .glb/.gltf file or a folder of OBJs")
    if path.suffix.lower() in GLTF_EXTS:
        return read_gltf(path)
    raise MeshFormatError(f"{path}: unsupported mesh file; give a .glb/.gltf file or a folder of OBJs")


# ----------------------------------------------------------------------------------------- OBJ
def _obj_lines(path: Path) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()
    except OSError as e:
        raise MeshFormatError(f"{path}: cannot read ({e})") from e


def _obj_positions(path: Path, lines: list[str]) -> np.ndarray:
    """(V, 3) positions from the 'v' lines of an OBJ."""
    vlines = [ln[2:] for ln in lines if ln.startswith("v ")]
    if not vlines:
        raise MeshFormatError(f"{path}: no vertices ('v x y z' lines); is it an OBJ file?")
    try:
        return np.array([ln.split()[:3] for ln in vlines], np.float32).reshape(-1, 3)
    except ValueError:
        raise MeshFormatError(f"{path}: a 'v' line does not hold three numbers") from None


def read_obj(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Positions (V, 3), triangles (F, 3; polygons fanned), per-triangle part and part names of one OBJ."""
    lines = _obj_lines(path)
    verts = _obj_positions(path, lines)
    tris, part_of, parts, part = [], [], [], 0
    for ln in lines:
        if ln.startswith("usemtl "):
            name = ln.split(maxsplit=1)[1].strip()
            if name not in parts:
                parts.append(name)
            part = parts.index(name)
        elif ln.startswith("f "):
            idx = [int(tok.split("/")[0]) for tok in ln.split()[1:]]
            idx = [i - 1 if i > 0 else len(verts) + i for i in idx]
            for k in range(1, len(idx) - 1):
                tris.append((idx[0], idx[k], idx[k + 1]))
                part_of.append(part)
    return verts, np.asarray(tris, np.int32).reshape(-1, 3), np.asarray(part_of, np.int32), parts or ["mesh"]


def _mtl_colors(folder: Path, parts: list[str]) -> np.ndarray:
    """Diffuse colours (`Kd`) of `parts` from the folder's .mtl files; a default for the rest."""
    kd = {}
    for mtl in sorted(folder.glob("*.mtl")):
        name = None
        for ln in mtl.read_text(errors="replace").splitlines():
            tok = ln.split()
            if tok[:1] == ["newmtl"] and len(tok) > 1:
                name = tok[1]
            elif tok[:1] == ["Kd"] and name and len(tok) >= 4:
                kd[name] = [float(x) for x in tok[1:4]]
    return np.asarray([kd.get(p, _DEFAULT_COLOR) for p in parts], np.float32)


def read_obj_folder(folder: Path, neutral: str | None = None) -> BlendShapeMesh:
    """A neutral OBJ plus one OBJ per shape (same vertex count and order); see the module docstring.

    Identity shapes of ICT FaceKit (`identity*.obj`) are not expression shapes and are skipped.
    """
    objs = sorted(p for p in folder.glob("*.obj") if not p.stem.startswith("identity"))
    if neutral is None:
        cands = [p for p in objs if "neutral" in p.stem.lower()]
        if len(cands) != 1:
            raise MeshFormatError(f"{folder}: found {len(cands)} OBJs with 'neutral' in the name "
                                  f"({[p.name for p in cands]}); name the neutral one (neutral=FILE)")
        neutral_path = cands[0]
    else:
        neutral_path = folder / neutral
        if not neutral_path.is_file():
            raise MeshFormatError(f"{neutral_path}: neutral OBJ not found")
    verts, faces, face_part, parts = read_obj(neutral_path)
    shapes = [p for p in objs if p != neutral_path]
    if not shapes:
        raise MeshFormatError(f"{folder}: only the neutral OBJ; add one OBJ per blend shape")
    deltas = []
    for p in shapes:
        v = _obj_positions(p, _obj_lines(p))  # a shape's faces are the neutral's: positions only
        if v.shape != verts.shape:
            raise MeshFormatError(f"{p}: {len(v)} vertices, the neutral {neutral_path.name} has {len(verts)}; "
                                  "every shape must have the neutral's topology")
        deltas.append(v - verts)
    return BlendShapeMesh(verts, faces, np.stack(deltas), [p.stem for p in shapes], face_part, parts,
                          _mtl_colors(folder, parts), str(folder))


# ---------------------------------------------------------------------------------------- glTF
_COMPONENTS = {5120: np.int8, 5121: np.uint8, 5122: np.int16, 5123: np.uint16, 5125: np.uint32, 5126: np.float32}
_SIZES = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT4": 16}


def _accessor(gltf, i: int, path: Path) -> np.ndarray:
    """An accessor's data as an (count, n) array (sparse accessors applied)."""
    acc = gltf.accessors[i]
    dtype, n = np.dtype(_COMPONENTS[acc.componentType]), _SIZES[acc.type]

    def view_bytes(view_index: int) -> tuple[bytes, int, int]:
        view = gltf.bufferViews[view_index]
        data = gltf.get_data_from_buffer_uri(gltf.buffers[view.buffer].uri)
        if data is None:
            raise MeshFormatError(f"{path}: buffer {view.buffer} cannot be read (missing .bin file?)")
        return data, view.byteOffset or 0, view.byteStride or 0

    out = np.zeros((acc.count, n), dtype)
    if acc.bufferView is not None:
        data, offset, stride = view_bytes(acc.bufferView)
        offset += acc.byteOffset or 0
        item = dtype.itemsize * n
        if stride and stride != item:
            rows = np.frombuffer(data, np.uint8, count=stride * (acc.count - 1) + item, offset=offset)
            rows = np.lib.stride_tricks.as_strided(rows, (acc.count, item), (stride, 1))
            out = np.ascontiguousarray(rows).view(dtype).reshape(acc.count, n)
        else:
            out = np.frombuffer(data, dtype, count=acc.count * n, offset=offset).reshape(acc.count, n).copy()
    if acc.sparse is not None:
        sp = acc.sparse
        data, off, _ = view_bytes(sp.indices.bufferView)
        idx = np.frombuffer(data, _COMPONENTS[sp.indices.componentType], sp.count, off + (sp.indices.byteOffset or 0))
        data, off, _ = view_bytes(sp.values.bufferView)
        vals = np.frombuffer(data, dtype, sp.count * n, off + (sp.values.byteOffset or 0)).reshape(sp.count, n)
        out[idx.astype(np.int64)] = vals
    if acc.normalized and dtype.kind in "iu":
        out = out.astype(np.float32) / np.iinfo(dtype).max
    return out


def _extras(obj) -> dict:
    extras = obj.extras if obj is not None else None
    return extras if isinstance(extras, dict) else {}


def read_gltf(path: Path) -> BlendShapeMesh:
    """The first mesh with morph targets of a glTF file, every primitive of it as one part."""
    from pygltflib import GLTF2  # read-only use; writing is done by hand below

    try:
        gltf = GLTF2().load(str(path))
    except Exception as e:
        raise MeshFormatError(f"{path}: not a readable glTF file ({e})") from e
    meshes = [m for m in gltf.meshes or [] if any(p.targets for p in m.primitives)]
    if not meshes:
        raise MeshFormatError(f"{path}: no mesh with morph targets; export the blend shapes (shape keys) too")
    mesh = meshes[0]
    names = _extras(mesh).get("targetNames") or _extras(mesh.primitives[0]).get("targetNames")
    n_targets = len(mesh.primitives[0].targets or [])
    if not names or len(names) != n_targets:
        raise MeshFormatError(f"{path}: mesh '{mesh.name}' has {n_targets} morph targets but "
                              f"{len(names or [])} names in mesh.extras.targetNames; export the target names")
    verts, faces, deltas, face_part, parts, colors = [], [], [], [], [], []
    base = 0
    for k, prim in enumerate(mesh.primitives):
        if (prim.mode if prim.mode is not None else 4) != 4:
            raise MeshFormatError(f"{path}: primitive {k} of mesh '{mesh.name}' is not triangles (mode {prim.mode})")
        if len(prim.targets or []) != n_targets:
            raise MeshFormatError(f"{path}: primitive {k} has {len(prim.targets or [])} morph targets, "
                                  f"primitive 0 has {n_targets}")
        v = _accessor(gltf, prim.attributes.POSITION, path).astype(np.float32)
        idx = (_accessor(gltf, prim.indices, path).reshape(-1) if prim.indices is not None
               else np.arange(len(v))).astype(np.int64)
        d = []
        for t in prim.targets:
            pos = t.get("POSITION") if isinstance(t, dict) else getattr(t, "POSITION", None)
            d.append(_accessor(gltf, pos, path).astype(np.float32) if pos is not None else np.zeros_like(v))
        verts.append(v)
        faces.append(idx.reshape(-1, 3) + base)
        deltas.append(np.stack(d))
        face_part += [k] * (len(idx) // 3)
        mat = gltf.materials[prim.material] if prim.material is not None and gltf.materials else None
        parts.append((mat.name if mat is not None and mat.name else None) or f"primitive{k}")
        pbr = mat.pbrMetallicRoughness if mat is not None else None
        colors.append(pbr.baseColorFactor[:3] if pbr is not None and pbr.baseColorFactor else _DEFAULT_COLOR)
        base += len(v)
    return BlendShapeMesh(np.concatenate(verts), np.concatenate(faces).astype(np.int32),
                          np.concatenate(deltas, axis=1), list(names), np.asarray(face_part, np.int32),
                          _unique(parts), np.asarray(colors, np.float32), str(path))


def _unique(names: list[str]) -> list[str]:
    """Make part names unique (two primitives may share a material) by numbering repeats."""
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}.{seen[n] - 1}")
    return out


class _Bin:
    """The binary chunk of a .glb being written: 4-byte aligned views and their accessors."""

    def __init__(self):
        self.data, self.views, self.accessors = bytearray(), [], []

    def add(self, array: np.ndarray, acc_type: str, target: int | None = None, bounds: bool = False) -> int:
        array = np.ascontiguousarray(array)
        comp = {np.dtype(np.float32): 5126, np.dtype(np.uint32): 5125}[array.dtype]
        view = {"buffer": 0, "byteOffset": len(self.data), "byteLength": array.nbytes}
        if target is not None:
            view["target"] = target
        self.views.append(view)
        self.data += array.tobytes()
        self.data += b"\0" * (-len(self.data) % 4)
        acc = {"bufferView": len(self.views) - 1, "componentType": comp, "count": len(array), "type": acc_type}
        if bounds:
            flat = array.reshape(len(array), -1)
            acc["min"], acc["max"] = flat.min(0).tolist(), flat.max(0).tolist()
        self.accessors.append(acc)
        return len(self.accessors) - 1


def write_glb(path: str | Path, mesh: BlendShapeMesh, times: np.ndarray | None = None,
              weights: np.ndarray | None = None, animation_name: str = "animation") -> None:
    """Write `mesh` as a .glb: one primitive per part, morph targets named in `mesh.extras.targetNames`,
    and, with `times` (N,) seconds and `weights` (N, T), a morph-weight animation with one keyframe per
    row (LINEAR interpolation)."""
    b = _Bin()
    prims, materials = [], []
    for k, (part, color) in enumerate(zip(mesh.parts, mesh.part_colors)):
        tri = mesh.faces[mesh.face_part == k]
        if not len(tri):
            continue
        used = np.unique(tri)
        remap = np.zeros(len(mesh.vertices), np.int64)
        remap[used] = np.arange(len(used))
        pos = b.add(mesh.vertices[used].astype(np.float32), "VEC3", 34962, bounds=True)
        idx = b.add(remap[tri].astype(np.uint32).reshape(-1), "SCALAR", 34963)
        targets = [{"POSITION": b.add(mesh.targets[t, used].astype(np.float32), "VEC3", 34962, bounds=True)}
                   for t in range(len(mesh.target_names))]
        materials.append({"name": part, "pbrMetallicRoughness": {
            "baseColorFactor": [*map(float, color), 1.0], "metallicFactor": 0.0, "roughnessFactor": 0.7}})
        prims.append({"attributes": {"POSITION": pos}, "indices": idx, "material": len(materials) - 1,
                      "targets": targets})
    doc = {"asset": {"version": "2.0", "generator": "freeavatar avatar3d"},
           "scene": 0, "scenes": [{"nodes": [0]}], "nodes": [{"mesh": 0, "name": "avatar"}],
           "meshes": [{"name": "avatar", "primitives": prims, "weights": [0.0] * len(mesh.target_names),
                       "extras": {"targetNames": list(mesh.target_names)}}],
           "materials": materials}
    if times is not None:
        times = np.asarray(times, np.float32).reshape(-1)
        weights = np.asarray(weights, np.float32).reshape(len(times), len(mesh.target_names))
        if len(times) > 1 and not np.all(np.diff(times) > 0):
            raise ValueError("animation times must increase strictly")
        t_acc = b.add(times, "SCALAR", bounds=True)
        w_acc = b.add(weights.reshape(-1), "SCALAR")
        doc["animations"] = [{"name": animation_name,
                              "samplers": [{"input": t_acc, "output": w_acc, "interpolation": "LINEAR"}],
                              "channels": [{"sampler": 0, "target": {"node": 0, "path": "weights"}}]}]
    doc.update(accessors=b.accessors, bufferViews=b.views, buffers=[{"byteLength": len(b.data)}])
    text = json.dumps(doc, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 4)
    total = 12 + 8 + len(text) + 8 + len(b.data)
    out = struct.pack("<III", 0x46546C67, 2, total) + struct.pack("<II", len(text), 0x4E4F534A) + text
    out += struct.pack("<II", len(b.data), 0x004E4942) + bytes(b.data)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(out)
