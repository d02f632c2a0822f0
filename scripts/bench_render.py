"""Headless renderer speed: images/s for the demo head and ICT FaceKit's face region, side by side.

    python scripts/bench_render.py                       # 256 px, 60 random poses each, MSAA 4x and off
    python scripts/bench_render.py --size 128 --ict ../shared/ict-facekit/FaceXModel

Prints, per mesh and anti-aliasing setting, images/s of `MeshRenderer.render` (blend shapes and
normals on the CPU, rasterised by OpenGL through EGL) and the share spent on the CPU side. The meshes
alternate within each round, so a drift in this machine's speed hits them alike.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from avatar3d.mesh import read_mesh  # noqa: E402
from avatar3d.render import MeshRenderer, RenderSettings, vertex_normals  # noqa: E402
from data.demo_world.head3d import build_head  # noqa: E402

ICT_FACE = ["M_Face"]  # the face region: 9,230 quads = ~18k triangles


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--poses", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ict", default=str(Path(__file__).resolve().parents[2] / "shared" / "ict-facekit" / "FaceXModel"))
    a = ap.parse_args()
    meshes = {"demo head": build_head()}
    if Path(a.ict).is_dir():
        meshes["ICT face region"] = read_mesh(a.ict).select(ICT_FACE)
    else:
        print(f"(ICT FaceKit not found at {a.ict}: demo head only)")
    rng = np.random.default_rng(0)
    renderers, poses = {}, {}
    for name, mesh in meshes.items():
        poses[name] = rng.random((a.poses, len(mesh.target_names))).astype(np.float32) * 0.6
        for samples in (4, 1):
            renderers[name, samples] = MeshRenderer(mesh, RenderSettings(size=a.size, samples=samples))
            renderers[name, samples].render(poses[name][0])  # warm up
    per = {k: [] for k in renderers}
    cpu = {name: [] for name in meshes}
    for _ in range(a.rounds):
        for (name, samples), r in renderers.items():
            t = time.perf_counter()
            for w in poses[name]:
                r.render(w)
            per[name, samples].append(a.poses / (time.perf_counter() - t))
        for name, mesh in meshes.items():
            t = time.perf_counter()
            for w in poses[name]:
                vertex_normals(mesh.deformed(w), mesh.faces)
            cpu[name].append((time.perf_counter() - t) / a.poses)
    print(f"{a.size} px, {a.poses} poses x {a.rounds} rounds (images/s per round)")
    for (name, samples), ips in per.items():
        mesh = meshes[name]
        share = np.mean(cpu[name]) * np.mean(ips)
        print(f"  {name:15s} {len(mesh.faces):6d} triangles, {len(mesh.target_names)} shapes, MSAA {samples}x: "
              + " / ".join(f"{v:.1f}" for v in ips) + f" images/s (blend shapes + normals: {100 * share:.0f}%)")
    for r in renderers.values():
        r.release()


if __name__ == "__main__":
    main()
