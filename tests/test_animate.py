"""Animate (stage-3b test mode) with stand-in networks: a tiny checkpoint drives three avatars from a
synthetic video (fake detector) and writes per-avatar CSVs (frame,time_s,<controls>,face_found,faces), a
preview video and summary.json; a stretch without a face keeps the last rig and is marked; `mode: test`
without `pretrained` is refused before anything is built. Real networks loaded from checkpoints:
tests/test_animate_models.py; people, timestamps and inputs: tests/test_animate_inputs.py; mesh avatars:
tests/test_animate_mesh.py.
"""
from __future__ import annotations

import copy
import csv
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import animate.main as animate_main
import animate.models as animate_models
from animate.config import AnimateSettings, Emb2RigCommand
from animate.detect import detect_frames, prefetch
from animate.inference import prepare
from animate.outputs import StepTimer
from common.checkpoint import save_checkpoint
from common.config import cli, load_config, to_dict
from data.face_detect import Box
from data.face_track import crop_square, square_from_box
from data.video import VideoReader, write_video
from emb2rig.config import Emb2RigConfig
from emb2rig.frozen import Frozen
from emb2rig.models import DecoderConfig, build_model

NAMES = ["robot", "cat", "alien"]
CONTROLS = [[f"{n}_c{i}" for i in range(k)] for n, k in zip(NAMES, (3, 5, 7))]
T, NO_FACE = 30, range(12, 20)  # frames; frames without a face


class Encoder(nn.Module):
    """Stage-2 API stand-in: preprocess(img01) and forward -> (pooled (B, 24), unit embedding (B, 16))."""
    image_size, feature_dim = 32, 24

    def __init__(self):
        super().__init__()
        self.conv, self.fc, self.head = nn.Conv2d(3, 8, 4, stride=4), nn.Linear(8 * 64, 24), nn.Linear(24, 16)
        self.requires_grad_(False)

    def preprocess(self, x):
        return F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False) * 4 - 2

    def forward(self, x):
        f = self.fc(torch.tanh(self.conv(x)).flatten(1))
        return f, F.normalize(self.head(f.float()), dim=1)


class Renderer(nn.Module):
    """Stage-3a API stand-in: render(rig, name) -> (B, 3, 16, 16) in [0, 1]; refuses a wrong rig size."""
    image_size = 16

    def __init__(self, names: list[str] = NAMES, controls: list[list[str]] = CONTROLS):
        super().__init__()
        self.avatar_names, self.controls = names, dict(zip(names, controls))
        self.nets = nn.ModuleDict({n: nn.Linear(len(c), 3 * 16 * 16) for n, c in self.controls.items()})
        self.requires_grad_(False)

    def render(self, rig, name):
        assert rig.shape[1] == len(self.controls[name])
        return torch.sigmoid(4 * self.nets[name](rig - 0.5)).view(-1, 3, 16, 16)


class DiscDetector:
    """Fake face detector: the box of the bright red disc that the synthetic video draws."""
    name = "fake"

    def detect(self, rgb):
        ys, xs = np.nonzero((rgb[..., 0] > 180) & (rgb[..., 1] < 120))
        if len(xs) < 30:
            return []
        return [Box(float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1), 0.9)]


def synthetic_frames():
    """(96, 128, 3) frames: a red disc ('face') moving right and changing size, absent in NO_FACE."""
    yy, xx = np.mgrid[:96, :128]
    for i in range(T):
        f = np.full((96, 128, 3), 60, np.uint8)
        f[..., 2] = 40 + 4 * i  # the background drifts too
        if i not in NO_FACE:
            r, cx = 14 + (i % 7), 30 + 2 * i
            f[(yy - 48) ** 2 + (xx - cx) ** 2 < r * r] = (230, 60, 200 - 5 * i)
        yield f


def save_decoder(path, model, dcfg, root):
    """A stage-3b checkpoint as emb2rig.main saves it (without stored references: checked for shapes only)."""
    cfg = Emb2RigConfig(model=dcfg, encoder=str(root / "encoder.pth"), renderer=str(root / "renderer.pth"))
    save_checkpoint({"model": model.state_dict(), "config": to_dict(cfg), "epoch": 0, "avatars": NAMES,
                     "controls": CONTROLS}, path)


