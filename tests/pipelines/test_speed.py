"""Latency-aware mixed precision: layers grouped by shape, kept in float where int8 is slower."""

import onnx
import pytest
import torch
from torch import nn

from torchslim.core.errors import UserError
from torchslim.export.onnx import export_onnx
from torchslim.pipelines.speed import layer_groups, paired_latency, select_float_layers
from torchslim.quantization import QuantConfig

EXAMPLE = torch.zeros(1, 3, 16, 16)


class Net(nn.Module):
    """Two stages: 8-channel convolutions at 16x16, then 16-channel ones at 8x8, and a head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.a1 = nn.Conv2d(8, 8, 3, padding=1)
        self.a2 = nn.Conv2d(8, 8, 3, padding=1)
        self.down = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.b1 = nn.Conv2d(16, 16, 3, padding=1)
        self.b2 = nn.Conv2d(16, 16, 3, padding=1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = torch.relu(self.a2(torch.relu(self.a1(x))))
        x = torch.relu(self.down(x))
        x = torch.relu(self.b2(torch.relu(self.b1(x))))
        return self.fc(x.mean((2, 3)))


def cost(path) -> float:
    """A stand-in for a CPU whose int8 kernels are slow with 8 output channels: an int8
    convolution costs 3 units with 8 output channels and 1 otherwise, a float one 2."""
    graph = onnx.load(str(path)).graph
    dims = {init.name: list(init.dims) for init in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    total = 0.0
    for node in graph.node:
        if node.op_type != "Conv":
            continue
        weight = node.input[1]
        dq = producer.get(weight)
        int8 = dq is not None and dq.op_type == "DequantizeLinear"
        channels = dims[dq.input[0] if int8 else weight][0]
        total += (3.0 if channels == 8 else 1.0) if int8 else 2.0
    return total


def batches():
    torch.manual_seed(0)
    return [torch.randn(4, 3, 16, 16) for _ in range(2)]


def test_layer_groups_join_layers_of_one_shape_most_macs_first():
    groups = layer_groups(Net().eval(), EXAMPLE, ["stem", "a1", "a2", "down", "b1", "b2", "fc"])
    assert [g.layers for g in groups] == [("a1", "a2"), ("b1", "b2"), ("down",), ("stem",),
                                          ("fc",)]
    assert groups[0].key == "Conv2d 8->8 k3x3 at 16x16"
    assert groups[0].macs == 2 * 16 * 16 * 8 * 8 * 9
    assert groups[2].key == "Conv2d 8->16 k3x3 s2x2 at 16x16"
    assert groups[-1].key == "Linear 16->10" and groups[-1].macs == 160
    with pytest.raises(UserError, match="no layer named 'nope'"):
        layer_groups(Net(), EXAMPLE, ["nope"])


def test_the_search_keeps_in_float_exactly_the_layers_whose_int8_kernels_are_slower(tmp_path):
    model = Net().eval()
    selection = select_float_layers(model, QuantConfig(observer="minmax"), batches(), EXAMPLE,
                                    tmp_path, measure=lambda best, trial: (cost(best),
                                                                           cost(trial)))
    assert sorted(selection.float_layers) == ["a1", "a2", "stem"]
    assert [(t.group, t.kept_float) for t in selection.trials] == [
        ("Conv2d 8->8 k3x3 at 16x16", True), ("Conv2d 16->16 k3x3 at 8x8", False),
        ("Conv2d 8->16 k3x3 s2x2 at 16x16", False), ("Conv2d 3->8 k3x3 at 16x16", True),
        ("Linear 16->10", False), ("all 3 groups left in int8", False)]
    # each trial is compared with the best model so far
    assert selection.trials[0].best_ms == 3 * 3 + 3 * 1 and selection.trials[0].trial_ms == 10
    assert selection.trials[3].best_ms == 10
    assert "kept in float for speed: a1, a2, stem" in selection.format()
    assert list(tmp_path.iterdir()) == []  # the trial files are removed
    assert not any(hasattr(m, "weight_quantizer") for m in model.modules())  # model untouched


def test_a_gain_within_the_margin_keeps_int8(tmp_path):
    config = QuantConfig(observer="minmax", exclude=("fc",))
    selection = select_float_layers(Net().eval(), config, batches(), EXAMPLE, tmp_path,
                                    measure=lambda best, trial: (100.0, 98.0), margin=0.03)
    assert selection.float_layers == ()
    assert len(selection.trials) == 5  # 4 groups (fc was excluded already), then all 4
    with pytest.raises(UserError, match="margin"):
        select_float_layers(Net().eval(), config, batches(), EXAMPLE, tmp_path,
                            measure=lambda best, trial: (1.0, 1.0), margin=1.5)


def test_small_losses_in_many_groups_add_up_to_keeping_them_all_in_float(tmp_path):
    """Every int8 convolution costs 1.08 units, a float one 1: no group alone passes the 3 %
    margin (at most 2.5 %), all of them together (7.4 %) do."""

    def cost(path):
        graph = onnx.load(str(path)).graph
        producer = {out: node for node in graph.node for out in node.output}
        return sum(1.08 if producer.get(node.input[1]) is not None
                   and producer[node.input[1]].op_type == "DequantizeLinear" else 1.0
                   for node in graph.node if node.op_type == "Conv")

    config = QuantConfig(observer="minmax", exclude=("fc",))
    selection = select_float_layers(Net().eval(), config, batches(), EXAMPLE, tmp_path,
                                    measure=lambda best, trial: (cost(best), cost(trial)))
    assert [t.kept_float for t in selection.trials] == [False] * 4 + [True]
    assert sorted(selection.float_layers) == ["a1", "a2", "b1", "b2", "down", "stem"]


def test_paired_latency_times_two_onnx_models_in_onnx_runtime(tmp_path):
    model = Net().eval()
    first = export_onnx(model, EXAMPLE, tmp_path / "a.onnx")
    second = export_onnx(model, EXAMPLE, tmp_path / "b.onnx")
    best, trial = paired_latency((3, 16, 16), 4, rounds=2, repeats=1, threads=1)(first, second)
    assert best > 0 and trial > 0
