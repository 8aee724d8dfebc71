"""The wheel carries what an installed torchslim needs: the recipes its demo and ``--recipe NAME``
read (through importlib.resources, from any directory) and the ``py.typed`` marker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_wheel_runs_a_shipped_recipe_from_another_directory(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         str(ROOT), "-w", str(tmp_path / "dist")],
        check=True, capture_output=True, timeout=300,
    )
    wheel = next((tmp_path / "dist").glob("torchslim-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert {"torchslim/py.typed", "torchslim/recipes/demo_agp.yaml",
            "torchslim/recipes/demo_filters.yaml"} <= set(names)
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = subprocess.run(
        [sys.executable, "-c",
         "import sys, torchslim; from torchslim.cli import main; print(torchslim.__file__); "
         "sys.exit(main(sys.argv[1:]))",
         "compress", "--recipe", "demo_filters", "--model", "demo_cnn", "--data", "digits",
         "--epochs", "1", "--limit", "256", "--batch-size", "64", "--repeats", "1",
         "--out", "run", "--quiet", "--json"],
        cwd=elsewhere, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith(str(site))  # the unpacked wheel, not the checkout
    assert json.loads(lines[-1])["macs"] < 1_000_000
