"""Animate loads everything from the stage-3b checkpoint: real (tiny) stage-2 and stage-3a checkpoint files,
named by a decoder checkpoint trained with the paper config, run with no stage-3b config; another encoder
or renderer, swapped in by name or by file, is refused before any frame is read, naming both files."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import animate.main as animate_main
from animate.config import AnimateConfig, Emb2RigCommand
from animate.models import ModelMismatch, load_models
from common.checkpoint import save_checkpoint
from common.config import load_config, to_dict
from emb2rig.frozen import load_frozen, reference_features, reference_images
from emb2rig.models import build_model
from expression_finetune import build_expression_vit
from rig2img.models import GeneratorConfig, build_renderer, preset
from tests.test_animate import CONTROLS, NAMES, DiscDetector, synthetic_frames

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


def save_encoder(path: Path, seed: int, name: str = "mae_vit_tiny_patch8_64") -> Path:
    """A stage-2 checkpoint as `python train.py` writes it (model + the config keys load_encoder reads)."""
    torch.manual_seed(seed)
    vit = build_expression_vit(name)
    save_checkpoint({"model": vit.state_dict(), "config": {"model": name, "emb_dim": 16, "crop_margin": 0.3}}, path)
    return path


def save_renderer(path: Path, seed: int) -> Path:
    """A stage-3a checkpoint as `python train_rig2img.py` writes it (model + renderer meta)."""
    torch.manual_seed(seed)
    cfg = preset("tiny", image_size=32)
    net = build_renderer([len(c) for c in CONTROLS], cfg)
    meta = {"model": {k: getattr(cfg, k) for k in GeneratorConfig.__dataclass_fields__}, "avatars": NAMES,
            "controls": dict(zip(NAMES, CONTROLS))}
    save_checkpoint({"model": net.state_dict(), "renderer": meta}, path)
    return path


def build_chain(root: Path) -> Path:
    """Encoder and renderer files, and a stage-3b checkpoint trained (at init) with the paper config
    through them, holding its references as emb2rig.main stores them."""
    root.mkdir(parents=True, exist_ok=True)
    enc, ren = save_encoder(root / "enc.pth", 0), save_renderer(root / "ren.pth", 0)
    cfg = load_config(Emb2RigCommand, [str(ROOT / "configs/configs_emb2rig_multi.yaml"), f"encoder={enc}",
                                       f"renderer={ren}"])
    frozen = load_frozen(str(enc), str(ren), NAMES, CONTROLS, CPU, [None] * 3, cfg.crop_margin)
    rng = np.random.default_rng(0)
    rigs = [rng.uniform(0.2, 0.8, len(c)).astype(np.float32) for c in CONTROLS]
    with torch.no_grad():
        refs = reference_images(frozen, rigs, CPU)
        model = build_model(reference_features(frozen, refs), [len(c) for c in CONTROLS], cfg.model).eval()
    save_checkpoint({"model": model.state_dict(), "config": to_dict(cfg), "epoch": 0, "avatars": NAMES,
                     "controls": CONTROLS, "face_boxes": [None] * 3,
                     "references": {"rigs": [r.tolist() for r in rigs], "images": refs.half()}}, root / "dec.pth")
    from data.video import write_video
    write_video(root / "clip.mp4", synthetic_frames(), fps=24)
    return root


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    return build_chain(tmp_path_factory.mktemp("chain"))


def animate_cfg(root: Path, out: Path, *extra: str) -> AnimateConfig:
    return load_config(AnimateConfig, [str(ROOT / "configs/animate.yaml"), f"input={root / 'clip.mp4'}",
                                       f"pretrained={root / 'dec.pth'}", f"out_dir={out}", "device=cpu",
                                       "precision=fp32", "max_frames=8", "batch_size=4", "preview_size=32", *extra])


def test_checkpoint_alone_decides_models_margin_and_crop_size(chain, tmp_path, monkeypatch):
    monkeypatch.setattr(animate_main, "build_detector", lambda name, cfg: DiscDetector())
    s = animate_main.run(animate_cfg(chain, tmp_path / "out"))
    assert s["models_checked"] == "reference renders and features match" and s["faces_found"] == 8
    assert s["encoder"] == str(chain / "enc.pth") and s["renderer"] == str(chain / "ren.pth")
    assert s["settings"]["crop"]["size"] == 64 and s["settings"]["crop"]["margin"] == 0.3  # encoder's, checkpoint's
    assert (tmp_path / "out" / "robot.csv").is_file() and (tmp_path / "out" / "preview.mp4").is_file()


def test_animate_py_needs_no_config(chain, tmp_path):
    """The thin entry on the paper-config checkpoint: no --config, no encoder or renderer given."""
    out = tmp_path / "cli"
    r = subprocess.run([sys.executable, "animate.py", str(chain / "clip.mp4"), "--pretrained", str(chain / "dec.pth"),
                        "--out", str(out), "device=cpu", "max_frames=4", "preview=false", "detector.name=yunet"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "[animate] 4 frames" in r.stdout and (out / "summary.json").is_file() and (out / "alien.csv").is_file()


@pytest.mark.parametrize("swap", ["encoder_override", "encoder_file", "renderer_override", "renderer_file"])
def test_another_encoder_or_renderer_is_refused_before_any_frame(chain, tmp_path, monkeypatch, swap):
    def boom(*a, **k):
        raise AssertionError("got past the model check")

    monkeypatch.setattr(animate_main, "build_detector", boom)
    kind = swap.split("_")[0]
    other = (save_encoder if kind == "encoder" else save_renderer)(tmp_path / f"other_{kind}.pth", 1)
    root, extra = chain, [f"{kind}={other}"]
    if swap.endswith("_file"):  # the file the checkpoint names, overwritten with other weights
        root, extra = build_chain(tmp_path / "chain"), []
        shutil.copyfile(other, root / ("enc.pth" if kind == "encoder" else "ren.pth"))
    with pytest.raises(ModelMismatch) as e:
        animate_main.run(animate_cfg(root, tmp_path / "out", *extra))
    msg = str(e.value)
    given = str(root / "enc.pth") if swap == "encoder_file" else str(root / "ren.pth") if swap == "renderer_file" \
        else str(other)
    assert given in msg and str(root / "dec.pth") in msg and f"pass {kind}=" in msg
    assert ("features" if kind == "encoder" else "draws") in msg
    assert not (tmp_path / "out").exists()


def test_other_width_or_missing_files_get_their_message(chain, tmp_path):
    small = save_encoder(tmp_path / "small.pth", 0, "mae_vit_small_patch8_64")
    with pytest.raises(ModelMismatch, match=r"gives 384-d features; .* trained on 192-d"):
        load_models(str(chain / "dec.pth"), CPU, encoder=str(small))
    with pytest.raises(FileNotFoundError, match=r"the encoder given, '.*nowhere.pth', is not found"):
        load_models(str(chain / "dec.pth"), CPU, encoder=str(tmp_path / "nowhere.pth"))
    root = build_chain(tmp_path / "chain")
    (root / "ren.pth").rename(tmp_path / "moved_ren.pth")
    with pytest.raises(FileNotFoundError, match=r"the renderer that .*dec.pth was trained with, .* pass renderer="):
        load_models(str(root / "dec.pth"), CPU)
    m = load_models(str(root / "dec.pth"), CPU, renderer=str(tmp_path / "moved_ren.pth"))  # the moved file, given
    assert m.checked == "reference renders and features match"


def test_the_stage3b_script_names_its_own_override_keys(chain, tmp_path):
    """In `train_emb2rig_multichar.py ... mode=test` the overrides are test.encoder / test.renderer."""
    other = save_encoder(tmp_path / "other.pth", 1)
    r = subprocess.run([sys.executable, "train_emb2rig_multichar.py", "configs/configs_emb2rig_multi.yaml",
                        "mode=test", f"pretrained={chain / 'dec.pth'}", f"test.input={chain / 'clip.mp4'}",
                        f"test.encoder={other}", f"test.out_dir={tmp_path / 'out'}", "device=cpu"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and r.stderr.startswith("error: encoder ") and "pass test.encoder=" in r.stderr
    assert str(other) in r.stderr and str(chain / "enc.pth") in r.stderr  # the file given and the trained one
