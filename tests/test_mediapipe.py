"""The MediaPipe baseline: blend-shape scores retargeted by name (a fake MediaPipe, no install needed),
animate's `driver=mediapipe` end to end with stand-in networks, the comparison figures on known curves,
and the real Face Landmarker on a posed still (skipped when mediapipe or its model is missing).
"""
from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import animate.main as animate_main
import animate.mediapipe_face as mpf
import animate.models as animate_models
from animate.compare import compare_curves, jitter, pearson, still_checks
from animate.config import Emb2RigCommand
from animate.detect import Item
from avatar3d.arkit import arkit_map
from common.checkpoint import save_checkpoint
from common.config import load_config, to_dict
from data.video import write_video
from emb2rig.config import Emb2RigConfig
from emb2rig.frozen import Frozen
from emb2rig.models import DecoderConfig, build_model
from tests.test_animate import DiscDetector, Encoder, Renderer, read_csv, synthetic_frames

NAMES = ["head", "robot"]
CONTROLS = [["eyeBlink_L", "eyeBlink_R", "jawOpen", "browInnerUp_L", "browInnerUp_R", "ear_wiggle"],
            ["robot_c0", "robot_c1", "robot_c2"]]


def test_retarget_by_name():
    scores = {"eyeBlinkLeft": 0.9, "eyeBlinkRight": 0.1, "jawOpen": 0.5, "browInnerUp": 0.3, "cheekPuff": 0.7}
    rig = mpf.retarget(scores, CONTROLS[0], arkit_map(CONTROLS[0]))
    np.testing.assert_allclose(rig, [0.9, 0.1, 0.5, 0.3, 0.3, 0.0])  # a sided pair shares browInnerUp; no name: 0
    assert mpf.retarget(scores, CONTROLS[1], arkit_map(CONTROLS[1])).tolist() == [0, 0, 0]


def test_arkit_maps_read_overrides_and_name_the_file(tmp_path):
    (tmp_path / "head").mkdir()
    (tmp_path / "head" / "avatar.yaml").write_text("arkit_names: {ear_wiggle: cheekPuff}\n")
    maps = mpf.arkit_maps(NAMES, CONTROLS, tmp_path)  # robot has no folder: by name only
    assert maps[0]["ear_wiggle"] == "cheekPuff" and maps[0]["eyeBlink_L"] == "eyeBlinkLeft" and maps[1] == {}
    (tmp_path / "head" / "avatar.yaml").write_text("arkit_names: {ear_wiggle: earWiggle}\n")
    with pytest.raises(ValueError, match="avatar.yaml.*not an ARKit blend-shape name"):
        mpf.arkit_maps(NAMES, CONTROLS, tmp_path)


class FakeLandmarker:
    """MediaPipe stand-in: jawOpen = the frame's mean red / 255, eyeBlinkLeft = t / 2; no face at the times `NONE`."""
    NONE = (0.5,)
    opened: list = []

    def __init__(self, model="", video=False):
        self.video, self.closed, self.times = video, False, []
        FakeLandmarker.opened.append(self)

    def scores(self, rgb, t=0.0):
        self.times.append(t)
        if any(abs(t - x) < 1e-6 for x in self.NONE):
            return None
        return {"jawOpen": float(rgb[..., 0].mean() / 255), "eyeBlinkLeft": t / 2, "browInnerUp": 0.25}

    def close(self):
        self.closed = True


def test_driver_retargets_holds_missed_frames_and_closes(monkeypatch):
    monkeypatch.setattr(mpf, "BlendshapeLandmarker", FakeLandmarker)
    driver = mpf.MediaPipeDriver(CONTROLS, [arkit_map(c) for c in CONTROLS], 7, video=True)
    frames = [np.full((4, 4, 3), v, np.uint8) for v in (51, 102, 204)]
    items = [Item(i, t, "detected", None, None, frame=f) for i, (t, f) in enumerate(zip((0.0, 0.5, 1.0), frames))]
    rigs = driver(items)  # (3 frames, 2 avatars, 7)
    assert rigs.shape == (3, 2, 7) and driver.missed == 1
    np.testing.assert_allclose(rigs[:, 0, 2], [0.2, 0.2, 0.8], atol=1e-6)  # frame 1: no face, frame 0's scores
    np.testing.assert_allclose(rigs[2, 0, :6], [0.5, 0.0, 0.8, 0.25, 0.25, 0.0], atol=1e-6)
    assert not rigs[:, 1].any() and not rigs[:, 0, 6:].any()  # robot: no ARKit names; padding stays 0
    driver.close()
    assert driver.landmarker.closed and driver.landmarker.video


