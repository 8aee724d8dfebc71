"""The demo: dense training, then the two recipe rows beside the dense one."""

from __future__ import annotations

import pytest

from torchslim.pipelines.demo import run_demo


@pytest.mark.slow
def test_demo_adds_agp_and_thinned_filter_rows(tmp_path):
    result = run_demo(tmp_path, epochs=4, quiet=True, repeats=2, finetune_epochs=4)
    dense, agp, filters = result["rows"]
    assert dense["name"] == "demo_cnn (dense)"
    assert agp["notes"] == "recipe demo_agp"
    assert filters["notes"] == "recipe demo_filters"
    assert agp["params"] == dense["params"] and agp["nonzero_params"] < 0.3 * dense["params"]
    assert agp["file_bytes"] < 0.4 * dense["file_bytes"]
    assert filters["params"] < 0.4 * dense["params"] and filters["macs"] < 0.4 * dense["macs"]
    assert (tmp_path / "demo_agp" / "schedule.txt").is_file()
    assert (tmp_path / "demo_filters" / "compressed.pt").is_file()
    assert "demo_cnn (filters -40 %, thinned)" in (tmp_path / "bench.md").read_text()