def make_world(tmp_path_factory):
    """A stage-3b checkpoint in the format main.py saves, plus the frozen stand-ins and a video."""
    root = tmp_path_factory.mktemp("test_mode")
    torch.manual_seed(0)
    dcfg = DecoderConfig(width=32, blocks=2, id_dim=8, id_hidden=16)
    model = build_model(torch.randn(3, 24), [3, 5, 7], dcfg).eval()
    (root / "encoder.pth").write_bytes(b"")  # the stand-ins come from the patched load_frozen
    (root / "renderer.pth").write_bytes(b"")
    save_decoder(root / "checkpoint-best.pth", model, dcfg, root)
    write_video(root / "clip.mp4", synthetic_frames(), fps=24)
    frozen = Frozen(Encoder(), Renderer(), NAMES, CONTROLS)
    return root, model, frozen


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory)


def run(world, monkeypatch, *overrides, as_is=False):
    """`train_emb2rig_multichar.py configs/demo/emb2rig.yaml mode=test ...` with the stand-in networks,
    loaded afresh (copies) for each run, or `as_is` (then the test can inspect what animate did to them)."""
    root, _, frozen = world
    load = (lambda net: net) if as_is else copy.deepcopy
    monkeypatch.setattr(animate_models, "load_encoder", lambda path: load(frozen.encoder))
    monkeypatch.setattr(animate_models, "load_renderer", lambda path: load(frozen.renderer))
    monkeypatch.setattr(animate_main, "build_detector", lambda name, cfg: DiscDetector())
    args = ["configs/demo/emb2rig.yaml", "mode=test", f"pretrained={root / 'checkpoint-best.pth'}", "device=cpu",
            "precision=fp32", f"test.input={root / 'clip.mp4'}", "test.batch_size=4", "test.preview_size=32",
            "test.expression_distance_every=5", *overrides]
    return animate_main.run(load_config(Emb2RigCommand, args).animate_config())


def read_csv(path):
    with open(path) as f:
        rows = list(csv.reader(f))
    return rows[0], np.array(rows[1:], dtype=float)


def test_video_writes_curves_preview_and_summary(world, monkeypatch, tmp_path):
    out = tmp_path / "out"
    summary = run(world, monkeypatch, f"test.out_dir={out}", "test.prefetch=8")  # decode + detect in a thread
    saved = json.loads((out / "summary.json").read_text())
    assert saved["prefetch"] == 8 and run(world, monkeypatch, f"test.out_dir={out}_cpu")["prefetch"] == 0  # auto
    assert saved["frames"] == summary["frames"] == T and saved["kind"] == "video" and saved["smoothed"]
    assert saved["faces_found"] == T - len(NO_FACE) and saved["missing_frames"] == list(NO_FACE)
    assert saved["frames_decoded"] == saved["frames_expected"] == T and not saved["truncated"]
    assert saved["frames_with_several_faces"] == 0 and saved["tracks"] == 2  # the disc comes back after 12-19
    assert saved["models_checked"].startswith("shapes only") and saved["encoder"].endswith("encoder.pth")
    assert saved["fps"] > 0 and set(saved["seconds_per_step"]) >= {"decode", "detect", "encode", "render"}
    assert set(saved["expression_distance"]) == set(NAMES)
    assert all(0 <= d <= 2 for d in saved["expression_distance"].values())
    assert saved["expression_distance_frames"] == len([i for i in range(0, T, 5) if i not in NO_FACE])
    for name, ctrl in zip(NAMES, CONTROLS):
        header, rows = read_csv(out / f"{name}.csv")
        assert header == ["frame", "time_s", *ctrl, "face_found", "faces"]
        assert rows.shape == (T, len(ctrl) + 4)
        np.testing.assert_allclose(rows[:, 1], np.arange(T) / 24, atol=1e-3)
        found, faces = rows[:, -2].astype(bool), rows[:, -1]
        assert not found[list(NO_FACE)].any() and found.sum() == T - len(NO_FACE)
        assert (faces == found).all()  # one disc: one face where it is, none elsewhere
        curves = rows[:, 2:-2]
        assert ((curves >= 0) & (curves <= 1)).all()
        for i in NO_FACE:  # no face: the last rig is kept
            np.testing.assert_array_equal(curves[i], curves[NO_FACE[0] - 1])
        assert np.abs(np.diff(curves[:NO_FACE[0]], axis=0)).max() > 1e-4  # the rig follows the face
    reader = VideoReader(out / "preview.mp4")
    frames = list(reader)
    assert len(frames) == T and abs(reader.fps - 24) < 0.1
    assert frames[0].shape == (32, 42 + 32 + 3 * 32, 3)  # input (4:3 at 32 px high) | crop | three avatars


