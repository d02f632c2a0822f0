"""The main job end to end on a tiny world with minimal budgets (`scripts/demo.py --quick`):
every stage loads the previous stage's checkpoint, the report has every key tools read, and a
re-run skips every finished step."""
from __future__ import annotations

import json

import pytest
from conftest import quick_demo

REPORT_KEYS = {
    "mae": ["heldout_loss_first", "heldout_loss_last"],
    "expression": ["triplet_acc", "per_type"],
    "rig2img": ["psnr"],
    "emb2rig": ["rig_mae", "baseline_mean_rig"],
    "test_mode": ["frames", "faces_found", "fps"],
    "minutes": ["total", "mae", "expression", "rig2img", "emb2rig", "test_mode"],
}


@pytest.fixture(scope="module")
def first_run(quick_demo_run):
    return quick_demo_run


def test_report_has_every_stage(first_run):
    out, frames = first_run
    rep = json.loads((out / "report.json").read_text())
    for section, keys in REPORT_KEYS.items():
        for k in keys:
            assert k in rep.get(section, {}), f"report.json lacks {section}.{k}"
    assert set(rep["rig2img"]["psnr"]) == {"robot", "cat", "alien", "head"}
    assert rep["test_mode"]["exports"] == {"glb": ["head.glb"], "livelink": ["head_livelink.csv"]}
    assert "## The 3-D avatar" in (out / "REPORT.md").read_text()
    assert rep["test_mode"]["frames"] == min(6, len(list(frames.iterdir())))
    assert (out / "REPORT.md").read_text().count("![") >= 4  # the pictures are linked


def test_rerun_skips_finished_steps(first_run):
    out, frames = first_run
    r = quick_demo(out, frames)
    assert r.returncode == 0, r.stderr[-3000:]
    ran = [line for line in r.stdout.splitlines() if line.startswith("$ ")]
    assert len(ran) == 1 and "make_report.py" in ran[0], ran
