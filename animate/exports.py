"""Animation exports next to each avatar's CSV: a glTF with the morph-weight animation for a mesh avatar,
a Live Link Face CSV for an avatar with ARKit-named controls; and the mesh avatars' preview panels.

    outputs, notes = export_avatars(out_dir, names, controls, curves, times, fps, avatars_root)
    panels, notes, release = mesh_panels(names, controls, avatars_root, size)   # {avatar index: rig -> image}

The avatar folders (`<avatars_root>/<name>/avatar.yaml`) say which avatars are meshes (`mesh:`) and
how controls map to ARKit names (`arkit_names:`, else by name, `avatar3d.arkit`). Frames without a
face hold the last pose (the neutral before the first face), since an animation track has no gaps.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from avatar3d.arkit import arkit_map, to_arkit, write_livelink_csv
from avatar3d.mesh import BlendShapeMesh, MeshFormatError, read_mesh, write_glb
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


def _avatar_mesh(avatars_root: str | Path, name: str, controls: list[str]
                 ) -> tuple[dict, BlendShapeMesh | None, str | None]:
    """(avatar.yaml, its mesh or None, why there is no mesh or None) of avatar `name`."""
    meta_path = Path(avatars_root) / name / "avatar.yaml"
    if not meta_path.is_file():
        return {}, None, f"{name}: {meta_path} not found (set avatars_root), so only name-based exports"
    meta = read_yaml_mapping(meta_path, ValueError)
    if not meta.get("mesh"):
        return meta, None, None
    mesh_path = meta_path.parent / str(meta["mesh"])
    try:
        mesh = read_mesh(mesh_path)
    except MeshFormatError as e:
        return meta, None, f"{name}: {e}"
    missing = sorted(set(mesh.target_names) - set(controls))
    if missing:
        return meta, None, f"{name}: {mesh_path} has shapes {missing[:5]} that are not the avatar's controls"
    return meta, mesh, None


def mesh_panels(names: list[str], controls: list[list[str]], avatars_root: str | Path, size: int
                ) -> tuple[dict[int, Callable[[np.ndarray], np.ndarray]], list[str], Callable[[], None]]:
    """Preview panels of the mesh avatars: {avatar index: rig (n_controls,) -> (size, size, 3) uint8}, the
    mesh rendered headless with its avatar.yaml `render` settings (the framing its training pairs had) at
    `size`; notes on mesh avatars that cannot be shown so (no mesh file, no OpenGL); and a function that
    releases the renderers' OpenGL contexts (call it when the preview is written)."""
    from avatar3d.render import MeshRenderer, RenderSettings

    panels, notes, renderers = {}, [], []
    for a, (name, ctrl) in enumerate(zip(names, controls)):
        meta, mesh, why = _avatar_mesh(avatars_root, name, ctrl)
        if mesh is None:  # not a mesh avatar, or (with a reason) a mesh that cannot be read
            if why and meta.get("mesh"):
                notes.append(f"{why}; its preview shows the neural renderer")
            continue
        settings = {k: tuple(v) if isinstance(v, list) else v for k, v in (meta.get("render") or {}).items()}
        try:
            renderer = MeshRenderer(mesh, RenderSettings(**{**settings, "size": size}))
        except (RuntimeError, TypeError) as e:
            notes.append(f"{name}: the mesh cannot be rendered here ({e}); its preview shows the neural renderer")
            continue
        renderers.append(renderer)
        order = [ctrl.index(t) for t in mesh.target_names]
        panels[a] = lambda rig, r=renderer, o=order: r.render(np.asarray(rig, np.float32)[o])
    return panels, notes, lambda: [r.release() for r in renderers]


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
        meta, mesh, why = _avatar_mesh(avatars_root, name, ctrl)
        if why and not meta:
            notes.append(why)
        try:
            mapping = arkit_map(ctrl, meta.get("arkit_names"))
        except KeyError as e:
            notes.append(f"{name}: {Path(avatars_root) / name / 'avatar.yaml'}: {e.args[0]}; no Live Link CSV")
            mapping = {}
        if mapping:
            write_livelink_csv(out_dir / f"{name}_livelink.csv", times, to_arkit(rig, ctrl, mapping), fps)
            outputs["livelink"].append(f"{name}_livelink.csv")
        if meta.get("mesh"):
            if mesh is None:
                notes.append(f"{why}; no .glb")
                continue
            keep = _increasing(times)
            weights = rig[keep][:, [ctrl.index(t) for t in mesh.target_names]]
            write_glb(out_dir / f"{name}.glb", mesh, times[keep], weights, animation_name=name)
            outputs["glb"].append(f"{name}.glb")
    return outputs, notes