def test_first_rig_is_the_decoded_crop(world, monkeypatch, tmp_path):
    """Frame 0 (the smoothing filter passes its first sample) equals decoder(encoder(crop of frame 0))."""
    root, model, frozen = world
    run(world, monkeypatch, f"test.out_dir={tmp_path}", "test.preview=false", "test.max_frames=6")
    assert not (tmp_path / "preview.mp4").exists()
    rgb = next(iter(VideoReader(root / "clip.mp4")))
    crop = crop_square(rgb, square_from_box(DiscDetector().detect(rgb)[0], 0.3), 32)
    with torch.no_grad():
        feat = frozen.encode(torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 255)[0]
        want = model(feat.repeat(3, 1), torch.arange(3))  # (3, 7)
    for a, (name, ctrl) in enumerate(zip(NAMES, CONTROLS)):
        _, rows = read_csv(tmp_path / f"{name}.csv")
        assert rows.shape[0] == 6
        np.testing.assert_allclose(rows[0, 2:-2], want[a, :len(ctrl)].numpy(), atol=2e-5)


@pytest.mark.skipif(not torch.ops.mkldnn._is_mkldnn_bf16_supported(), reason="no native bf16 on this CPU")
def test_bf16_stores_the_frozen_weights_in_bf16_and_follows_fp32(world, monkeypatch, tmp_path):
    root, model, frozen = world
    ref = run(world, monkeypatch, f"test.out_dir={tmp_path / 'fp32'}", "test.preview=false")
    cast = Frozen(copy.deepcopy(frozen.encoder), copy.deepcopy(frozen.renderer), NAMES, CONTROLS)
    s = run((root, model, cast), monkeypatch, f"test.out_dir={tmp_path / 'bf16'}", "precision=bf16", as_is=True)
    assert s["precision"] == "bf16" and s["faces_found"] == ref["faces_found"]
    assert all(p.dtype == torch.bfloat16 for p in [*cast.renderer.parameters(), *cast.encoder.fc.parameters()])
    assert all(p.dtype == torch.float32 for p in cast.encoder.head.parameters())  # the embedding head stays
    for name in NAMES:
        _, a = read_csv(tmp_path / "fp32" / f"{name}.csv")
        _, b = read_csv(tmp_path / "bf16" / f"{name}.csv")
        np.testing.assert_allclose(b, a, atol=0.02)  # the same curves to bf16 rounding
        assert abs(s["expression_distance"][name] - ref["expression_distance"][name]) < 0.02
    with pytest.raises(ValueError, match="already prepared for bf16 inference; load them again"):
        prepare(Frozen(cast.encoder, cast.renderer, NAMES, CONTROLS), "fp32")  # the networks carry the mark


