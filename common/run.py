"""Run folders: where a run keeps its resolved config, metrics, checkpoints and pictures."""
from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from common.config import save_config


def git_sha() -> str | None:
    """The checked-out commit of this repo, read-only (None outside a git checkout)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def prepare_run_dir(run_dir: str | Path, cfg: Any, is_main: bool = True) -> Path:
    """Create `run_dir`, write `config.yaml` (resolved) and `run.json` (git SHA, command, versions).

    Only rank 0 writes; every rank gets the path back.
    """
    run_dir = Path(run_dir)
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
        meta = {"git_sha": git_sha(), "argv": sys.argv, "python": platform.python_version(),
                "torch": torch.__version__, "cuda": torch.cuda.is_available()}
        (run_dir / "run.json").write_text(json.dumps(meta, indent=2))
    return run_dir


def write_json(path: str | Path, obj: Any) -> None:
    """Write JSON via a temp file + rename, so readers never see half a file."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=float))
    tmp.replace(path)
