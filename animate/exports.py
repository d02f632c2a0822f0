"""Animation exports next to each avatar's CSV: a glTF with the morph-weight animation for a mesh avatar,
a Live Link Face CSV for an avatar with ARKit-named controls.

    outputs, notes = export_avatars(out_dir, names, controls, curves, times, fps, avatars_root)

The avatar folders (`<avatars_root>/<name>/avatar.yaml`) say which avatars are meshes (`mesh:`) and
how controls map to ARKit names (`arkit_names:`, else by name, `avatar3d.arkit`). Frames without a
face hold the last pose (the neutral before the first face), since an animation track has no gaps.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from avatar3d.arkit import arkit_map, to_arkit, write_livelink_csv
from avatar3d.mesh import MeshFormatError, read_mesh, write_glb
from common.config import read_yaml_mapping


def hold_gaps(curves: np.ndarray) -> np.ndarray:
    """(N, C) curves with NaN rows (no face) filled by the last valid row, 0 before the first."""
    out = np.asarray(curves, np.float32).copy()
    last = np.zeros(out.shape[1], np.float32)
    for i, row in enumerate(out):
        if np.isnan(row).any():
            out[i] = np.where(np.isnan(row), last, row)
        last = out[i]
    return out


def _increasing(times: np.ndarray) -> np.ndarray:
    """Indices of the rows whose time is later than every earlier row's (a glTF animation needs that)."""
    keep, last = [], -np.inf
    for i, t in enumerate(times):
        if t > last:
            keep.append(i)
            last = t
    return np.asarray(keep, np.int64)


def export_avatars(out_dir: Path, names: list[str], controls: list[list[str]], curves: np.ndarray,
                   times: np.ndarray, fps: float, avatars_root: str | Path) -> tuple[dict, list[str]]:
    """Write `<avatar>.glb` / `<avatar>_livelink.csv` where they apply.

    Args:
        curves: (N, n_avatars, max_controls) rig curves, NaN where no face was found.
        times: (N,) seconds. fps: the nominal frame rate for Live Link's timecodes.
    Returns:
        {'glb': [...], 'livelink': [...]} file names, and notes on avatars that could not be exported.
    """
    outputs, notes = {"glb": [], "livelink": []}, []
    times = np.asarray(times, np.float64)
    for a, (name, ctrl) in enumerate(zip(names, controls)):
        rig = hold_gaps(curves[:, a, :len(ctrl)])
        meta_path = Path(avatars_root) / name / "avatar.yaml"
        meta = read_yaml_mapping(meta_path, ValueError) if meta_path.is_file() else {}
        if not meta_path.is_file():
            notes.append(f"{name}: {meta_path} not found (set avatars_root), so only name-based exports")
        try:
            mapping = arkit_map(ctrl, meta.get("arkit_names"))
        except KeyError as e:
            notes.append(f"{name}: {meta_path}: {e.args[0]}; no Live Link CSV")
            mapping = {}
        if mapping:
            write_livelink_csv(out_dir / f"{name}_livelink.csv", times, to_arkit(rig, ctrl, mapping), fps)
            outputs["livelink"].append(f"{name}_livelink.csv")
        if meta.get("mesh"):
            mesh_path = meta_path.parent / str(meta["mesh"])
            try:
                mesh = read_mesh(mesh_path)
            except MeshFormatError as e:
                notes.append(f"{name}: {e}; no .glb")
                continue
            missing = sorted(set(mesh.target_names) - set(ctrl))
            if missing:
                notes.append(f"{name}: {mesh_path} has shapes {missing[:5]} that are not the avatar's controls; "
                             "no .glb")
                continue
            keep = _increasing(times)
            weights = rig[keep][:, [ctrl.index(t) for t in mesh.target_names]]
            write_glb(out_dir / f"{name}.glb", mesh, times[keep], weights, animation_name=name)
            outputs["glb"].append(f"{name}.glb")
    return outputs, notes