def test_int8_encoder_drives_test_mode_close_to_fp32(world, monkeypatch, tmp_path):
    """A tiny real ExpressionEncoder, dynamic int8 (`test.quantize=int8`) against fp32, same weights."""
    from expression_finetune import ExpressionEncoder, build_expression_vit

    root, _, frozen = world
    torch.manual_seed(0)
    encoder = ExpressionEncoder(build_expression_vit("mae_vit_tiny_patch8_64"))
    dcfg = DecoderConfig(width=32, blocks=2, id_dim=8, id_hidden=16)
    model = build_model(torch.randn(3, encoder.feature_dim), [3, 5, 7], dcfg).eval()
    save_decoder(tmp_path / "decoder.pth", model, dcfg, root)
    out = {}
    for q in ("none", "int8"):
        net = Frozen(copy.deepcopy(encoder), copy.deepcopy(frozen.renderer), NAMES, CONTROLS)
        out[q] = run((root, model, net), monkeypatch, f"pretrained={tmp_path / 'decoder.pth'}", "test.preview=false",
                     f"test.out_dir={tmp_path / q}", f"test.quantize={q}", as_is=True)
        quantized = type(net.encoder.model.blocks[0].attn.qkv).__module__.startswith("torch.ao.nn.quantized")
        assert quantized == (q == "int8")
    assert out["int8"]["faces_found"] == out["none"]["faces_found"] == T - len(NO_FACE)
    for name in NAMES:
        _, a = read_csv(tmp_path / "none" / f"{name}.csv")
        _, b = read_csv(tmp_path / "int8" / f"{name}.csv")
        np.testing.assert_allclose(b, a, atol=0.02)
        assert not np.array_equal(b, a)  # int8 really ran
        assert abs(out["int8"]["expression_distance"][name] - out["none"]["expression_distance"][name]) < 0.05


def test_int8_and_inference_settings_are_checked(world, monkeypatch, tmp_path):
    root, model, frozen = world
    plain = Frozen(copy.deepcopy(frozen.encoder), copy.deepcopy(frozen.renderer), NAMES, CONTROLS)
    with pytest.raises(ValueError, match=r"\(Encoder\) has no int8 path; set quantize=none"):
        prepare(plain, "fp32", "int8")
    assert not hasattr(plain.encoder, "animate_prepared_for")  # refused before anything was changed
    assert all(p.dtype == torch.float32 for p in plain.encoder.parameters())
    with pytest.raises(ValueError, match="'quantize' must be one of"):
        load_config(Emb2RigCommand, ["configs/demo/emb2rig.yaml", "test.quantize=fp8"])


def test_smoothing_is_configurable_and_images_are_not_smoothed(world, monkeypatch, tmp_path):
    a = run(world, monkeypatch, f"test.out_dir={tmp_path / 'a'}", "test.preview=false")
    b = run(world, monkeypatch, f"test.out_dir={tmp_path / 'b'}", "test.preview=false", "test.smoothing.enabled=false")
    _, smooth = read_csv(tmp_path / "a" / "alien.csv")
    _, raw = read_csv(tmp_path / "b" / "alien.csv")
    assert a["smoothed"] and not b["smoothed"]
    assert np.abs(np.diff(smooth[:12, 2:-2], axis=0)).sum() < np.abs(np.diff(raw[:12, 2:-2], axis=0)).sum()
    np.testing.assert_allclose(smooth[20, 2:-2], raw[20, 2:-2], atol=2e-5)  # the filter restarts after the gap
    folder = tmp_path / "images"
    folder.mkdir()
    for i, f in enumerate(synthetic_frames()):
        if i % 6 == 0:
            (folder / f"{i:03d}.png").write_bytes(__import__("cv2").imencode(".png", f[..., ::-1])[1].tobytes())
    (folder / "broken.png").write_text("not an image")
    s = run(world, monkeypatch, f"test.input={folder}", f"test.out_dir={tmp_path / 'c'}")
    assert s["kind"] == "images" and not s["smoothed"] and s["frames"] == 5
    assert s["images"] == ["000.png", "006.png", "012.png", "018.png", "024.png"]
    assert s["missing_frames"] == [2, 3]  # 012 and 018 have no face
    assert len(s["skipped"]) == 1 and s["skipped"][0].startswith("broken.png: unreadable")
    assert (tmp_path / "c" / "preview.mp4").is_file()


