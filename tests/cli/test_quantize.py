"""``torchslim quantize`` and ``torchslim export``: int8 that runs in ONNX Runtime, measured
against fp32, and one-line errors for a user's mistakes."""

import json

import onnx
import pytest
import torch

from torchslim.cli import main as cli_main
from torchslim.models import create_model, load_weights
from torchslim.quantization import is_prepared

from ..data.test_data import make_tree
from .test_cli import last_json, run_cli


def main(args):
    return cli_main([str(a) for a in args])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("trained")
    assert main(["train", "--model", "demo_cnn", "--data", "digits", "--epochs", "4",
                 "--batch-size", "64", "--lr", "0.05", "--no-augment", "--out", out,
                 "--quiet"]) == 0
    return out / "model.pt"


def test_quantize_writes_int8_onnx_that_onnx_runtime_runs_and_measures_it(trained, tmp_path,
                                                                         capsys):
    out = tmp_path / "q"
    code = main(["quantize", "--model", "demo_cnn", "--weights", trained, "--data", "digits",
                 "--calibration-images", "200", "--observer", "minmax", "--layouts", "u8u8",
                 "s8s8", "--latency-batch", "16", "--repeats", "3", "--out", out, "--json"])
    assert code == 0
    text = capsys.readouterr().out
    payload = last_json(text)
    assert payload["layout"] in {"u8u8", "s8s8"}
    rows = {row["name"]: row for row in payload["rows"]}
    assert len(rows) == 4
    fp32 = rows["fp32 (ONNX Runtime)"]
    int8 = next(row for name, row in rows.items() if "int8" in name and "ONNX" in name)
    assert int8["runtime"] == "onnxruntime" and int8["latency_bn_ms"] > 0
    assert int8["top1"] > fp32["top1"] - 3.0 > 80
    assert int8["file_bytes"] < fp32["file_bytes"]
    graph = onnx.load(out / "model_int8.onnx").graph
    ops = {node.op_type for node in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    report = json.loads((out / "report.json").read_text())
    assert {t["layout"] for t in report["trials"]} == {"u8u8", "s8s8"}
    assert all(0 <= t["agreement"] <= 1 for t in report["trials"])
    assert "chosen:" in (out / "report.txt").read_text() and "int8" in payload["verdict"]
    reloaded = load_weights(create_model("demo_cnn"), out / "quantized.pt")
    assert is_prepared(reloaded)
    # the quantized model exports again as int8 with `torchslim export`
    assert main(["export", "--model", "demo_cnn", "--weights", out / "quantized.pt",
                 "--out", tmp_path / "again.onnx", "--json"]) == 0
    again = last_json(capsys.readouterr().out)
    assert again["int8"] is True
    assert "QuantizeLinear" in {node.op_type for node in onnx.load(again["path"]).graph.node}
    # torchslim bench --onnx: PyTorch rows, and ONNX Runtime rows in fp32 and int8
    assert main(["bench", "--model", f"demo_cnn={trained}", "--model",
                 f"demo_cnn={out / 'quantized.pt'}", "--data", "digits", "--onnx",
                 "--latency-batch", "16", "--repeats", "2", "--out", tmp_path / "b",
                 "--json"]) == 0
    bench = last_json(capsys.readouterr().out)["rows"]
    assert [row["runtime"] for row in bench] == ["pytorch", "onnxruntime"] * 2
    assert [row["notes"] for row in bench[1::2]] == ["fp32 ONNX", "int8 ONNX"]
    assert bench[3]["top1"] == pytest.approx(int8["top1"])


def test_export_writes_fp32_onnx_of_any_model(trained, tmp_path, capsys):
    path = tmp_path / "m.onnx"
    assert main(["export", "--model", "demo_cnn", "--weights", trained, "--out", path,
                 "--json"]) == 0
    payload = last_json(capsys.readouterr().out)
    assert payload["int8"] is False and path.is_file()
    ops = {node.op_type for node in onnx.load(path).graph.node}
    assert "Conv" in ops and "QuantizeLinear" not in ops


@pytest.mark.parametrize("extra,message", [
    (["--exclude", "no_such_layer"], "'no_such_layer' to keep in float matches no layer"),
    (["--weight-bits", "9"], "weight_bits must be a whole number from 2 to 8"),
    (["--calibration-split", "test"], "the calibration split is the evaluation split"),
    (["--calibration-split", "validation"], "validation"),
    (["--multiplier", "nan"], "the scale multiplier must be a number > 0, got nan"),
])
def test_quantize_user_errors_are_one_line_exit_2(tmp_path, extra, message):
    weights = tmp_path / "w.pt"
    torch.save(create_model("demo_cnn").state_dict(), weights)
    done = run_cli("quantize", "--model", "demo_cnn", "--weights", weights, "--data", "digits",
                   "--out", tmp_path / "q", *extra, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], done.stderr


def test_an_empty_calibration_split_is_one_line_exit_2(tmp_path):
    weights = tmp_path / "w.pt"
    torch.save(create_model("demo_cnn").state_dict(), weights)
    data = tmp_path / "data"
    make_tree(data, {"test": {"a": 2, "b": 2}}, size=(8, 8), mode="L")
    (data / "train").mkdir()
    done = run_cli("quantize", "--model", "demo_cnn", "--weights", weights, "--data", data,
                   "--out", tmp_path / "q", "--quiet", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "data/train' has no class folders" in lines[0], lines[0]


def test_a_thinned_model_quantizes_and_its_quantized_file_reloads(trained, tmp_path, capsys):
    from torchslim.core.storage import save_compressed
    from torchslim.graph import build_graph
    from torchslim.pruning import Masks
    from torchslim.pruning.structured import FilterNormPruner
    from torchslim.pruning.thinning import thin

    model = load_weights(create_model("demo_cnn"), trained).eval()
    x = torch.zeros(1, 1, 8, 8)
    masks = Masks(model)
    FilterNormPruner(0.5).apply(build_graph(model, x), masks)
    record = thin(model, x, masks=masks)
    thinned = tmp_path / "thin.pt"
    save_compressed(model, thinned, meta={"model": "demo_cnn", "edits": [record]})
    assert main(["quantize", "--model", "demo_cnn", "--weights", thinned, "--data", "digits",
                 "--calibration-images", "100", "--layouts", "u8s7", "--latency-batch", "8",
                 "--repeats", "2", "--out", tmp_path / "q", "--quiet"]) == 0
    reloaded = load_weights(create_model("demo_cnn"), tmp_path / "q" / "quantized.pt")
    assert is_prepared(reloaded)
    assert reloaded.features[0][0].layer.out_channels == model.features[0][0].out_channels


def test_output_paths_of_the_wrong_kind_are_one_line_exit_2(trained, tmp_path):
    (tmp_path / "afile").write_text("x")
    done = run_cli("quantize", "--model", "demo_cnn", "--weights", trained, "--data", "digits",
                   "--out", tmp_path / "afile", "--quiet", cwd=tmp_path)
    assert done.returncode == 2 and "is a file" in done.stderr, done.stderr
    done = run_cli("export", "--model", "demo_cnn", "--weights", trained, "--out", tmp_path,
                   cwd=tmp_path)
    assert done.returncode == 2 and "is a folder" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    for command, out in (("quantize", tmp_path / "afile" / "q"),
                         ("export", tmp_path / "afile" / "m.onnx")):
        data = ["--data", "digits", "--quiet"] if command == "quantize" else []
        done = run_cli(command, "--model", "demo_cnn", "--weights", trained, *data,
                       "--out", out, cwd=tmp_path)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert f"'{tmp_path / 'afile'}' is a file" in done.stderr, done.stderr


def test_keep_float_excludes_the_most_sensitive_layers(trained, tmp_path, capsys):
    out = tmp_path / "q"
    assert main(["quantize", "--model", "demo_cnn", "--weights", trained, "--data", "digits",
                 "--calibration-images", "200", "--weight-bits", "4", "--keep-float", "1",
                 "--layouts", "u8s7", "--latency-batch", "8", "--repeats", "2", "--out", out,
                 "--json", "--quiet"]) == 0
    payload = last_json(capsys.readouterr().out)
    report = json.loads((out / "sensitivity.json").read_text())
    ranked = [row["layer"] for row in report["rows"]]
    assert len(ranked) == 4 and payload["excluded"] == ranked[:1]
    assert "sensitivity" in (out / "sensitivity.txt").read_text().lower()
    reloaded = load_weights(create_model("demo_cnn"), out / "quantized.pt")
    assert reloaded.quant_config.exclude == tuple(ranked[:1])


def test_speed_search_keeps_the_layers_it_finds_slower_in_int8_in_float(trained, tmp_path,
                                                                         capsys, monkeypatch):
    import torchslim.pipelines.quantize as pipeline

    # a stand-in for a CPU where every layer runs faster in float: all four go float
    monkeypatch.setattr(pipeline, "paired_latency",
                        lambda *a, **k: (lambda best, trial: (2.0, 1.0)))
    out = tmp_path / "q"
    assert main(["quantize", "--model", "demo_cnn", "--weights", trained, "--data", "digits",
                 "--calibration-images", "100", "--observer", "minmax", "--layouts", "u8s7",
                 "--speed-search", "--latency-batch", "8", "--repeats", "2", "--out", out,
                 "--json", "--quiet"]) == 0
    payload = last_json(capsys.readouterr().out)
    report = json.loads((out / "report.json").read_text())
    assert len(payload["float_for_speed"]) == 4
    assert sorted(report["speed_search"]["float_layers"]) == sorted(payload["float_for_speed"])
    assert report["speed_search"]["agreement"] == 1.0  # nothing left to quantize differently
    assert all(t["kept_float"] for t in report["speed_search"]["trials"])
    assert "kept in float for speed" in (out / "report.txt").read_text()
    assert payload["verdict"].startswith("the speed search kept every layer in float")
    reloaded = load_weights(create_model("demo_cnn"), out / "quantized.pt")
    assert set(payload["float_for_speed"]) <= set(reloaded.quant_config.exclude)
    graph = onnx.load(out / "model_int8.onnx").graph
    assert not any(n.op_type == "DequantizeLinear" and n.output[0] in
                   {i for c in graph.node if c.op_type == "Conv" for i in c.input[1:2]}
                   for n in graph.node)  # no convolution reads an int8 weight
