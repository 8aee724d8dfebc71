"""Factorized and distilled models are ordinary models for bench and ONNX export."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import torch

from torchslim.cli import main
from torchslim.core.storage import save_compressed
from torchslim.lowrank import factorize
from torchslim.models import create_model


def test_a_factorized_model_benches_and_exports_to_onnx_from_its_file(tmp_path, capsys):
    torch.manual_seed(0)
    model = create_model("demo_cnn").eval()
    record = factorize(model, "tucker2", ratio=0.5, exclude=["features.0.0"])
    path = tmp_path / "factorized.pt"
    save_compressed(model, path, meta={"edits": [record]})
    onnx_path = tmp_path / "factorized.onnx"
    assert main(["export", "--model", "demo_cnn", "--weights", str(path), "--out",
                 str(onnx_path), "--quiet"]) == 0
    x = torch.randn(4, 1, 8, 8)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(got, model(x).detach().numpy(), atol=1e-4)
    capsys.readouterr()
    assert main(["bench", "--data", "digits", "--model", f"demo_cnn={path}", "--repeats", "2",
                 "--latency-batch", "16", "--out", str(tmp_path / "bench"), "--json",
                 "--quiet"]) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["rows"]
    assert rows[0]["params"] == sum(p.numel() for p in model.parameters())
    assert rows[0]["macs"] < 0.6 * 1_788_544
