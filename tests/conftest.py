import os
from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def shared_dir():
    """../shared beside the checkout (real CIFAR-10 JPEGs and pretrained ResNets), or skip."""
    if not (SHARED / "data" / "cifar10-jpeg.tar.gz").is_file():
        pytest.skip("../shared is not available")
    return SHARED


@pytest.fixture
def session_cache(tmp_path_factory, monkeypatch):
    """One decoded-data cache per test session, so the CIFAR archive is decoded once."""
    root = tmp_path_factory.getbasetemp() / "torchslim-cache"
    root.mkdir(exist_ok=True)
    monkeypatch.setenv("TORCHSLIM_CACHE", str(root))
    return root


def pytest_configure(config):
    """Under pytest-xdist each worker gets one core: two threads per worker oversubscribe the CPU
    and make the suite several times slower."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)
