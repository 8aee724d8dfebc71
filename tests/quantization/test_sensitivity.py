"""Quantization sensitivity: a deliberately fragile layer ranks first in both modes and with
every metric; "all but" measures exactly the model that excluding the layer gives; the report's
table and JSON; mistakes are user errors."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torchslim.core.errors import UserError
from torchslim.quantization import QuantConfig, quantize
from torchslim.quantization.sensitivity import quantization_sensitivity


class Net(nn.Module):
    """stem conv -> ReLU -> max pool; a conv with a residual addition; a conv into a max pool
    (its own output quantizer, shared by the pool); a linear head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.pooled = nn.Conv2d(8, 8, 1)
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.stem(x)), 2)
        x = F.relu(self.conv(x) + x)
        x = F.max_pool2d(self.pooled(x), 2)
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))


def fragile(model: Net) -> Net:
    """A dead input channel of ``conv`` with an outlier weight: nothing changes in float, but on
    a per-tensor grid every other weight of ``conv`` rounds to zero."""
    with torch.no_grad():
        model.stem.bias[0] = -100.0
        model.conv.weight[0, 0, 1, 1] = 100.0
    return model


def data(count=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(16, 3, 8, 8, generator=generator) for _ in range(count)]


CONFIG = QuantConfig(weight_bits=4, per_channel=False, observer="minmax")
X = torch.zeros(1, 3, 8, 8)


@pytest.mark.parametrize("mode", ["only", "all_but"])
@pytest.mark.parametrize("metric", ["mse", "kl"])
def test_the_fragile_layer_ranks_first(mode, metric):
    torch.manual_seed(0)
    model = fragile(Net().eval())
    report = quantization_sensitivity(model, CONFIG, data(), data(seed=1), X, mode=mode,
                                      metric=metric)
    assert [row.layer for row in report.rows][0] == "conv"
    assert sorted(row.layer for row in report.rows) == ["conv", "head", "pooled", "stem"]
    impacts = [row.impact for row in report.rows]
    assert impacts == sorted(impacts, reverse=True) and impacts[0] > 3 * impacts[1]
    assert report.float_value == 0 and report.quantized_value > 0


def test_all_but_measures_the_model_that_excluding_the_layer_gives():
    torch.manual_seed(1)
    model = Net().eval()
    calibration, evaluation = data(), data(seed=1)
    report = quantization_sensitivity(model, CONFIG, calibration, evaluation, X,
                                      mode="all_but", metric="mse")
    with torch.no_grad():
        reference = [model(x) for x in evaluation]
    groups = {row.layer: row.quantizers for row in report.rows}
    # with stem excluded the ReLU and pool after it run in float too (the pool's output is
    # quantized where conv reads it); pooled's own output quantizer and the pool sharing its
    # grid go with it
    assert groups["stem"][0] == "stem.weight_quantizer" and "quant_relu" in groups["stem"]
    assert groups["pooled"][0] == "pooled.weight_quantizer"
    assert {"quant_pooled", "quant_max_pool2d_1"} <= set(groups["pooled"])
    for row in report.rows:
        excluded = quantize(model, replace(CONFIG, exclude=(row.layer,)), calibration, X)
        # where the excluded model quantizes a value that shared a grid in the full one (what
        # the next quantized layer reads after a float region), the report runs it in float
        changed = [q for q in row.quantizers if hasattr(excluded, q)]
        assert changed == {"stem": ["quant_max_pool2d"], "pooled": ["quant_flatten"]}.get(
            row.layer, [])
        for name in changed:
            excluded.get_submodule(name).quantizing = False
        with torch.no_grad():
            errors = [(excluded(x) - r).pow(2) for x, r in zip(evaluation, reference,
                                                                 strict=True)]
        mse = float(torch.cat([e.flatten() for e in errors]).mean())
        assert row.value == pytest.approx(mse, rel=1e-5, abs=1e-12)


def test_top1_ranks_the_fragile_layer_first_and_the_report_formats():
    torch.manual_seed(0)
    model = fragile(Net().eval())
    inputs = data(4, seed=2)
    with torch.no_grad():  # labels: the float model's predictions, so float scores 100 %
        labelled = [(x, model(x).argmax(1)) for x in inputs]
    report = quantization_sensitivity(model, CONFIG, data(), labelled, X, metric="top1",
                                      num_classes=5, layers=["conv", "st*"])
    assert report.float_value == 100.0
    assert report.most_sensitive(1) == ("conv",)
    assert [row.layer for row in report.rows] == ["conv", "stem"]
    assert report.rows[0].impact == pytest.approx(100.0 - report.rows[0].value)
    table = report.format()
    assert "each layer quantized alone" in table and "   1  conv" in table
    assert json.loads(json.dumps(report.to_dict()))["rows"][0]["layer"] == "conv"


def test_mistakes_are_user_errors():
    model = Net().eval()
    with pytest.raises(UserError, match="needs num_classes"):
        quantization_sensitivity(model, CONFIG, data(), data(), X)
    with pytest.raises(UserError, match="unknown sensitivity mode 'some'"):
        quantization_sensitivity(model, CONFIG, data(), data(), X, mode="some", metric="mse")
    with pytest.raises(UserError, match="needs \\(inputs, labels\\)"):
        quantization_sensitivity(model, CONFIG, data(), data(), X, num_classes=5)
    with pytest.raises(UserError, match="layer 'cnv' matches no quantized layer.*'conv'"):
        quantization_sensitivity(model, CONFIG, data(), data(), X, metric="mse",
                                 layers=["cnv"])
    with pytest.raises(UserError, match="use method 'static'"):
        quantization_sensitivity(model, QuantConfig(method="lsq"), data(), data(), X,
                                 metric="mse")
