"""3-D avatars: glTF / OBJ-folder reading, headless rendering, the mesh -> avatar command, the exports."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from avatar3d.arkit import LIVELINK_HEADER, arkit_map, livelink_timecode, read_livelink_csv, write_livelink_csv
from avatar3d.avatar import MeshAvatarSettings, control_units, sample_rigs, write_mesh_avatar
from avatar3d.mesh import BlendShapeMesh, MeshFormatError, read_mesh, write_glb
from avatar3d.render import MeshRenderer, RenderSettings
from tests.gl import needs_egl

ROOT = Path(__file__).resolve().parents[1]
ICT = ROOT.parent / "shared" / "ict-facekit" / "FaceXModel"
VALIDATOR = ROOT / ".tools" / "gltf" / "node_modules"




def tiny_mesh(n: int = 8) -> BlendShapeMesh:
    """A bumped n x n grid facing +Z with two parts and two shapes: `jawOpen` pulls the lower rows down,
    `eyeBlinkLeft` pushes a patch at the upper left forward."""
    y, x = np.mgrid[0:n, 0:n] / (n - 1) * 2 - 1
    z = 0.3 * np.exp(-(x ** 2 + y ** 2))
    verts = np.c_[x.ravel(), -y.ravel(), z.ravel()].astype(np.float32)
    quads = [(r * n + c, (r + 1) * n + c, (r + 1) * n + c + 1, r * n + c + 1)
             for r in range(n - 1) for c in range(n - 1)]
    faces = np.asarray([t for a, b, c, d in quads for t in ((a, b, c), (a, c, d))], np.int32)
    jaw = np.zeros_like(verts)
    jaw[:, 1] = np.where(verts[:, 1] < -0.2, -0.4 * (-0.2 - verts[:, 1]), 0)
    blink = np.zeros_like(verts)
    blink[:, 2] = np.where((verts[:, 0] < -0.3) & (verts[:, 1] > 0.3), 0.5, 0)
    part = (np.arange(len(faces)) >= len(faces) // 2).astype(np.int32)
    return BlendShapeMesh(verts, faces, np.stack([jaw, blink]), ["jawOpen", "eyeBlinkLeft"], part,
                          ["skin", "lips"], np.asarray([[0.8, 0.6, 0.5], [0.7, 0.2, 0.2]], np.float32), "tiny")


def write_obj(path: Path, verts: np.ndarray, faces: np.ndarray, face_part: np.ndarray, parts: list[str]) -> None:
    lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in verts]
    last = None
    for f, p in zip(faces, face_part):
        if p != last:
            lines.append(f"usemtl {parts[p]}")
            last = p
        lines.append("f " + " ".join(f"{i + 1}/{i + 1}" for i in f))
    path.write_text("\n".join(lines) + "\n")


def test_glb_round_trip_and_obj_folder_give_the_same_shapes(tmp_path):
    mesh = tiny_mesh()
    write_glb(tmp_path / "m.glb", mesh)
    folder = tmp_path / "objs"
    folder.mkdir()
    write_obj(folder / "neutral.obj", mesh.vertices, mesh.faces, mesh.face_part, mesh.parts)
    for name, delta in zip(mesh.target_names, mesh.targets):
        write_obj(folder / f"{name}.obj", mesh.vertices + delta, mesh.faces, mesh.face_part, mesh.parts)
    from_glb, from_obj = read_mesh(tmp_path / "m.glb"), read_mesh(folder)

    def corners(m: BlendShapeMesh, names: list[str]):
        """Triangle corners, neutral and per shape: the same for any vertex sharing (glTF splits vertices
        at part borders, one primitive per part)."""
        order = [m.target_names.index(n) for n in names]
        return m.vertices[m.faces], m.targets[order][:, m.faces], m.face_part, m.parts

    want = corners(mesh, mesh.target_names)
    for got in (corners(from_glb, mesh.target_names), corners(from_obj, mesh.target_names)):
        np.testing.assert_allclose(got[0], want[0], atol=1e-5)
        np.testing.assert_allclose(got[1], want[1], atol=1e-5)
        np.testing.assert_array_equal(got[2], want[2])
        assert got[3] == want[3]
    assert from_glb.target_names == mesh.target_names
    assert sorted(from_obj.target_names) == sorted(mesh.target_names)


def test_malformed_meshes_are_refused_with_their_file(tmp_path):
    mesh = tiny_mesh()
    no_targets = BlendShapeMesh(mesh.vertices, mesh.faces, np.zeros((0, len(mesh.vertices), 3), np.float32), [],
                                mesh.face_part, mesh.parts, mesh.part_colors)
    write_glb(tmp_path / "flat.glb", no_targets)
    with pytest.raises(MeshFormatError, match=r"flat\.glb: no mesh with morph targets"):
        read_mesh(tmp_path / "flat.glb")
    write_glb(tmp_path / "unnamed.glb", mesh)  # drop the names from the JSON chunk
    raw = (tmp_path / "unnamed.glb").read_bytes()
    n = int.from_bytes(raw[12:16], "little")
    doc = json.loads(raw[20:20 + n])
    del doc["meshes"][0]["extras"]
    text = json.dumps(doc).encode()
    text += b" " * (-len(text) % 4)
    body = raw[20 + n:]
    out = raw[:8] + (12 + 8 + len(text) + len(body)).to_bytes(4, "little") + len(text).to_bytes(4, "little")
    (tmp_path / "unnamed.glb").write_bytes(out + raw[16:20] + text + body)
    with pytest.raises(MeshFormatError, match=r"unnamed\.glb: .*2 morph targets but 0 names"):
        read_mesh(tmp_path / "unnamed.glb")
    folder = tmp_path / "objs"
    folder.mkdir()
    write_obj(folder / "neutral.obj", mesh.vertices, mesh.faces, mesh.face_part, mesh.parts)
    write_obj(folder / "jawOpen.obj", mesh.vertices[:-1], mesh.faces[:-3], mesh.face_part[:-3], mesh.parts)
    with pytest.raises(MeshFormatError, match=r"jawOpen\.obj: 63 vertices, the neutral neutral\.obj has 64"):
        read_mesh(folder)
    with pytest.raises(MeshFormatError, match="unsupported mesh file"):
        (tmp_path / "x.fbx").write_text("x")
        read_mesh(tmp_path / "x.fbx")


@needs_egl
def test_renders_follow_the_weights_and_zero_weights_give_the_neutral():
    mesh = tiny_mesh()
    neutral_only = BlendShapeMesh(mesh.vertices, mesh.faces, np.zeros((1, len(mesh.vertices), 3), np.float32),
                                  ["none"], mesh.face_part, mesh.parts, mesh.part_colors)
    s = RenderSettings(size=48)
    r, r0 = MeshRenderer(mesh, s), MeshRenderer(neutral_only, s)
    try:
        zero, neutral = r.render({}), r0.render({})
        jaw, blink = r.render({"jawOpen": 1.0}), r.render({"eyeBlinkLeft": 1.0})
        half = r.render({"jawOpen": 0.5})
    finally:
        r.release()
        r0.release()
    assert zero.shape == (48, 48, 3) and zero.dtype == np.uint8
    np.testing.assert_array_equal(zero, neutral)
    diff = lambda a, b: np.abs(a.astype(int) - b.astype(int)).mean()  # noqa: E731
    assert diff(jaw, zero) > 1 and diff(blink, zero) > 0.5 and diff(jaw, blink) > 1
    assert 0 < diff(half, zero) < diff(jaw, zero)
    # the jaw moves the lower half of the picture, the blink the upper left
    rows = np.abs(jaw.astype(int) - zero.astype(int)).sum(axis=(1, 2))
    assert rows[24:].sum() > 5 * rows[:20].sum()
    assert len(np.unique(zero.reshape(-1, 3), axis=0)) > 20  # shaded, not flat


def test_rig_sampler_looks_like_animation():
    names = ["jawOpen", "eyeBlinkLeft", "eyeBlinkRight", "mouthSmile_L", "mouthSmile_R", "browInnerUp", "cheekPuff"]
    assert sorted(map(sorted, control_units(names))) == [[0], [1, 2], [3, 4], [5], [6]]
    rigs = sample_rigs(names, 2000, np.random.default_rng(0), mean_active=2.0)
    assert (rigs[0] == 0).all() and rigs.min() >= 0 and rigs.max() <= 1
    active = (rigs > 0).sum(1)
    assert 0.02 < (active == 0).mean() < 0.15 and active.mean() < 4
    assert np.corrcoef(rigs[:, 1], rigs[:, 2])[0, 1] > 0.5  # a pair moves mostly together
    assert np.corrcoef(rigs[:, 0], rigs[:, 5])[0, 1] < 0.2
    np.testing.assert_array_equal(rigs, sample_rigs(names, 2000, np.random.default_rng(0), mean_active=2.0))


def test_arkit_names_map_from_ict_and_arkit_spellings():
    m = arkit_map(["eyeBlink_L", "EyeBlinkRight", "browInnerUp_L", "browInnerUp_R", "jawOpen", "cheekRaiser_L"])
    assert m == {"eyeBlink_L": "eyeBlinkLeft", "EyeBlinkRight": "eyeBlinkRight", "browInnerUp_L": "browInnerUp",
                 "browInnerUp_R": "browInnerUp", "jawOpen": "jawOpen"}
    assert arkit_map(["smile"], {"smile": "MouthSmileLeft"}) == {"smile": "mouthSmileLeft"}
    with pytest.raises(KeyError, match="not an ARKit"):
        arkit_map(["smile"], {"smile": "grin"})


def test_livelink_csv_has_live_links_header_and_reads_back(tmp_path):
    assert ",".join(LIVELINK_HEADER).startswith("Timecode,BlendShapeCount,EyeBlinkLeft,EyeLookDownLeft,")
    assert LIVELINK_HEADER[LIVELINK_HEADER.index("JawForward"):][:3] == ["JawForward", "JawRight", "JawLeft"]
    assert LIVELINK_HEADER[-9:] == ["HeadYaw", "HeadPitch", "HeadRoll", "LeftEyeYaw", "LeftEyePitch", "LeftEyeRoll",
                                    "RightEyeYaw", "RightEyePitch", "RightEyeRoll"]
    assert len(LIVELINK_HEADER) == 63
    times = np.arange(5) / 30.0 + 61.0
    jaw = np.linspace(0, 1, 5)
    write_livelink_csv(tmp_path / "take.csv", times, {"jawOpen": jaw, "eyeBlinkLeft": 1 - jaw}, fps=30.0)
    header = (tmp_path / "take.csv").read_text().splitlines()[0]
    assert header == ",".join(LIVELINK_HEADER)
    codes, cols = read_livelink_csv(tmp_path / "take.csv")
    assert codes == ["00:01:01:00.000", "00:01:01:01.000", "00:01:01:02.000", "00:01:01:03.000", "00:01:01:04.000"]
    np.testing.assert_allclose(cols["JawOpen"], jaw, atol=1e-5)
    np.testing.assert_allclose(cols["EyeBlinkLeft"], 1 - jaw, atol=1e-5)
    assert (cols["BlendShapeCount"] == 61).all() and (cols["TongueOut"] == 0).all() and (cols["HeadYaw"] == 0).all()
    assert livelink_timecode(3723.5 + 1 / 120, 60.0) == "01:02:03:30.500"


@needs_egl
def test_mesh_avatar_folder_reads_as_an_avatar(tmp_path):
    from data.avatars import AvatarRigDataset, read_avatar

    write_glb(tmp_path / "head.glb", tiny_mesh())
    s = MeshAvatarSettings(count=12, seed=3, render=RenderSettings(size=32))
    write_mesh_avatar(read_mesh(tmp_path / "head.glb"), tmp_path / "avatars" / "head", s)
    av = read_avatar(tmp_path / "avatars" / "head")
    assert av.controls == ["jawOpen", "eyeBlinkLeft"] and len(av.images) == 12 and (av.rigs[0] == 0).all()
    eye, mouth = av.eye_boxes[0], av.mouth_box
    assert eye[0] < 0.5 and eye[1] < 0.5  # the blink patch is at the upper left of the picture
    assert all(0 <= v <= 1 for v in [*eye, *mouth, *av.face_box])
    ds = AvatarRigDataset([av], image_size=32, split="train", val_fraction=0.0)
    assert ds[0]["image"].shape == (3, 32, 32)
    assert read_mesh(tmp_path / "avatars" / "head" / "mesh.glb").target_names == av.controls


def _validator() -> list[str] | None:
    if shutil.which("node") is None or not (VALIDATOR / "gltf-validator").is_dir():
        return None
    return ["node", str(ROOT / "scripts" / "validate_gltf.js")]


def test_exports_of_a_clip_validate_and_key_every_frame(tmp_path):
    from pygltflib import GLTF2

    from animate.exports import export_avatars
    from avatar3d.mesh import _accessor

    avatars = tmp_path / "avatars"
    (avatars / "head").mkdir(parents=True)
    write_glb(avatars / "head" / "mesh.glb", tiny_mesh())
    (avatars / "head" / "avatar.yaml").write_text("mesh: mesh.glb\n")
    n = 9
    times = np.arange(n) / 25.0
    curves = np.random.default_rng(0).random((n, 1, 3)).astype(np.float32)
    curves[:2] = np.nan  # no face yet: the neutral
    outputs, notes = export_avatars(tmp_path, ["head"], [["eyeBlinkLeft", "jawOpen"]], curves, times, 25.0, avatars)
    assert outputs == {"glb": ["head.glb"], "livelink": ["head_livelink.csv"]} and notes == []
    gltf = GLTF2().load(str(tmp_path / "head.glb"))
    sampler = gltf.animations[0].samplers[0]
    keys = _accessor(gltf, sampler.input, tmp_path).ravel()
    weights = _accessor(gltf, sampler.output, tmp_path).reshape(n, 2)  # targets: jawOpen, eyeBlinkLeft
    np.testing.assert_allclose(keys, times, atol=1e-6)
    np.testing.assert_allclose(weights[2:], curves[2:, 0, [1, 0]], atol=1e-6)
    assert (weights[:2] == 0).all()
    _, cols = read_livelink_csv(tmp_path / "head_livelink.csv")
    np.testing.assert_allclose(cols["JawOpen"][2:], curves[2:, 0, 1], atol=1e-5)
    cmd = _validator()
    if cmd is None:
        pytest.skip("Khronos glTF validator not installed (make test installs it with npm)")
    env = {**os.environ, "NODE_PATH": str(VALIDATOR)}
    res = subprocess.run([*cmd, str(tmp_path / "head.glb")], capture_output=True, text=True, env=env, timeout=60)
    report = json.loads(res.stdout)
    assert res.returncode == 0 and report["numErrors"] == 0, res.stdout + res.stderr


@pytest.mark.skipif(not ICT.is_dir(), reason="ICT FaceKit not present at ../shared/ict-facekit")
@needs_egl
def test_ict_facekit_imports_and_its_shapes_render():
    mesh = read_mesh(ICT).select(["M_Face", "M_ScleraLeft", "M_IrisLeft", "M_ScleraRight", "M_IrisRight"])
    assert len(mesh.target_names) >= 53 and {"jawOpen", "eyeBlink_L", "mouthSmile_R"} <= set(mesh.target_names)
    assert len(arkit_map(mesh.target_names)) >= 53
    r = MeshRenderer(mesh, RenderSettings(size=64))
    try:
        neutral, jaw = r.render({}), r.render({"jawOpen": 1.0})
    finally:
        r.release()
    assert np.abs(neutral.astype(int) - jaw.astype(int)).mean() > 0.5


def test_demo_head_has_arkit_shapes_that_move_and_its_stored_boxes_match_the_mesh():
    from avatar3d.avatar import region_boxes
    from avatar3d.render import Camera
    from data.demo_world.avatars import AVATARS, MESH_BOXES
    from data.demo_world.head3d import HEAD_CONTROLS, HEAD_RENDER, build_head

    mesh = build_head()
    assert mesh.target_names == HEAD_CONTROLS == AVATARS["head"]["controls"] and len(HEAD_CONTROLS) >= 20
    assert set(arkit_map(HEAD_CONTROLS).values()) == set(HEAD_CONTROLS)  # every control is an ARKit shape
    assert (np.abs(mesh.targets).max(axis=(1, 2)) > 0.03).all()  # each shape moves something
    boxes = region_boxes(mesh, Camera(mesh.vertices, HEAD_RENDER), MeshAvatarSettings())
    assert [boxes["eye_boxes"], boxes["mouth_box"], boxes["face_box"]] == [*map(list, MESH_BOXES["head"])]
