"""ONNX export: fp32 outputs match; a quantized model exports as QDQ with int8 weights that ONNX
Runtime runs with integer kernels and whose predictions agree with the PyTorch simulation."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from tests.graph.helpers import randomize
from torchslim.core.errors import UserError
from torchslim.data import BatchLoader, load_digits
from torchslim.export.onnx import export_onnx, runtime_report, session
from torchslim.models import create_model
from torchslim.pruning import Masks
from torchslim.pruning.structured import FilterNormPruner
from torchslim.pruning.thinning import thin
from torchslim.quantization import QuantConfig, quantize
from torchslim.train import TrainConfig, Trainer


@pytest.fixture(scope="module")
def digits_model():
    train = BatchLoader(load_digits("train"), 64, shuffle=True, normalization="digits")
    model = create_model("demo_cnn")
    Trainer(model, train, TrainConfig(epochs=4, lr=0.05, device="cpu"), progress=False).fit()
    return model.eval()


def test_fp32_export_of_a_thinned_model_matches_pytorch(tmp_path):
    from torchslim.graph import build_graph

    model = randomize(create_model("cifar_resnet20"))
    x = torch.zeros(1, 3, 32, 32)
    FilterNormPruner(0.5).apply(build_graph(model, x), Masks(model))
    thin(model, x)
    path = export_onnx(model, x, tmp_path / "thin.onnx")
    batch = torch.randn(3, 3, 32, 32)
    out = session(path).run(None, {"input": batch.numpy()})[0]
    assert np.abs(out - model(batch).detach().numpy()).max() < 1e-4


def test_int8_export_runs_integer_kernels_and_agrees_with_the_simulation(digits_model, tmp_path):
    train = BatchLoader(load_digits("train"), 128, normalization="digits")
    test = BatchLoader(load_digits("test"), 450, normalization="digits")
    # uint8 weights: int8 weights saturate the int16 sums of AVX2 CPUs without VNNI
    config = QuantConfig(observer="histogram", signed_weights=False)
    quantized = quantize(digits_model, config, train, torch.zeros(1, 1, 8, 8))
    fp32 = export_onnx(digits_model, torch.zeros(1, 1, 8, 8), tmp_path / "fp32.onnx")
    int8 = export_onnx(quantized, torch.zeros(1, 1, 8, 8), tmp_path / "int8.onnx")
    graph = onnx.load(str(int8)).graph
    types = {init.name: init.data_type for init in graph.initializer}
    assert types["features.1.0.layer.weight_quantized"] == onnx.TensorProto.UINT8
    assert int8.stat().st_size < 0.35 * fp32.stat().st_size
    report = runtime_report(int8, tmp_path)
    assert report.ops["QLinearConv"] == 3
    assert report.ops["QGemm"] == 1 and report.float_nodes == []
    x, _ = next(iter(test))
    runtime = session(int8).run(None, {"input": x.numpy()})[0].argmax(1)
    simulated = quantized(x).argmax(1).numpy()
    assert (runtime == simulated).mean() >= 0.995


def test_an_unexportable_model_is_a_user_error(tmp_path):
    class Product(torch.nn.Module):
        def forward(self, x):
            return x.cumprod(1)

    with pytest.raises(UserError, match="torch.onnx cannot export Product: .*cumprod"):
        export_onnx(Product(), torch.zeros(1, 3), tmp_path / "bad.onnx")


def test_narrower_weight_grids_are_stored_as_int8_on_their_own_grid(digits_model, tmp_path):
    train = BatchLoader(load_digits("train"), 128, normalization="digits")
    quantized = quantize(digits_model, QuantConfig(observer="minmax", weight_bits=7), train,
                         torch.zeros(1, 1, 8, 8))
    path = export_onnx(quantized, torch.zeros(1, 1, 8, 8), tmp_path / "w7.onnx")
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    weights = {init.name: numpy_helper.to_array(init) for init in graph.initializer
               if init.name.endswith("_quantized")}
    assert len(weights) == 4 and not any(init.name.endswith(".weight")
                                         for init in graph.initializer)
    for values in weights.values():
        assert values.dtype == np.int8 and -64 <= values.min() and values.max() <= 63
    x, _ = next(iter(BatchLoader(load_digits("test"), 450, normalization="digits")))
    runtime = session(path).run(None, {"input": x.numpy()})[0]
    simulated = quantized(x).detach().numpy()
    # 7-bit weights keep ONNX Runtime's int8 x uint8 kernels out of int16 saturation
    assert np.abs(runtime - simulated).max() < 0.02 * np.abs(runtime).max()
    assert (runtime.argmax(1) == simulated.argmax(1)).mean() >= 0.995


@pytest.mark.parametrize("excluded", ["features.0.0", "features.1.0"])
def test_layers_kept_in_float_stay_float_in_onnx_runtime(digits_model, tmp_path, excluded):
    train = BatchLoader(load_digits("train"), 128, normalization="digits")
    config = QuantConfig(observer="minmax", weight_bits=7, exclude=(excluded,))
    quantized = quantize(digits_model, config, train, torch.zeros(1, 1, 8, 8))
    path = export_onnx(quantized, torch.zeros(1, 1, 8, 8), tmp_path / "mixed.onnx")
    report = runtime_report(path, tmp_path)
    assert report.ops["QLinearConv"] == 2 and report.ops["Conv"] >= 1
    x, _ = next(iter(BatchLoader(load_digits("test"), 450, normalization="digits")))
    runtime = session(path).run(None, {"input": x.numpy()})[0]
    simulated = quantized(x).detach().numpy()
    assert (runtime.argmax(1) == simulated.argmax(1)).mean() >= 0.995
    assert np.abs(runtime - simulated).max() < 0.02 * np.abs(runtime).max()


def test_an_all_zero_filter_with_a_bias_agrees_with_the_simulation(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(),
                                torch.nn.Conv2d(4, 2, 1)).eval()
    with torch.no_grad():
        model[0].weight[1] = 0  # a pruned filter whose bias survives
        model[0].bias[1] = 2.0
    batches = [torch.rand(8, 3, 8, 8) * 0.5 for _ in range(2)]
    quantized = quantize(model, QuantConfig(observer="minmax", weight_bits=7), batches,
                         torch.zeros(1, 3, 8, 8))
    path = export_onnx(quantized, torch.zeros(1, 3, 8, 8), tmp_path / "dead.onnx")
    x = torch.rand(4, 3, 8, 8) * 0.5
    runtime = session(path).run(None, {"input": x.numpy()})[0]
    assert np.abs(runtime - quantized(x).detach().numpy()).max() < 0.05
    assert np.abs(runtime - model(x).detach().numpy()).max() < 0.1


@pytest.mark.parametrize("method,bits", [("lsq", 8), ("lsq", 4), ("pact", 4), ("dorefa", 4),
                                         ("static", 8)])
def test_quantization_aware_trained_models_export_and_run_as_trained(tmp_path, method, bits):
    from torchslim.quantization import prepare

    torch.manual_seed(0)
    model = prepare(create_model("demo_cnn"), torch.zeros(1, 1, 8, 8),
                    QuantConfig(method=method, fold_bn=False, weight_bits=bits,
                                activation_bits=bits))
    for quantizer in model.modules():
        if hasattr(quantizer, "quantizing"):
            quantizer.quantizing = True
    model.train()
    model(torch.randn(32, 1, 8, 8))  # a training step's forward: LSQ initialises its steps
    for quantizer in model.modules():
        if hasattr(quantizer, "observing"):
            quantizer.observing = False
    model.eval()
    path = export_onnx(model, torch.zeros(1, 1, 8, 8), tmp_path / f"{method}.onnx")
    x = torch.randn(16, 1, 8, 8)
    runtime = session(path).run(None, {"input": x.numpy()})[0]
    expected = model(x).detach().numpy()
    # int8 kernels and float rounding of DoReFa's weight transform move a value by a step or so
    assert np.abs(runtime - expected).max() < 0.05 * max(1.0, np.abs(expected).max())
    if bits == 8 and method in ("lsq", "static"):
        assert runtime_report(path, tmp_path).ops["QLinearConv"] >= 1
