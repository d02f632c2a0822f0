"""Turn a blend-shape mesh into an avatar folder for stages 3a/3b (rigs.csv, images, avatar.yaml).

    python scripts/mesh_to_avatar.py head.glb --out data/avatars/head --count 3000 --size 256
    python scripts/mesh_to_avatar.py ../shared/ict-facekit/FaceXModel --out outputs/ict/avatars/ict \
        --parts M_Face M_ScleraLeft M_IrisLeft M_ScleraRight M_IrisRight M_GumsTongue M_Teeth --size 128

MESH is a .glb/.gltf with morph targets (names in mesh.extras.targetNames) or a folder of OBJs of one
topology (a neutral OBJ + one OBJ per shape, ICT FaceKit's layout). Rendering is headless (EGL).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avatar3d.avatar import MeshAvatarSettings, write_mesh_avatar  # noqa: E402
from avatar3d.mesh import MeshFormatError, read_mesh  # noqa: E402
from avatar3d.render import RenderSettings  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mesh", help=".glb/.gltf file or folder of OBJs")
    p.add_argument("--out", required=True, help="the avatar folder to write (<avatars_root>/<name>)")
    p.add_argument("--count", type=int, default=2000, help="rendered (rig, image) pairs")
    p.add_argument("--size", type=int, default=256, help="image size in pixels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--parts", nargs="*", help="keep only these parts (OBJ materials / glTF primitives)")
    p.add_argument("--neutral", help="the neutral OBJ's file name in an OBJ folder")
    p.add_argument("--name", help="display name")
    p.add_argument("--yaw", type=float, default=0.0, help="head turn in degrees")
    p.add_argument("--pitch", type=float, default=0.0)
    p.add_argument("--eye-parts", nargs="*", help="parts whose vertices give the eye boxes (one box each)")
    p.add_argument("--mouth-parts", nargs="*", help="parts whose vertices give the mouth box")
    a = p.parse_args(argv)
    try:
        mesh = read_mesh(a.mesh, a.neutral)
        if a.parts:
            mesh = mesh.select(a.parts)
    except MeshFormatError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    settings = MeshAvatarSettings(count=a.count, seed=a.seed, display_name=a.name,
                                  render=RenderSettings(size=a.size, yaw_deg=a.yaw, pitch_deg=a.pitch),
                                  eye_parts=a.eye_parts, mouth_parts=a.mouth_parts)
    t = time.time()
    out = write_mesh_avatar(mesh, a.out, settings)
    print(f"{out}: {a.count} renders of {len(mesh.target_names)} shapes, {len(mesh.faces)} triangles, "
          f"{a.size} px in {time.time() - t:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