def test_test_mode_without_pretrained_is_refused_before_anything_is_built(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("built something")

    for name in ("load_models", "build_detector", "open_source"):
        monkeypatch.setattr(animate_main, name, boom)
    with pytest.raises(SystemExit) as e:
        cli(Emb2RigCommand, argv=["configs/demo/emb2rig.yaml", "mode=test", "test.input=clip.mp4"])
    assert e.value.code == 2
    cfg = load_config(Emb2RigCommand, ["configs/demo/emb2rig.yaml", "mode=test", "pretrained=x.pth"])
    with pytest.raises(ValueError, match="test.input"):  # no input: refused before loading anything
        cfg.animate_config()


def test_video_frames_are_detected_near_the_track_first():
    def run(window):
        shapes = []

        class Recording(DiscDetector):
            def detect(self, rgb):
                shapes.append(rgb.shape[:2])
                return super().detect(rgb)

        cfg = AnimateSettings(detect_window=window, detect_window_side=48, count_faces_every=0)  # max_missing 5
        timed = ((i / 24, f) for i, f in enumerate(synthetic_frames()))
        items = list(detect_frames(timed, Recording(), cfg, 24, True, StepTimer(torch.device("cpu"))))
        assert [it.status for it in items].count("detected") == T - len(NO_FACE)
        return shapes, [it.crop.astype(int) for it in items if it.crop is not None]

    shapes, whole = run(0.0)
    assert shapes == [(96, 128)] * T
    shapes, near = run(2.0)
    windows = [s for s in shapes if s != (96, 128)]
    # whole frame: frame 0; 12-17 after an empty window (the held track ends after 5 misses);
    # 18-20 (no track). Window: 1-11, 12-17, 21-29.
    assert len(shapes) - len(windows) == 1 + 6 + 3 and len(windows) == 11 + 6 + 9
    assert max(max(s) for s in windows) <= 48  # the part of the window in the frame, at <= 48 px
    assert max(np.abs(a - b).mean() for a, b in zip(near, whole)) < 6  # the same crops (wrong offsets: 20+)


def test_prefetch_keeps_order_and_raises_errors_from_its_thread():
    assert list(prefetch(iter(range(50)), 4)) == list(range(50)) == list(prefetch(iter(range(50)), 0))

    def broken():
        yield 1
        raise OSError("decoder died")

    with pytest.raises(OSError, match="decoder died"):
        list(prefetch(broken(), 2))
    early = prefetch(iter(range(1000)), 2)
    assert next(early) == 0
    early.close()  # stopping early stops the thread


def test_a_face_the_window_sees_keeps_the_track_when_the_whole_frame_misses_it():
    """Whole-frame searches (every `count_faces_every`-th frame, and after a miss) run at a lower scale and
    may miss a face the window around the track finds: the tracker keeps the window's face."""
    class WindowOnly(DiscDetector):
        def __init__(self):
            self.calls = 0

        def detect(self, rgb):
            self.calls += 1
            return super().detect(rgb) if rgb.shape[:2] != (96, 128) or self.calls == 1 else []

    cfg = AnimateSettings(detect_window=2.0, detect_window_side=48, count_faces_every=4)
    timed = ((i / 24, f) for i, f in enumerate(synthetic_frames()))
    items = list(detect_frames(timed, WindowOnly(), cfg, 24, True, StepTimer(torch.device("cpu"))))
    status = [it.status for it in items[:NO_FACE[0]]]
    assert status == ["detected"] * NO_FACE[0]  # before: lost at frame 4 and never found again


def test_preview_of_a_container_that_reports_1000_fps_stays_short(world, monkeypatch, tmp_path):
    """A variable-rate mkv reports 1000 fps: the preview is written at 60 fps, on the clip's own timeline."""
    from tests.video_clips import make_vfr_clip

    frames = list(synthetic_frames())[:8]
    times = [0, 0.05, 0.1, 0.3, 0.35, 0.6, 0.65, 1.0]
    clip = make_vfr_clip(tmp_path / "vfr.mkv", frames, times)
    assert VideoReader(clip).fps > 100  # what OpenCV reports for it
    s = run(world, monkeypatch, f"test.input={clip}", f"test.out_dir={tmp_path / 'out'}")
    n = len(list(VideoReader(tmp_path / "out" / "preview.mp4")))
    assert s["frames"] == 8 and abs(n - 60 * 1.0) <= 2
