"""The one import direction (core -> models, data -> ... -> cli) is a contract `make lint`
checks; a reversed import breaks it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).parent / "lint-imports"


def lint(cwd: Path, python_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LINT), "--no-cache", "--no-logo", "--config", str(cwd / "pyproject.toml")],
        cwd=cwd, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(python_path)},
    )


def test_the_package_keeps_the_contract():
    done = lint(ROOT, ROOT / "src")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Contracts: 2 kept, 0 broken." in done.stdout


def test_a_reversed_import_breaks_the_contract(tmp_path):
    shutil.copytree(ROOT / "src" / "torchslim", tmp_path / "src" / "torchslim",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    errors = tmp_path / "src" / "torchslim" / "core" / "errors.py"
    errors.write_text(errors.read_text() + "\n\ndef _late():\n    from ..cli import main\n"
                      "    return main\n")
    scheduler = tmp_path / "src" / "torchslim" / "schedule" / "scheduler.py"
    scheduler.write_text(scheduler.read_text() + "\nfrom ..pruning import Masks  # noqa\n")
    done = lint(tmp_path, tmp_path / "src")
    assert done.returncode != 0
    assert "torchslim.core is not allowed to import torchslim.cli" in done.stdout
    assert "torchslim.schedule is not allowed to import torchslim.pruning" in done.stdout
    assert "Contracts: 0 kept, 2 broken." in done.stdout
