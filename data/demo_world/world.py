"""`make_world`: writes the whole demo world (faces, triplets, avatars, eval ground truth)."""
import csv
import json
import multiprocessing as mp
import os
from pathlib import Path

import cv2
import numpy as np
import yaml

from avatar3d.mesh import write_glb
from data.face_track import FACE_BOXES_FILE

from .actors import render_actor, sample_identity, sample_pose
from .actors3d import ACTORS3D_VERSION, render_actor3d, sample_identity3d, sample_pose3d
from .avatar_art import render_avatar
from .avatars import AVATARS, MESH_BOXES, UNIT, au_to_rig, correspondence_json, sample_rig
from .contact_sheet import make_contact_sheet
from .expressions import AU_NAMES, EXPRESSION_CLASSES, sample_expression
from .head3d import build_head
from .triplets import URL_FMT, inject_errors, raw_rows, sample_triplets

PRESETS = {
    "tiny": dict(train_actors=16, val_actors=3, test_actors=3, faces_per_train=16, faces_per_test=16, face_size=64,
                 triplets_train=300, triplets_val=90, triplets_test=150, avatar_pairs=200,
                 avatar_trip_train=60, avatar_trip_val=20, avatar_trip_test=30, eval_train_actors=4),
    "small": dict(train_actors=200, val_actors=20, test_actors=20, faces_per_train=88, faces_per_test=64,
                  face_size=128, triplets_train=60000, triplets_val=1200, triplets_test=2400, avatar_pairs=4000,
                  avatar_trip_train=1500, avatar_trip_val=150, avatar_trip_test=300, eval_train_actors=20),
}
# The held-out actors are two disjoint sets: validation actors (faces/val, triplets/*val*, eval/val_actors.csv)
# choose weights, budgets and checkpoints; test actors (faces/test, triplets/*test*, eval/test_actors.csv)
# are scored once per reported figure. faces_per_test is the number of photos of each held-out actor.
SPLITS = ("train", "val", "test")
# bumped when the same preset and seed give different files (2: 128 px faces, 60k triplets; 3: adds the
# validation triplets triplets/val.csv + fec_val.csv, every version-2 file but world.json is unchanged;
# 4: adds the 3-D head avatar, which also changes the triplets that mix in avatar renders; 5: the held-out
# actors split into validation and test actors, each split with triplets of its own)
WORLD_VERSION = 5
K_IDENTITY, K_FACE, K_AVATAR, K_AVTRIP, K_TRIPLET, K_RAW, K_ACTOR3D = 1, 2, 3, 4, 5, 6, 7
AVATAR_NAMES = list(AVATARS)
_HEAD = {"robot": 0.92, "cat": 0.95, "alien": 0.95}  # head half-extent, model units
_ID_CACHE = {}


def _write_png(path: Path, rgb):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def _is_3d(seed: int, actor_idx: int, share: float) -> bool:
    """Whether an actor is drawn as a 3-D head (a share of the actors, chosen per actor)."""
    return share > 0 and np.random.default_rng([seed, K_ACTOR3D, actor_idx]).random() < share


def _face_task(t):
    """Render and write one actor face. t = (root, rel, seed, actor_idx, face_idx, size, is_3d)."""
    root, rel, seed, actor_idx, face_idx, size, is_3d = t
    key = (seed, actor_idx, is_3d)
    if key not in _ID_CACHE:
        _ID_CACHE[key] = (sample_identity3d if is_3d else sample_identity)(
            np.random.default_rng([seed, K_IDENTITY, actor_idx]))
    rng = np.random.default_rng([seed, K_FACE, face_idx])
    cls, au = sample_expression(rng)  # the same expression whichever way the actor is drawn
    au = np.round(au, 4)
    if is_3d:
        img, bbox = render_actor3d(_ID_CACHE[key], au, sample_pose3d(rng), size)
    else:
        img, bbox = render_actor(_ID_CACHE[key], au, sample_pose(rng), size)
    _write_png(Path(root) / rel, img)
    return cls, au, bbox


def _avatar_task(t):
    """Render one (rig, image) pair of an avatar. t = (root, rel, seed, avatar_idx, i, size)."""
    root, rel, seed, a, i, size = t
    _, rig = sample_rig(AVATAR_NAMES[a], np.random.default_rng([seed, K_AVATAR, a, i]))
    rig = np.round(rig, 4)
    _write_png(Path(root) / rel, render_avatar(AVATAR_NAMES[a], rig, size))
    return rig


