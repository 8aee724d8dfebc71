"""Acceptance on the real data: pretrained CIFAR ResNets on the JPEG CIFAR-10 test split."""

import json

import pytest

from torchslim.cli import main

pytestmark = pytest.mark.shared


def run(args, capsys):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured


@pytest.mark.parametrize("model,weights,top1", [
    ("cifar_resnet20", "resnet20-12fca82f.th", 81.03),
    ("cifar_resnet56", "resnet56-4bfd9763.th", 83.20),
])
def test_pretrained_accuracy_on_jpeg_test_split(shared_dir, session_cache, capsys, model,
                                                weights, top1):
    code, captured = run(["eval", "--model", model, "--weights",
                          shared_dir / "models" / weights, "--data",
                          shared_dir / "data" / "cifar10-jpeg.tar.gz", "--json", "--quiet"],
                         capsys)
    assert code == 0, captured.err
    payload = json.loads(captured.out.strip().splitlines()[-1])
    assert payload["n"] == 10_000
    assert payload["top1"] == pytest.approx(top1, abs=0.1)


def test_checkpoint_of_the_other_resnet_is_refused(shared_dir, capsys):
    code, captured = run(["summary", "--model", "cifar_resnet20", "--weights",
                          shared_dir / "models" / "resnet56-4bfd9763.th"], capsys)
    assert code == 2
    assert "does not fit model 'cifar_resnet20'" in captured.err
    assert captured.err.count("\n") == 1


def test_resnet20_int8_in_onnx_runtime_is_faithful_and_accurate(shared_dir, session_cache,
                                                                 capsys, tmp_path):
    code, captured = run(["quantize", "--model", "cifar_resnet20", "--weights",
                          shared_dir / "models" / "resnet20-12fca82f.th", "--data",
                          shared_dir / "data" / "cifar10-jpeg.tar.gz", "--limit", "2000",
                          "--calibration-images", "500", "--layouts", "u8s7",
                          "--latency-batch", "16", "--repeats", "2", "--out", tmp_path,
                          "--json", "--quiet"], capsys)
    assert code == 0, captured.err
    payload = json.loads(captured.out.strip().splitlines()[-1])
    rows = {row["name"]: row for row in payload["rows"]}
    fp32, int8 = rows["fp32 (ONNX Runtime)"], rows["int8 u8s7 (ONNX Runtime)"]
    assert int8["top1"] >= fp32["top1"] - 0.5
    assert int8["file_bytes"] <= 0.31 * fp32["file_bytes"]
    trial = json.loads((tmp_path / "report.json").read_text())["trials"][0]
    assert trial["agreement"] >= 0.995
    assert payload["float_nodes"] == []