def test_animate_with_the_mediapipe_driver(tmp_path, monkeypatch):
    """`test.driver=mediapipe`: the CSVs hold the (fake) scores by name, the frames without a face are kept,
    the other avatar stays at 0, the preview and Live Link export are written and the landmarker is closed."""
    torch.manual_seed(0)
    dcfg = DecoderConfig(width=32, blocks=2, id_dim=8, id_hidden=16)
    model = build_model(torch.randn(2, 24), [len(c) for c in CONTROLS], dcfg).eval()
    cfg = Emb2RigConfig(model=dcfg, encoder=str(tmp_path / "encoder.pth"), renderer=str(tmp_path / "renderer.pth"))
    for f in ("encoder.pth", "renderer.pth"):
        (tmp_path / f).write_bytes(b"")
    save_checkpoint({"model": model.state_dict(), "config": to_dict(cfg), "epoch": 0, "avatars": NAMES,
                     "controls": CONTROLS}, tmp_path / "ckpt.pth")
    write_video(tmp_path / "clip.mp4", synthetic_frames(), fps=24)
    frozen = Frozen(Encoder(), Renderer(NAMES, CONTROLS), NAMES, CONTROLS)
    monkeypatch.setattr(animate_models, "load_encoder", lambda path: copy.deepcopy(frozen.encoder))
    monkeypatch.setattr(animate_models, "load_renderer", lambda path: copy.deepcopy(frozen.renderer))
    monkeypatch.setattr(animate_main, "build_detector", lambda name, cfg: DiscDetector())
    monkeypatch.setattr(mpf, "BlendshapeLandmarker", FakeLandmarker)
    FakeLandmarker.opened = []
    args = ["configs/demo/emb2rig.yaml", "mode=test", f"pretrained={tmp_path / 'ckpt.pth'}", "device=cpu",
            "precision=fp32", f"test.input={tmp_path / 'clip.mp4'}", "test.batch_size=4", "test.preview_size=32",
            f"test.out_dir={tmp_path / 'out'}", "test.driver=mediapipe", "test.smoothing.enabled=false",
            f"test.avatars_root={tmp_path}"]
    s = animate_main.run(load_config(Emb2RigCommand, args).animate_config())
    assert s["driver"] == "mediapipe" and s["driver_missed_frames"] == 0 and s["faces_found"] == 22
    assert len(FakeLandmarker.opened) == 1 and FakeLandmarker.opened[0].closed and FakeLandmarker.opened[0].video
    header, rows = read_csv(tmp_path / "out" / "head.csv")
    found = rows[:, -2].astype(bool)
    t = rows[:, 1]
    np.testing.assert_allclose(rows[found, 2], t[found] / 2, atol=1e-4)  # eyeBlink_L <- eyeBlinkLeft = t / 2
    assert (rows[:, 3] == 0).all() and (rows[:, 7] == 0).all()  # eyeBlink_R: no score; ear_wiggle: no name
    np.testing.assert_allclose(rows[:, 5:7], 0.25, atol=1e-5)
    np.testing.assert_allclose(rows[~found, 2], rows[11, 2], atol=1e-5)  # no face: the last rig is kept
    assert (read_csv(tmp_path / "out" / "robot.csv")[1][:, 2:-2] == 0).all()
    assert (tmp_path / "out" / "preview.mp4").is_file() and s["outputs"]["livelink"] == ["head_livelink.csv"]


def test_pearson_and_jitter_on_known_curves():
    t = np.linspace(0, 2 * np.pi, 200)
    assert pearson(np.sin(t), 3 * np.sin(t) + 1) == pytest.approx(1.0)
    assert pearson(np.sin(t), -np.sin(t)) == pytest.approx(-1.0)
    assert pearson(np.sin(t), np.zeros_like(t)) == 0.0  # a flat curve agrees with nothing
    assert jitter(np.linspace(0, 1, 50), fps=25) == pytest.approx(0.0, abs=1e-9)  # a ramp has no 2nd difference
    alt = 0.5 + 0.1 * (-1.0) ** np.arange(100)  # +-0.1 every frame: |2nd diff| = 0.4, range 0.2
    assert jitter(alt, fps=25) == pytest.approx(0.4 * 25 / 0.2)
    assert jitter(np.full(10, 0.3), fps=25) is None