def _avtrip_task(t):
    """Avatar render at the ground-truth rig of a sampled AU vector (for mixed triplets)."""
    root, split_idx, seed, i, size = t
    rng = np.random.default_rng([seed, K_AVTRIP, split_idx, i])
    name = AVATAR_NAMES[int(rng.integers(len(AVATAR_NAMES)))]
    cls, au = sample_expression(rng)
    au = np.round(au, 4)
    rel = f"triplets/avatar_images/{SPLITS[split_idx]}/{name}_{i:05d}.png"
    _write_png(Path(root) / rel, render_avatar(name, au_to_rig(name, au), size))
    x0, y0, x1, y1 = _avatar_face_box(name)
    return rel, cls, au, [x0, x1, y0, y1]  # FEC order: tl_col, br_col, tl_row, br_row


def _avatar_face_box(name: str) -> list[float]:
    """The avatar's head box (the renders are frontal with a fixed framing): [x0, y0, x1, y1]."""
    if name in MESH_BOXES:
        return MESH_BOXES[name][2]
    h = UNIT * _HEAD[name]
    return [float(v) for v in np.clip([0.5 - h, 0.5 - h, 0.5 + h, 0.5 + h], 0, 1)]


def _csv(path: Path, header, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        if header:
            w.writerow(header)
        w.writerows(rows)


def _counts(trips, is_av) -> dict:
    types = [t[3] for t in trips]
    out = {t: types.count(t) for t in sorted(set(types))}
    out["total"] = len(trips)
    out["with_avatar_images"] = int(sum(any(is_av[i] for i in t[:3]) for t in trips))
    return out


def _f4(v):
    return [f"{float(x):.4f}" for x in v]


def make_world(out_dir, preset: str = "tiny", seed: int = 0, image_size: int = 64, workers: int | None = None,
               face_size: int | None = None, actors_3d: float = 0.0) -> dict:
    """Generate the demo world into out_dir and return its summary (also written to world.json).

    Args: out_dir target folder, preset 'tiny' | 'small', seed, image_size (square side of the avatar
    renders, px), workers processes for rendering (default min(2, cpu_count)), face_size (side of the
    actor photos; default the preset's: 'small' draws them at 128 px so that a 64 px face crop is
    sharp, as a crop of a real photo is), actors_3d (the share of the actors, in every split, rendered
    as shaded 3-D heads by actors3d.py instead of drawn; 0 keeps the world as it was, byte for byte).
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    if not 0.0 <= actors_3d <= 1.0:
        raise ValueError(f"actors_3d is a share of the actors, in [0, 1]; got {actors_3d}")
    P, root = PRESETS[preset], Path(out_dir)
    face_size = face_size or P["face_size"]
    root.mkdir(parents=True, exist_ok=True)
    workers = workers or min(2, os.cpu_count() or 1)
    ntr, nva, nte = P["train_actors"], P["val_actors"], P["test_actors"]
    face_tasks, face_meta = [], []  # meta: (split, actor_idx, rel)
    actors3d = [a for a in range(ntr + nva + nte) if _is_3d(seed, a, actors_3d)]  # rendered as 3-D heads
    set3d = set(actors3d)
    fid = 0
    splits = (("train", range(ntr), P["faces_per_train"]), ("val", range(ntr, ntr + nva), P["faces_per_test"]),
              ("test", range(ntr + nva, ntr + nva + nte), P["faces_per_test"]))
    for split, actors, per in splits:
        for a in actors:
            for n in range(per):
                rel = f"faces/{split}/actor_{a:04d}/{n:03d}.png"
                face_tasks.append((str(root), rel, seed, a, fid, face_size, a in set3d))
                face_meta.append((split, a, rel))
                fid += 1
    av_tasks = [(str(root), f"avatars/{nm}/images/{i:05d}.png", seed, ai, i, image_size)
                for ai, nm in enumerate(AVATAR_NAMES) for i in range(P["avatar_pairs"])]
    at_tasks = [(str(root), si, seed, i, image_size) for si, split in enumerate(SPLITS)
                for i in range(P[f"avatar_trip_{split}"])]
    # spawn, not fork: a forked child of a process that already used OpenCV's thread pool can hang
    ctx = mp.get_context("spawn")
    with ctx.Pool(workers, initializer=cv2.setNumThreads, initargs=(1,)) as pool:
        faces = pool.map(_face_task, face_tasks, chunksize=64)
        rigs = pool.map(_avatar_task, av_tasks, chunksize=64)
        avtrip = pool.map(_avtrip_task, at_tasks, chunksize=32)

    # --- avatars: rigs.csv + avatar.yaml
    for ai, nm in enumerate(AVATAR_NAMES):
        s, n = AVATARS[nm], P["avatar_pairs"]
        _csv(root / f"avatars/{nm}/rigs.csv", ["image"] + s["controls"],
             [[f"images/{i:05d}.png"] + _f4(rigs[ai * n + i]) for i in range(n)])
        meta = dict(display_name=s["display_name"], controls=s["controls"], image_size=image_size,
                    eye_boxes=s["eye_boxes"], mouth_box=s["mouth_box"], face_box=_avatar_face_box(nm))
        if s["mesh"]:  # the 3-D head: its mesh beside it, for test mode's .glb export
            write_glb(root / f"avatars/{nm}/mesh.glb", build_head())
            meta["mesh"] = "mesh.glb"
        (root / f"avatars/{nm}/avatar.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))

    # --- face boxes of the actor faces (stage 3b and the embedding plot crop them as stage 2 does)
    for split in SPLITS:
        _csv(root / f"faces/{split}/{FACE_BOXES_FILE}", ["image", "x0", "y0", "x1", "y1"],
             [[Path(rel).relative_to(f"faces/{split}").as_posix()] + _f4(np.asarray(faces[k][2])[[0, 2, 1, 3]])
              for k, (sp, _, rel) in enumerate(face_meta) if sp == split])

    # --- eval ground truth (never read by training code)
    au_hdr = ["image", "class"] + AU_NAMES
    eval_train_actors = set(range(P["eval_train_actors"]))
    train_idx = [k for k, m in enumerate(face_meta) if m[0] == "train" and m[1] in eval_train_actors]
    for name, idx, gdir in (("test_actors", [k for k, m in enumerate(face_meta) if m[0] == "test"], "gt_rigs"),
                            ("val_actors", [k for k, m in enumerate(face_meta) if m[0] == "val"], "gt_rigs_val"),
                            ("train_actors", train_idx, "gt_rigs_train")):
        _csv(root / f"eval/{name}.csv", au_hdr,
             [[face_meta[k][2], EXPRESSION_CLASSES[faces[k][0]]] + _f4(faces[k][1]) for k in idx])
        for nm in AVATAR_NAMES:
            _csv(root / f"eval/{gdir}/{nm}.csv", ["image"] + AVATARS[nm]["controls"],
                 [[face_meta[k][2]] + _f4(au_to_rig(nm, faces[k][1])) for k in idx])
    (root / "eval/au_to_rig.json").write_text(json.dumps(correspondence_json(), indent=1, sort_keys=True))

    # --- triplets: pool per split = that split's faces + that split's avatar renders
    url_map, trip_counts, raw_report, ann_stats, trip_img_rows = {}, {}, {}, {}, {}
    for si, split in enumerate(SPLITS):
        fk = [k for k, m in enumerate(face_meta) if m[0] == split]
        ak = [k for k, t in enumerate(at_tasks) if t[1] == si]
        paths = [face_meta[k][2] for k in fk] + [avtrip[k][0] for k in ak]
        cls = np.array([faces[k][0] for k in fk] + [avtrip[k][1] for k in ak])
        au = np.stack([faces[k][1] for k in fk] + [avtrip[k][2] for k in ak])
        bbox = [faces[k][2] for k in fk] + [avtrip[k][3] for k in ak]
        is_av = np.array([False] * len(fk) + [True] * len(ak))
        trips = sample_triplets(np.random.default_rng([seed, K_TRIPLET, si]), cls, au, is_av,
                                P[f"triplets_{split}"], len(EXPRESSION_CLASSES))
        _csv(root / f"triplets/{split}.csv", ["anchor", "positive", "negative", "type"],
             [[paths[a], paths[p], paths[n], t] for a, p, n, t in trips])
        used = sorted({i for t in trips for i in t[:3]}, key=lambda i: paths[i])
        for i in used:
            url_map.setdefault(paths[i], URL_FMT.format(f"{len(url_map):06d}"))
            source = "avatar" if is_av[i] else "actor"
            trip_img_rows[paths[i]] = [paths[i], EXPRESSION_CLASSES[cls[i]], source] + _f4(au[i])
        rows, ann_stats[split] = raw_rows(np.random.default_rng([seed, K_RAW, si]), trips, paths, bbox, url_map)
        if split == "train":
            miss_url = URL_FMT.format("missing_000000")
            rows, rep = inject_errors(rows, miss_url)
            raw_report = {"file": "triplets/fec_train.csv", "rows_0_based": rep,
                          "missing_url": miss_url, "missing_path": "triplets/missing/missing_000000.png",
                          "note": "triplets/fec_val.csv, fec_test.csv and the simple CSVs are clean"}
        _csv(root / f"triplets/fec_{split}.csv", None, rows)
        trip_counts[split] = _counts(trips, is_av)
    url_rows = [[u, p] for p, u in url_map.items()] + [[raw_report["missing_url"], raw_report["missing_path"]]]
    _csv(root / "triplets/url_map.csv", ["url", "path"], url_rows)
    _csv(root / "eval/triplet_images.csv", ["image", "class", "source"] + AU_NAMES,
         [trip_img_rows[p] for p in sorted(trip_img_rows)])

    make_contact_sheet(root / "contact_sheet.png", seed, image_size)
    summary = dict(
        version=WORLD_VERSION, preset=preset, seed=seed, image_size=image_size, face_size=face_size, au_names=AU_NAMES,
        expression_classes=EXPRESSION_CLASSES,
        avatars=[dict(name=nm, display_name=AVATARS[nm]["display_name"], n_controls=len(AVATARS[nm]["controls"]),
                      controls=AVATARS[nm]["controls"], unmapped_controls=AVATARS[nm]["unmapped"])
                 for nm in AVATAR_NAMES],
        counts=dict(actors_train=ntr, actors_val=nva, actors_test=nte, faces_train=ntr * P["faces_per_train"],
                    faces_val=nva * P["faces_per_test"], faces_test=nte * P["faces_per_test"],
                    avatar_pairs={nm: P["avatar_pairs"] for nm in AVATAR_NAMES},
                    triplet_avatar_images={s: P[f"avatar_trip_{s}"] for s in SPLITS},
                    triplets=trip_counts, eval_train_actor_images=len(train_idx)),
        fec_raw_annotations=dict(annotators_per_row=6, **{f"{k}_rows": v for k, v in ann_stats.items()}),
        fec_raw_injected_errors=raw_report,
        paths=dict(faces_train="faces/train", faces_val="faces/val", faces_test="faces/test",
                   triplets_train="triplets/train.csv", triplets_test="triplets/test.csv",
                   fec_train="triplets/fec_train.csv", fec_test="triplets/fec_test.csv",
                   triplets_val="triplets/val.csv", fec_val="triplets/fec_val.csv",
                   url_map="triplets/url_map.csv", triplet_avatar_images="triplets/avatar_images",
                   avatars_root="avatars", eval_test_actors="eval/test_actors.csv", eval_gt_rigs="eval/gt_rigs",
                   eval_val_actors="eval/val_actors.csv", eval_gt_rigs_val="eval/gt_rigs_val",
                   eval_train_actors="eval/train_actors.csv", eval_gt_rigs_train="eval/gt_rigs_train",
                   eval_au_to_rig="eval/au_to_rig.json", eval_triplet_images="eval/triplet_images.csv",
                   contact_sheet="contact_sheet.png"),
        notes="Images are PNG (RGB). eval/ is ground truth for evaluation only; training never reads it. "
              "Raw FEC answers are majority-correct with 0-2 dissenting annotators and no ties.",
    )
    if actors_3d > 0:  # only then: a default world's world.json stays as it was
        summary.update(actors_3d=actors_3d, actors_3d_indices=actors3d, actors_3d_version=ACTORS3D_VERSION)
    (root / "world.json").write_text(json.dumps(summary, indent=1, sort_keys=True))
    return summary
