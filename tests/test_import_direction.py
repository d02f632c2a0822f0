"""Imports run one way: common <- data <- mae_pretrain <- expression_finetune <- emb2rig <- animate, and
rig2img <- emb2rig; common <- avatar3d <- data. Nothing imports scripts/ or the entry points."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ALLOWED = {
    "common": set(),
    "avatar3d": {"common"},
    "data": {"common", "avatar3d"},
    "mae_pretrain": {"common", "data"},
    "expression_finetune": {"common", "data", "mae_pretrain"},
    "rig2img": {"common", "data"},
    "emb2rig": {"common", "data", "mae_pretrain", "expression_finetune", "rig2img"},
    "animate": {"common", "avatar3d", "data", "mae_pretrain", "expression_finetune", "rig2img", "emb2rig"},
}
FORBIDDEN_EVERYWHERE = {"scripts", "tests", "pretrain_mae", "train", "train_rig2img", "train_emb2rig_multichar"}
LOCAL = set(ALLOWED) | FORBIDDEN_EVERYWHERE


def imported_local_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names & LOCAL


def test_packages_import_only_lower_layers():
    bad = []
    for pkg, allowed in ALLOWED.items():
        for f in sorted((ROOT / pkg).rglob("*.py")):
            for name in imported_local_packages(f) - allowed - {pkg}:
                bad.append(f"{f.relative_to(ROOT)} imports {name}")
    assert not bad, "import direction violated:\n" + "\n".join(bad)


def test_nothing_imports_scripts_or_entry_points():
    bad = []
    for f in sorted(ROOT.rglob("*.py")):
        if ".venv" in f.parts or f.parts[len(ROOT.parts)] in ("tests", "scripts"):
            continue
        for name in imported_local_packages(f) & FORBIDDEN_EVERYWHERE:
            bad.append(f"{f.relative_to(ROOT)} imports {name}")
    assert not bad, "\n".join(bad)


def test_checker_catches_a_violation(tmp_path):
    f = tmp_path / "x.py"
    f.write_text("import emb2rig.model\nfrom common.config import cli\nfrom . import sibling\n")
    assert imported_local_packages(f) == {"emb2rig", "common"}