def test_compare_curves_moving_controls_headline_and_gaps():
    rng = np.random.default_rng(0)
    t = np.linspace(0, 4 * np.pi, 300)
    smile = 0.5 + 0.4 * np.sin(t)
    ours = {"mouthSmileLeft": smile, "mouthSmileRight": smile.copy(), "jawOpen": np.full(300, 0.1),
            "eyeBlinkLeft": 0.5 + 0.4 * np.cos(t), "eyeBlinkRight": 0.5 + 0.4 * np.cos(t)}
    theirs = {"mouthSmileLeft": smile + rng.normal(0, 0.05, 300), "mouthSmileRight": smile.copy(),
              "jawOpen": 0.1 + 0.005 * np.sin(t), "eyeBlinkLeft": 0.5 - 0.4 * np.cos(t),
              "eyeBlinkRight": 0.5 - 0.4 * np.cos(t), "cheekPuff": np.zeros(300)}
    ours["mouthSmileRight"][:10] = np.nan  # frames without a face are left out
    r = compare_curves(ours, theirs, fps=30.0, min_std=0.02)
    assert r["frames"] == 290 and r["frames_total"] == 300
    assert set(r["moving"]) == {"mouthSmileLeft", "mouthSmileRight", "eyeBlinkLeft", "eyeBlinkRight"}  # not jaw
    assert r["headline"]["smile"]["corr"] > 0.95 and r["headline"]["blink"]["corr"] == pytest.approx(-1.0)
    assert r["mean_corr_moving"] == pytest.approx(np.mean([r["per_control"][n]["corr"] for n in r["moving"]]))
    assert r["per_control"]["mouthSmileLeft"]["jitter_b"] > 5 * r["per_control"]["mouthSmileLeft"]["jitter_a"]
    assert "cheekPuff" not in r["per_control"]  # only names both sides have


def test_still_checks_expect_a_person_s_order():
    base = {"jawOpen": 0.1, "mouthSmileLeft": 0.1, "mouthSmileRight": 0.1}
    values = {s: dict(base) for s in ("surprise", "happy", "anger", "disgust")}
    values["surprise"]["jawOpen"] = 0.6
    values["anger"]["mouthSmileLeft"] = values["anger"]["mouthSmileRight"] = 0.3  # the wrong still smiles most
    checks = {c["check"]: c for c in still_checks(values)}
    assert set(checks) == {"jaw opens most on surprise", "smiles most on happy"}  # the others lack names
    assert checks["jaw opens most on surprise"]["ok"]
    assert not checks["smiles most on happy"]["ok"] and checks["smiles most on happy"]["top"] == "anger"
    flat = {s: dict(base) for s in values}
    assert [c["top"] for c in still_checks(flat)] == [None, None]


@pytest.mark.skipif(mpf.unavailable() is not None, reason=str(mpf.unavailable()))
def test_real_face_landmarker_on_posed_stills():
    from data.video import read_image
    from scripts.fetch_test_videos import DEFAULT_CACHE, STILLS

    paths = {k: DEFAULT_CACHE / f for k, f in STILLS.items()}
    if not all(p.is_file() for p in paths.values()):
        pytest.skip("stills not fetched; run `python scripts/fetch_test_videos.py` (needs PyPI)")
    with mpf.BlendshapeLandmarker(video=False) as lm:
        scores = {k: lm.scores(read_image(p)) for k, p in paths.items()}
        assert lm.scores(np.zeros((64, 64, 3), np.uint8)) is None  # no face
    assert all(len(s) == 51 and "tongueOut" not in s for s in scores.values())  # 52 less '_neutral' and tongueOut
    assert max(scores, key=lambda k: scores[k]["jawOpen"]) == "surprise"
    assert max(scores, key=lambda k: scores[k]["mouthSmileLeft"]) == "happy"
    with mpf.BlendshapeLandmarker(video=True) as lm:  # VIDEO mode takes times that do not increase
        assert lm.scores(read_image(paths["happy"]), 0.0) and lm.scores(read_image(paths["happy"]), 0.0)


