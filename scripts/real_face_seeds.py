"""Ours against MediaPipe on a real clip, over stage-2 seeds: is a recipe's real-face result more than luck?

    python scripts/demo.py --actors-3d 0.5 --out outputs/demo3d   # a world, its MAE and renderer
    python scripts/real_face_seeds.py --demo outputs/demo3d --seeds 0,1,2,3 epochs=12

Reuses --demo's world, stage-1 MAE and stage-3a renderer (or --world / --mae / --renderer) and, per seed S,
runs the demo's own commands, each in OUT/seedS/: stage 2 (`train.py configs/demo/expression.yaml seed=S`
plus the overrides given here), stage 3b (`configs/demo/emb2rig.yaml`, its own seed unchanged), animate
on the clip, and `scripts/compare_mediapipe.py --avatar head`. Then OUT/seeds.md and seeds.json: per seed
the test-triplet accuracy, the correlations with MediaPipe (smile, blink, jawOpen, the mean over moving
controls), the jitter of each and the posed stills ordered right; over seeds the mean ± std, the 95%
Student-t interval of the mean and how many seeds meet each goal (smile and blink >= 0.5, mean >= 0.3,
jitter no higher than MediaPipe's), over every seed stored in OUT. A step whose output exists is not run
again, so an interrupted run resumes (delete a seed's folder to re-run it whole: a later step is not re-run
because an earlier one was); the settings are stored in seeds.json first and different ones are refused.
Needs mediapipe (requirements-mediapipe.txt). About 15 min per seed on 2 cores at 12 stage-2 epochs.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from animate.mediapipe_face import unavailable as mediapipe_missing  # noqa: E402
from scripts.claims_report import half_width95, stats  # noqa: E402
from scripts.demo import PY, REAL_VIDEO, Step, run, steps  # noqa: E402

GOALS = {"smile": 0.5, "blink": 0.5, "mean": 0.3}  # correlation with MediaPipe; jitter: ours <= MediaPipe's
COLUMNS = ["test_acc", "smile", "blink", "jaw", "mean", "jitter_ours", "jitter_mediapipe", "stills_ok"]


def seed_steps(run_dir: Path, seed: int, world: Path, mae: Path, renderer: Path, clip: Path, avatar: str,
               overrides: list[str]) -> list[Step]:
    """The four steps of one seed: the demo's stage 2 (with the seed), 3b and test mode, then the comparison
    on `avatar` (without the demo's comparison on the world, which needs its transfer evaluation)."""
    demo = {st.name: st for st in steps(run_dir, world, baselines=False, video=clip, mae=mae, renderer=renderer,
                                        stage2=[*overrides, f"seed={seed}"])}
    compare = Step("mediapipe", [PY, "scripts/compare_mediapipe.py", str(run_dir / "test_mode"), "--avatar", avatar,
                                 "--out", str(run_dir / "mediapipe")], run_dir / "mediapipe" / "comparison.json")
    return [demo["expression"], demo["emb2rig"], demo["test_mode"], compare]


def seed_figures(run_dir: Path) -> dict:
    """One seed's figures, read back from its stage-2 summary and its comparison."""
    test = json.loads((run_dir / "expression" / "summary.json").read_text()).get("test") or {}
    comp = json.loads((run_dir / "mediapipe" / "comparison.json").read_text())
    clip, head = comp["clip"], comp["clip"]["headline"]
    checks = comp.get("stills", {}).get("ours", {}).get("checks", [])
    num = lambda x: float("nan") if x is None else float(x)  # noqa: E731  (None: no control moved, e.g. flat curves)
    return {"test_acc": num(test.get("triplet_acc")),
            "smile": num(head["smile"]["corr"]), "blink": num(head["blink"]["corr"]), "jaw": num(head["jaw"]["corr"]),
            "mean": num(clip["mean_corr_moving"]),
            "jitter_ours": num(clip["jitter_a_mean"]), "jitter_mediapipe": num(clip["jitter_b_mean"]),
            "stills_ok": float(sum(c["ok"] for c in checks)) if checks else float("nan"),
            "stills_total": len(checks)}


def goals_met(f: dict) -> dict[str, bool]:
    """Per goal, whether this seed meets it (a missing figure, NaN, does not)."""
    met = {k: bool(f[k] >= v) for k, v in GOALS.items()}
    met["jitter"] = bool(f["jitter_ours"] <= f["jitter_mediapipe"])
    return met


def summary(per_seed: dict[str, dict]) -> dict:
    """Mean, std and 95% t-interval of each figure over the seeds, and how many seeds meet each goal."""
    out = {}
    for col in COLUMNS:
        v = [f[col] for f in per_seed.values()]
        m, s = stats(v)
        half = half_width95(v)
        out[col] = {"mean": m, "std": s, "ci95": [m - half, m + half] if len(v) > 1 else None}
    met = [goals_met(f) for f in per_seed.values()]
    out["goals_met"] = {g: sum(x[g] for x in met) for g in [*GOALS, "jitter"]}
    out["all_goals_met"] = sum(all(x.values()) for x in met)
    return out


def document(res: dict) -> str:
    s, n, cfg = res["summary"], len(res["per_seed"]), res["settings"]
    lines = [f"# Ours against MediaPipe over {n} stage-2 seeds", "",
             f"Clip `{cfg['clip']}`, avatar `{cfg['avatar']}`; world `{cfg['world']}`, "
             f"stage-2 overrides `{' '.join(cfg['overrides']) or '(none)'}`. Correlation with MediaPipe's "
             "scores of the same frames (smile, blink: L/R means); jitter: mean absolute second difference per second "
             "over the curve's range.", "",
             "| seed | test triplet acc. | smile | blink | jawOpen | mean over moving | jitter ours / MediaPipe "
             "| stills |",
             "|---|---|---|---|---|---|---|---|"]
    for seed, f in sorted(res["per_seed"].items(), key=lambda kv: int(kv[0])):
        lines.append(f"| {seed} | {f['test_acc']:.3f} | {f['smile']:.2f} | {f['blink']:.2f} | {f['jaw']:.2f} | "
                     f"{f['mean']:.2f} | {f['jitter_ours']:.2f} / {f['jitter_mediapipe']:.2f} | "
                     f"{f['stills_ok']:.0f} of {f['stills_total']} |")
    fmt = lambda c, d=2: f"{s[c]['mean']:.{d}f} ± {s[c]['std']:.{d}f}"  # noqa: E731
    lines.append(f"| mean ± std | {fmt('test_acc', 3)} | {fmt('smile')} | {fmt('blink')} | {fmt('jaw')} | "
                 f"{fmt('mean')} | {fmt('jitter_ours')} / {fmt('jitter_mediapipe')} | {fmt('stills_ok', 1)} |")
    ci = lambda c: f"{s[c]['ci95'][0]:+.2f} to {s[c]['ci95'][1]:+.2f}"  # noqa: E731
    g = s["goals_met"]
    lines += ["", f"95% interval of the mean: smile {ci('smile')}, blink {ci('blink')}, mean {ci('mean')}." if n > 1
              else "95% interval of the mean: needs two seeds or more.",
              f"Seeds meeting each goal: smile >= {GOALS['smile']} {g['smile']} of {n}, blink >= {GOALS['blink']} "
              f"{g['blink']} of {n}, mean >= {GOALS['mean']} {g['mean']} of {n}, jitter no higher than MediaPipe's "
              f"{g['jitter']} of {n}; all four {s['all_goals_met']} of {n}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demo", type=Path, default=Path("outputs/demo"), help="a scripts/demo.py output folder")
    ap.add_argument("--world", type=Path, help="default: DEMO/world")
    ap.add_argument("--mae", type=Path, help="default: DEMO/mae/checkpoint-last.pth")
    ap.add_argument("--renderer", type=Path, help="default: DEMO/rig2img/checkpoint-best.pth")
    ap.add_argument("--clip", type=Path, default=ROOT / ".cache" / "test_videos" / REAL_VIDEO)
    ap.add_argument("--avatar", default="head", help="an avatar with ARKit-named controls")
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated stage-2 seeds")
    ap.add_argument("--out", type=Path, help="default: DEMO/real_face_seeds")
    ap.add_argument("overrides", nargs="*", help="stage-2 key=value overrides, e.g. epochs=12")
    a = ap.parse_args()
    a.demo = a.demo if a.demo.is_absolute() else ROOT / a.demo  # as scripts/demo.py --out
    world = (a.world or a.demo / "world").resolve()
    mae = (a.mae or a.demo / "mae" / "checkpoint-last.pth").resolve()
    renderer = (a.renderer or a.demo / "rig2img" / "checkpoint-best.pth").resolve()
    out = (a.out or a.demo / "real_face_seeds").resolve()
    clip = a.clip.resolve()
    for path, what in [(world / "world.json", "the demo world"), (mae, "the stage-1 MAE checkpoint"),
                       (renderer, "the stage-3a renderer checkpoint"), (clip, "the clip")]:
        if not path.is_file():
            raise SystemExit(f"[seeds] {what} not found: {path} (run scripts/demo.py first, or pass its path; "
                             "the clip comes from scripts/fetch_test_videos.py)")
    if why := mediapipe_missing():
        raise SystemExit(f"[seeds] {why}")
    if bad := [o for o in a.overrides if "=" not in o]:
        raise SystemExit(f"[seeds] stage-2 overrides are key=value, got {bad} (seeds go in --seeds 0,1,2)")
    if any(o.split("=", 1)[0] in ("seed", "output_dir", "data_root", "pretrained") for o in a.overrides):
        raise SystemExit("[seeds] seed, output_dir, data_root and pretrained are set by this script; use --seeds, "
                         "--out, --world and --mae")
    settings = {"world": str(world), "mae": str(mae), "renderer": str(renderer), "clip": str(clip),
                "avatar": a.avatar, "overrides": a.overrides}
    res_file = out / "seeds.json"
    res = json.loads(res_file.read_text()) if res_file.is_file() else {"settings": settings, "per_seed": {}}
    if res["settings"] != settings:
        raise SystemExit(f"[seeds] {res_file} holds runs with other settings ({res['settings']}); give this one "
                         "its own --out")
    out.mkdir(parents=True, exist_ok=True)
    res_file.write_text(json.dumps(res, indent=1))  # settings first: a run stopped in its first seed holds a re-run
    for seed in [int(x) for x in a.seeds.split(",")]:
        run_dir = out / f"seed{seed}"
        for step in seed_steps(run_dir, seed, world, mae, renderer, clip, a.avatar, a.overrides):
            if not step.complete():
                run(step.cmd)
        res["per_seed"][str(seed)] = seed_figures(run_dir)
        res["summary"] = summary(res["per_seed"])
        res_file.write_text(json.dumps(res, indent=1))
        (out / "seeds.md").write_text(document(res))
    print((out / "seeds.md").read_text())


if __name__ == "__main__":
    main()
