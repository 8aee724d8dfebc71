"""Benchmark rows measured in ONNX Runtime agree with the PyTorch model they came from."""

from __future__ import annotations

import pytest
import torch

from torchslim.bench.measure import evaluate_onnx, measure_onnx_row
from torchslim.export.onnx import export_onnx
from torchslim.models import create_model
from torchslim.train import evaluate


def test_onnx_rows_measure_the_exported_model(tmp_path):
    torch.manual_seed(0)
    model = create_model("demo_cnn").eval()
    path = export_onnx(model, torch.zeros(1, 1, 8, 8), tmp_path / "m.onnx")
    batches = [(torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))) for _ in range(3)]
    expected = evaluate(model, batches, 10)
    got = evaluate_onnx(path, batches, 10, threads=1)
    assert got.top1 == pytest.approx(expected.top1) and got.top5 == pytest.approx(expected.top5)
    row = measure_onnx_row("m", path, model, (1, 8, 8), batches, num_classes=10,
                           latency_batch=8, repeats=2, threads=1)
    assert row.runtime == "onnxruntime" and row.top1 == pytest.approx(expected.top1)
    assert row.file_bytes == path.stat().st_size and row.batch_n == 8
    assert row.latency_b1_ms > 0 and row.latency_bn_ms > 0 and row.threads == 1


def test_onnx_rows_run_at_the_pytorch_rows_thread_count_unless_told(tmp_path, monkeypatch):
    import torchslim.bench.measure as measure

    model = create_model("demo_cnn").eval()
    path = export_onnx(model, torch.zeros(1, 1, 8, 8), tmp_path / "m.onnx")
    asked = []
    real = measure.onnx_session
    monkeypatch.setattr(measure, "onnx_session",
                        lambda p, threads=None: asked.append(threads) or real(p, threads))
    row = measure_onnx_row("m", path, model, (1, 8, 8), None, num_classes=10,
                           latency_batch=8, repeats=1)
    assert asked == [torch.get_num_threads()] and row.threads == torch.get_num_threads()
