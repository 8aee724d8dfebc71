"""The demo: dense training, then the recipe rows, the distilled student and int8 beside it."""

from __future__ import annotations

import pytest

from torchslim.pipelines.demo import run_demo


@pytest.mark.slow
def test_demo_adds_agp_and_thinned_filter_rows(tmp_path):
    result = run_demo(tmp_path, epochs=4, quiet=True, repeats=2, finetune_epochs=4)
    dense, agp, filters, lowrank, student, fp32_onnx, int8_onnx = result["rows"]
    assert dense["name"] == "demo_cnn (dense)"
    assert agp["notes"] == "recipe demo_agp"
    assert filters["notes"] == "recipe demo_filters"
    assert agp["params"] == dense["params"] and agp["nonzero_params"] < 0.3 * dense["params"]
    assert agp["file_bytes"] < 0.4 * dense["file_bytes"]
    assert filters["params"] < 0.4 * dense["params"] and filters["macs"] < 0.4 * dense["macs"]
    assert lowrank["notes"] == "recipe demo_lowrank" and lowrank["macs"] < 0.6 * dense["macs"]
    assert student["params"] < 0.2 * dense["params"] and student["top1"] > 50.0
    assert (tmp_path / "distilled_student" / "compressed.pt").is_file()
    assert (tmp_path / "demo_agp" / "schedule.txt").is_file()
    assert (tmp_path / "demo_filters" / "compressed.pt").is_file()
    assert "demo_cnn (filters -40 %, thinned)" in (tmp_path / "bench.md").read_text()
    # the PTQ row runs in ONNX Runtime, beside the fp32 model there
    assert fp32_onnx["runtime"] == int8_onnx["runtime"] == "onnxruntime"
    assert int8_onnx["name"] == "demo_cnn (int8 PTQ, ONNX Runtime)"
    assert int8_onnx["top1"] >= fp32_onnx["top1"] - 2.0
    assert int8_onnx["file_bytes"] < 0.4 * fp32_onnx["file_bytes"]
    assert result["files"]["int8_onnx"].endswith("model_int8.onnx")
    assert (tmp_path / "quantized" / "model_int8.onnx").is_file()