def test_missing_model_names_the_fix(tmp_path):
    with pytest.raises(mpf.MediaPipeUnavailable, match="fetch_test_videos.py"):
        mpf.find_model(tmp_path / "none.task")


def test_compare_script_reads_our_csv_as_arkit_curves(tmp_path):
    from animate.outputs import write_curves
    from scripts.compare_mediapipe import read_arkit_csv

    curves = np.array([[0.2, 0.4, 0.9, 0.1], [0.3, 0.5, 0.8, 0.1], [0.3, 0.5, 0.8, 0.1]], np.float32)
    write_curves(tmp_path / "head.csv", ["mouthSmile_L", "mouthSmile_R", "jawOpen", "ear_wiggle"], curves,
                 np.arange(3) / 24, np.array([True, True, False]), np.ones(3))
    got = read_arkit_csv(tmp_path / "head.csv")
    assert set(got) == {"mouthSmileLeft", "mouthSmileRight", "jawOpen"}
    np.testing.assert_allclose(got["jawOpen"][:2], [0.9, 0.8], atol=1e-5)
    assert np.isnan(got["jawOpen"][2])  # no face in frame 2: left out of the figures


def test_side_by_side_cuts_input_and_the_avatar_from_both_previews(tmp_path):
    """Previews are input (80 px wide) | crop | one panel per avatar (48 px); the strip is input | ours | theirs."""
    from PIL import Image

    from scripts.compare_mediapipe import side_by_side

    colours = {"input": 30, "crop": 60, "robot": 250}
    for run, head in (("ours", 120), ("theirs", 200)):
        frame = np.concatenate([np.full((48, w, 3), colours.get(k, head), np.uint8)
                                for k, w in (("input", 80), ("crop", 48), ("head", 48), ("robot", 48))], 1)
        (tmp_path / run).mkdir()
        write_video(tmp_path / run / "preview.mp4", [frame] * 3, fps=10)
    summary = {"settings": {"preview_size": 48}, "avatars": ["head", "robot"]}
    side_by_side(tmp_path / "ours", tmp_path / "theirs", summary, "head", tmp_path)
    strip = np.asarray(Image.open(tmp_path / "side_by_side.png"))
    assert strip.shape == (3 * 48, 80 + 48 + 48, 3)
    below_labels = strip[30:44, :, 0].astype(int)
    for x, want in ((40, 30), (104, 120), (152, 200)):  # input, ours' head, MediaPipe's head
        assert abs(below_labels[:, x].mean() - want) < 12, (x, below_labels[:, x])


def test_driver_without_mediapipe_fails_before_the_models_load(tmp_path, monkeypatch):
    from animate.config import AnimateConfig

    write_video(tmp_path / "clip.mp4", synthetic_frames(), fps=24)
    monkeypatch.setattr(animate_main, "load_models", lambda *a, **k: pytest.fail("models loaded"))
    cfg = AnimateConfig(input=str(tmp_path / "clip.mp4"), pretrained="x.pth", driver="mediapipe",
                        mediapipe_model=str(tmp_path / "none.task"))
    with pytest.raises(mpf.MediaPipeUnavailable, match="driver=mediapipe: .*fetch_test_videos.py"):
        animate_main.run(cfg)


