"""Animate with a mesh avatar (stand-in networks of tests/test_animate.py): its `.glb` and Live Link exports,
its preview panel drawn from the mesh, and the neural renderer spared where only the mesh is shown."""
from __future__ import annotations

import numpy as np
import pytest

from data.video import VideoReader
from tests.test_animate import CONTROLS, NAMES, NO_FACE, Renderer, T, make_world, read_csv, run


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory)


def mesh_avatar(root):
    """`root/robot`: a one-triangle glTF whose targets are the robot's controls in reverse order, with
    `arkit_names` for two of them."""
    from avatar3d.mesh import BlendShapeMesh, write_glb

    (root / "robot").mkdir(parents=True)
    verts = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], np.float32)
    targets = np.stack([np.full_like(verts, 0.1 * (i + 1)) for i in range(3)])
    mesh = BlendShapeMesh(verts, np.array([[0, 1, 2]], np.int32), targets, CONTROLS[0][::-1], np.zeros(1, np.int32))
    write_glb(root / "robot" / "mesh.glb", mesh)
    (root / "robot" / "avatar.yaml").write_text("mesh: mesh.glb\narkit_names: {robot_c0: jawOpen, robot_c2: "
                                                "EyeBlinkLeft}\n")
    return root


def test_mesh_avatar_gets_a_glb_and_live_link_export_that_match_its_csv(world, monkeypatch, tmp_path):
    """An avatar folder with `mesh:` and `arkit_names:` makes animate write `<avatar>.glb` (one keyframe per
    frame at the CSV's times, the CSV's values) and `<avatar>_livelink.csv`; the others get neither."""
    from pygltflib import GLTF2

    from avatar3d.arkit import read_livelink_csv
    from avatar3d.mesh import _accessor

    avatars = mesh_avatar(tmp_path / "avatars")
    out = tmp_path / "out"
    summary = run(world, monkeypatch, f"test.out_dir={out}", f"test.avatars_root={avatars}")
    assert summary["outputs"]["glb"] == ["robot.glb"] and summary["outputs"]["livelink"] == ["robot_livelink.csv"]
    assert any("cat" in n for n in summary["export_notes"])  # no folder for cat: said so
    header, rows = read_csv(out / "robot.csv")
    gltf = GLTF2().load(str(out / "robot.glb"))
    sampler = gltf.animations[0].samplers[0]
    keys = _accessor(gltf, sampler.input, out).ravel()
    weights = _accessor(gltf, sampler.output, out).reshape(len(keys), 3)
    np.testing.assert_allclose(keys, rows[:, 1], atol=1e-3)  # the CSV rounds times to 0.1 ms
    np.testing.assert_allclose(weights, rows[:, [4, 3, 2]], atol=1e-4)  # targets in reverse control order
    codes, cols = read_livelink_csv(out / "robot_livelink.csv")
    assert len(codes) == T and codes[0] == "00:00:00:00.000" and codes[1] == "00:00:00:01.000"
    np.testing.assert_allclose(cols["JawOpen"], rows[:, 2], atol=1e-4)
    np.testing.assert_allclose(cols["EyeBlinkLeft"], rows[:, 4], atol=1e-4)
    assert (cols["MouthSmileLeft"] == 0).all()
    # the preview's robot panel is the mesh, rendered headless at the decoded rig (cat and alien: the renderer)
    from animate.exports import mesh_panels

    assert summary["preview_mesh"] == ["robot"] and not summary["preview_notes"]
    panels, _, release = mesh_panels(NAMES, CONTROLS, avatars, 32)
    preview = next(iter(VideoReader(out / "preview.mp4")))[:, 42 + 32 * (1 + NAMES.index("robot")):][:, :32]
    mesh_img = panels[NAMES.index("robot")](rows[0, 2:5])
    release()
    assert np.abs(preview.astype(float).mean((0, 1)) - mesh_img.mean((0, 1))).max() < 8  # H.264 is lossy


def test_mesh_panels_render_the_mesh_at_the_rig_in_its_target_order(tmp_path):
    """`mesh_panels` maps the avatar's controls onto the mesh's targets by name and renders with the
    avatar.yaml `render` settings at the preview size; an avatar whose mesh is missing gets a note."""
    from animate.exports import mesh_panels
    from avatar3d.mesh import BlendShapeMesh, write_glb
    from avatar3d.render import MeshRenderer, RenderSettings

    verts = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]], np.float32)
    targets = np.stack([np.tile([[0.3, 0, 0]], (4, 1)), np.tile([[0, 0.3, 0]], (4, 1))]).astype(np.float32)
    mesh = BlendShapeMesh(verts, np.array([[0, 1, 2], [1, 3, 2]], np.int32), targets, ["b", "a"], np.zeros(2, np.int32))
    for name, meta in (("m", "mesh: mesh.glb\nrender: {background: [1.0, 0.0, 0.0], yaw_deg: 10.0}\n"),
                       ("gone", "mesh: missing.glb\n")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "avatar.yaml").write_text(meta)
    write_glb(tmp_path / "m" / "mesh.glb", mesh)
    panels, notes, release = mesh_panels(["m", "gone"], [["a", "b"], ["a", "b"]], tmp_path, 48)
    assert list(panels) == [0] and len(notes) == 1 and "gone" in notes[0]
    ref = MeshRenderer(mesh, RenderSettings(size=48, background=(1.0, 0.0, 0.0), yaw_deg=10.0))
    img = panels[0](np.array([0.8, 0.1]))  # a = 0.8, b = 0.1
    assert img.shape == (48, 48, 3) and np.array_equal(img, ref.render(np.array([0.1, 0.8])))
    assert not np.array_equal(img, panels[0](np.array([0.1, 0.8])))
    release()
    ref.release()


def test_the_neural_renderer_draws_a_mesh_avatar_only_for_its_expression_distance(world, monkeypatch, tmp_path):
    """A mesh avatar's preview panel comes from its mesh: the neural renderer draws it only on the frames
    whose expression distance is measured (every 5th), the other avatars on every frame with a face."""
    rows_of = {name: 0 for name in NAMES}
    render = Renderer.render

    def counting(self, rig, name):
        rows_of[name] += len(rig)
        return render(self, rig, name)

    monkeypatch.setattr(Renderer, "render", counting)
    out, avatars = tmp_path / "out", mesh_avatar(tmp_path / "avatars")
    summary = run(world, monkeypatch, f"test.out_dir={out}", f"test.avatars_root={avatars}")
    _, rows = read_csv(out / "robot.csv")
    found = rows[:, -2] == 1  # face_found
    measured = found & (rows[:, 0] % 5 == 0)
    assert found.sum() == T - len(NO_FACE) and 0 < measured.sum() < found.sum()
    # (the stand-in checkpoint stores no references, so nothing is rendered when it is loaded)
    assert rows_of == {"robot": measured.sum(), "cat": found.sum(), "alien": found.sum()}
    # the measured frames' renders reach the expression distance as when every panel is the renderer's
    neural = run(world, monkeypatch, f"test.out_dir={tmp_path / 'neural'}", f"test.avatars_root={avatars}",
                 "test.preview_mesh=false")
    assert summary["expression_distance"] == neural["expression_distance"]
