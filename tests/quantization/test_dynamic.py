"""Dynamic quantization: torch.ao for PyTorch models, ONNX Runtime for ONNX, safe saving."""

from __future__ import annotations

from collections import Counter

import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn
from torch.ao.nn.quantized import dynamic as nnqd

from torchslim.core.errors import UserError
from torchslim.export.onnx import export_onnx, session
from torchslim.models import create_model
from torchslim.quantization.dynamic import (
    FORMAT,
    dynamic_layers,
    load_dynamic,
    quantize_dynamic,
    quantize_dynamic_onnx,
    save_dynamic,
)
from torchslim.quantization.weight_only import save_weight_only


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 512), nn.ReLU(),
                         nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 10)).eval()


class RecurrentClassifier(nn.Module):
    """An LSTM, then a GRU over its outputs, then a Linear head on the last step."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(12, 48, batch_first=True)
        self.gru = nn.GRU(48, 48, batch_first=True)
        self.head = nn.Linear(48, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, _ = self.lstm(x)
        x, _ = self.gru(x)
        return self.head(x[:, -1])


def recurrent() -> nn.Module:
    torch.manual_seed(0)
    return RecurrentClassifier().eval()


def images(n: int = 32) -> torch.Tensor:
    return torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def sequences(n: int = 16) -> torch.Tensor:
    return torch.randn(n, 10, 12, generator=torch.Generator().manual_seed(1))


def relative_error(output: torch.Tensor, reference: torch.Tensor) -> float:
    return float((output - reference).norm() / reference.norm())


def file_bytes(state, path) -> int:
    torch.save(state, path)
    return path.stat().st_size


def test_linear_layers_become_dynamic_int8_and_the_original_is_untouched():
    model = mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    quantized = quantize_dynamic(model)
    assert dynamic_layers(quantized) == {"1": "Linear", "3": "Linear", "5": "Linear"}
    assert all(isinstance(quantized[i], nnqd.Linear) for i in (1, 3, 5))
    assert quantized[1].weight().dtype == torch.qint8
    assert all(type(model[i]) is nn.Linear for i in (1, 3, 5))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    with torch.no_grad():
        error = relative_error(quantized(images()), model(images()))
    assert 0 < error < 0.03, error


def test_lstm_and_gru_become_dynamic_and_stay_close():
    model = recurrent()
    quantized = quantize_dynamic(model)
    assert dynamic_layers(quantized) == {"lstm": "LSTM", "gru": "GRU", "head": "Linear"}
    assert isinstance(quantized.lstm, nnqd.LSTM) and isinstance(quantized.gru, nnqd.GRU)
    with torch.no_grad():
        error = relative_error(quantized(sequences()), model(sequences()))
    assert 0 < error < 0.03, error


def test_layers_picks_the_types_and_a_bare_layer_is_replaced_too():
    quantized = quantize_dynamic(recurrent(), layers=nn.LSTM)
    assert dynamic_layers(quantized) == {"lstm": "LSTM"}
    assert type(quantized.head) is nn.Linear
    bare = quantize_dynamic(nn.Linear(8, 4))
    assert isinstance(bare, nnqd.Linear) and dynamic_layers(bare) == {"": "Linear"}


def test_float16_weights():
    model = mlp()
    quantized = quantize_dynamic(model, dtype=torch.float16)
    assert quantized[1].weight().dtype == torch.float32  # unpacked from float16
    with torch.no_grad():
        assert relative_error(quantized(images()), model(images())) < 1e-3


@pytest.mark.parametrize("dtype", [torch.qint8, torch.float16])
def test_saved_dynamic_model_loads_under_weights_only_and_computes_the_same(tmp_path, dtype):
    model = recurrent()
    quantized = quantize_dynamic(model, dtype=dtype)
    path = save_dynamic(quantized, tmp_path / "dynamic.pt", meta={"model": "rnn"})
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert raw["format"] == FORMAT and raw["meta"] == {"model": "rnn"}
    restored = load_dynamic(recurrent(), path)
    assert dynamic_layers(restored) == dynamic_layers(quantized)
    with torch.no_grad():
        assert torch.equal(restored(sequences()), quantized(sequences()))


def test_saved_int8_model_is_about_a_quarter_of_float32(tmp_path):
    model = mlp()
    dense = file_bytes(model.state_dict(), tmp_path / "fp32.pt")
    saved = save_dynamic(quantize_dynamic(model), tmp_path / "int8.pt").stat().st_size
    assert saved < 0.27 * dense, (saved, dense)


def test_onnx_dynamic_model_runs_integer_matmuls_in_onnxruntime(tmp_path):
    model = mlp()
    fp32 = export_onnx(model, images(1), tmp_path / "mlp.onnx")
    int8 = quantize_dynamic_onnx(fp32, tmp_path / "mlp.int8.onnx")
    ops = Counter(node.op_type for node in onnx.load(str(int8)).graph.node)
    assert ops["MatMulInteger"] == 3 and ops["DynamicQuantizeLinear"] >= 1
    assert "Gemm" not in ops and "MatMul" not in ops
    assert int8.stat().st_size < 0.3 * fp32.stat().st_size
    weights = [numpy_helper.to_array(init) for init in onnx.load(str(int8)).graph.initializer
               if init.data_type == onnx.TensorProto.INT8 and len(init.dims) == 2]
    assert len(weights) == 3  # 7-bit weights (reduce_range): no int16 overflow without VNNI
    assert all(abs(w).max() == 64 for w in weights)
    x = images()
    output = torch.from_numpy(session(int8, threads=1).run(None, {"input": x.numpy()})[0])
    with torch.no_grad():
        assert relative_error(output, model(x)) < 0.03


def test_onnx_lstm_becomes_dynamic_quantize_lstm(tmp_path):
    model = recurrent()
    fp32 = export_onnx(model, sequences(1), tmp_path / "rnn.onnx")
    int8 = quantize_dynamic_onnx(fp32, tmp_path / "rnn.int8.onnx")
    ops = Counter(node.op_type for node in onnx.load(str(int8)).graph.node)
    assert ops["DynamicQuantizeLSTM"] == 1 and ops["MatMulInteger"] == 1
    assert ops["GRU"] == 1  # ONNX Runtime has no dynamic GRU: it stays float
    x = sequences()
    output = torch.from_numpy(session(int8, threads=1).run(None, {"input": x.numpy()})[0])
    with torch.no_grad():
        assert relative_error(output, model(x)) < 0.05


def test_quantization_mistakes_are_user_errors():
    with pytest.raises(UserError, match="torch.qint8 or torch.float16"):
        quantize_dynamic(mlp(), dtype=torch.int8)
    with pytest.raises(UserError, match="not Conv2d: for convolutions use static"):
        quantize_dynamic(mlp(), layers=(nn.Linear, nn.Conv2d))
    with pytest.raises(UserError, match="has no nn.Linear, nn.LSTM, nn.GRU layer"):
        quantize_dynamic(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()))
    with pytest.raises(UserError, match="no dynamically quantized layer: quantize it"):
        save_dynamic(mlp(), "unused.pt")


def test_loading_mistakes_are_user_errors(tmp_path):
    path = save_dynamic(quantize_dynamic(recurrent()), tmp_path / "rnn.pt")
    with pytest.raises(UserError, match="does not fit the model: its dynamic layers differ"):
        load_dynamic(mlp(), path)
    narrow = RecurrentClassifier()
    narrow.head = nn.Linear(48, 7)
    with pytest.raises(UserError, match="layer 'head' has tensors"):
        load_dynamic(narrow, path)
    other = save_weight_only(mlp(), tmp_path / "weights.pt")
    with pytest.raises(UserError, match="not a torchslim dynamic-quantized model"):
        load_dynamic(mlp(), other)
    with pytest.raises(UserError, match="not found"):
        load_dynamic(mlp(), tmp_path / "missing.pt")


def test_onnx_mistakes_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="not found: check the path"):
        quantize_dynamic_onnx(tmp_path / "missing.onnx", tmp_path / "out.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(UserError, match="not a readable ONNX model"):
        quantize_dynamic_onnx(junk, tmp_path / "out.onnx")
    cnn = export_onnx(nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU()).eval(),
                      torch.zeros(1, 1, 8, 8), tmp_path / "cnn.onnx")
    with pytest.raises(UserError, match="would change nothing"):
        quantize_dynamic_onnx(cnn, tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()
    with pytest.raises(UserError, match="not Softmax"):
        quantize_dynamic_onnx(cnn, tmp_path / "out.onnx", op_types=["MatMul", "Softmax"])


def test_convolutions_can_be_asked_for_explicitly(tmp_path):
    model = create_model("demo_cnn").eval()
    fp32 = export_onnx(model, torch.zeros(1, 1, 8, 8), tmp_path / "cnn.onnx")
    int8 = quantize_dynamic_onnx(fp32, tmp_path / "cnn.int8.onnx", op_types=["Conv", "MatMul"])
    ops = Counter(node.op_type for node in onnx.load(str(int8)).graph.node)
    assert ops["ConvInteger"] == 3 and ops["MatMulInteger"] == 1