def test_real_face_seeds_runs_each_missing_step_once_and_sums_up_over_seeds(tmp_path, monkeypatch):
    import scripts.real_face_seeds as rfs
    demo, out = tmp_path / "demo", tmp_path / "out"
    for f in ["world/world.json", "mae/checkpoint-last.pth", "rig2img/checkpoint-best.pth", "clip.mp4"]:
        (demo / f).parent.mkdir(parents=True, exist_ok=True)
        (demo / f).write_text("{}")
    figures = {0: (0.8, 0.6, 0.7, 0.35, 0.4), 1: (0.7, 0.2, 0.5, 0.25, 0.7)}  # acc, smile, blink, mean, jitter
    ran = []

    def fake_run(cmd):  # a step "runs" by writing the file that marks it done
        ran.append(cmd)
        arg = lambda key: next(str(c).split("=", 1)[1] for c in cmd if str(c).startswith(key + "="))  # noqa: E731
        if cmd[1] == "train.py":
            acc = figures[int(arg("seed"))][0]
            write(Path(arg("output_dir")) / "summary.json", {"test": {"triplet_acc": acc}})
        elif cmd[1] == "train_emb2rig_multichar.py":
            write(Path(arg("output_dir")) / "summary.json", {})
        elif cmd[1] == "animate.py":
            write(Path(cmd[cmd.index("--out") + 1]) / "summary.json", {})
        else:
            target = Path(cmd[cmd.index("--out") + 1])
            _, smile, blink, mean, jitter = figures[int(target.parent.name.removeprefix("seed"))]
            head = {k: {"corr": v} for k, v in [("smile", smile), ("blink", blink), ("jaw", 0.0)]}
            write(target / "comparison.json", {
                "clip": {"headline": head, "mean_corr_moving": mean, "jitter_a_mean": jitter, "jitter_b_mean": 0.6},
                "stills": {"ours": {"checks": [{"ok": True}, {"ok": False}]}}})
        return 0.0

    def write(path, obj):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(obj))

    monkeypatch.setattr(rfs, "run", fake_run)
    monkeypatch.setattr(rfs, "mediapipe_missing", lambda: None)
    argv = ["real_face_seeds.py", "--demo", str(demo), "--clip", str(demo / "clip.mp4"), "--seeds", "0,1",
            "--out", str(out), "epochs=12"]
    monkeypatch.setattr(sys, "argv", argv)
    rfs.main()
    steps = ["train.py", "train_emb2rig_multichar.py", "animate.py", "scripts/compare_mediapipe.py"]
    assert [c[1] for c in ran] == steps * 2
    assert "epochs=12" in ran[0] and ran[0][-1] == "seed=0" and ran[4][-1] == "seed=1"
    assert f"encoder={out / 'seed1' / 'expression' / 'checkpoint-best.pth'}" in ran[5]  # its own seed's encoder
    s = json.loads((out / "seeds.json").read_text())["summary"]
    assert s["smile"]["mean"] == pytest.approx(0.4) and s["smile"]["std"] == pytest.approx(np.sqrt(0.08))
    half = 12.706 * np.sqrt(0.08) / np.sqrt(2)  # Student t, 1 degree of freedom
    assert s["smile"]["ci95"] == pytest.approx([0.4 - half, 0.4 + half])
    assert s["goals_met"] == {"smile": 1, "blink": 2, "mean": 1, "jitter": 1} and s["all_goals_met"] == 1
    assert "| 1 | 0.700 | 0.20 | 0.50 | 0.00 | 0.25 | 0.70 / 0.60 | 1 of 2 |" in (out / "seeds.md").read_text()

    assert f"data_root={demo / 'world'}" in ran[0] and f"pretrained={demo / 'mae' / 'checkpoint-last.pth'}" in ran[0]
    assert f"renderer={demo / 'rig2img' / 'checkpoint-best.pth'}" in ran[1] and str(demo / "clip.mp4") in ran[2]

    ran.clear()  # run again with seed 1 half done: only its missing steps run
    (out / "seed1" / "test_mode" / "summary.json").unlink()
    (out / "seed1" / "mediapipe" / "comparison.json").unlink()
    rfs.main()
    assert [c[1] for c in ran] == steps[2:] and str(out / "seed1" / "test_mode") in ran[0]
    ran.clear()
    rfs.main()
    assert ran == []
    monkeypatch.setattr(sys, "argv", argv[:-1] + ["epochs=6"])  # other settings are refused
    with pytest.raises(SystemExit, match="other settings"):
        rfs.main()

    class Stopped(Exception):
        pass

    def stops(cmd):  # a first run stopped in its first seed still holds a re-run to its settings
        raise Stopped
    monkeypatch.setattr(rfs, "run", stops)
    monkeypatch.setattr(sys, "argv", [*argv[:-3], "--out", str(tmp_path / "out2"), "epochs=12"])
    with pytest.raises(Stopped):
        rfs.main()
    monkeypatch.setattr(sys, "argv", [*argv[:-3], "--out", str(tmp_path / "out2"), "epochs=6"])
    with pytest.raises(SystemExit, match="other settings"):
        rfs.main()
    monkeypatch.setattr(sys, "argv", [*argv[:-1], "1"])  # a stray seed, not key=value
    with pytest.raises(SystemExit, match="key=value"):
        rfs.main()
