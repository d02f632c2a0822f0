"""Shared test fixtures."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def quick_demo(out: Path, frames: Path) -> subprocess.CompletedProcess:
    """`scripts/demo.py` on the tiny world with minimal budgets (no baselines), test mode on `frames`."""
    cmd = [sys.executable, "scripts/demo.py", "--preset", "tiny", "--quick", "--no-baselines",
           "--out", str(out), "--video", str(frames)]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="session")
def quick_demo_run(tmp_path_factory) -> tuple[Path, Path]:
    """One quick demo run for the session: (its output folder, the test-mode frames folder)."""
    from data.demo_world import make_world

    out = tmp_path_factory.mktemp("demo")
    make_world(out / "world", "tiny", 0)  # the demo finds it complete and keeps it
    frames = sorted((out / "world" / "faces" / "test").iterdir())[0]  # a test actor's photos
    r = quick_demo(out, frames)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return out, frames


@pytest.fixture
def one_thread():
    """One intra-op thread: tiny models gain nothing from two, and the CPU cores are shared."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
