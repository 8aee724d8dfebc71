"""Cross-layer equalization: pairs found from the graph (residual branches skipped), the float
function kept, the per-channel weight ranges evened out, quantization error reduced."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.graph.helpers import randomize
from torchslim.core.errors import UserError
from torchslim.models import create_model
from torchslim.quantization import QuantConfig, fold_batchnorms, quantize
from torchslim.quantization.equalize import equalize, input_ranges, output_ranges


def spread(ranges: torch.Tensor) -> float:
    return float(ranges.max() / ranges.min())


def skewed(model: nn.Module, pairs: list[tuple[str, str]], seed: int = 0) -> nn.Module:
    """Scale the output channels of each pair's first layer by factors from 0.01 to 10 and the
    matching inputs of its second layer by the inverse: the function stays, the balance goes."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for first, second in pairs:
            weight = model.get_submodule(first).weight
            bias = model.get_submodule(first).bias
            channels = weight.shape[0]
            factors = torch.logspace(-2, 1, channels)[torch.randperm(channels,
                                                                     generator=generator)]
            weight.mul_(factors.reshape([-1] + [1] * (weight.dim() - 1)))
            bias.mul_(factors)
            after = model.get_submodule(second).weight
            inverse = (1 / factors).repeat_interleave(after.shape[1] // channels)
            after.mul_(inverse.reshape([1, -1] + [1] * (after.dim() - 2)))
    return model


class Chain(nn.Module):
    """conv -> ReLU -> max pool -> conv -> leaky ReLU -> avg pool -> flatten -> linear, a
    ReLU6 before the last linear (no pair across it), and a conv whose output also feeds an
    addition (no pair)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.c = nn.Conv2d(8, 8, 3, padding=1)
        self.d = nn.Conv2d(8, 6, 1)
        self.fc = nn.Linear(6 * 4 * 4, 16)
        self.out = nn.Linear(16, 5)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.a(x)), 2)
        x = F.leaky_relu(self.b(x), 0.1)
        y = self.c(x)
        x = F.relu(y + x)
        x = F.avg_pool2d(self.d(x), 2).flatten(1)
        return self.out(F.relu6(self.fc(x)))


def test_pairs_follow_the_graph_and_the_function_is_unchanged():
    torch.manual_seed(0)
    model = skewed(Chain().eval(), [("a", "b"), ("d", "fc")])
    x = torch.randn(4, 3, 16, 16)
    expected = model(x)
    before = spread(output_ranges(model.a))
    # b's output feeds both c and the addition; fc -> ReLU6 -> out is not positive-homogeneous
    assert equalize(model, x) == [("a", "b"), ("d", "fc")]
    out = model(x)
    assert (out - expected).abs().max() <= 1e-4 * expected.abs().max()
    assert before > 500 and spread(output_ranges(model.a)) < 3
    # the flatten: each of d's channels is a block of 16 inputs of fc, equal ranges after
    assert torch.allclose(output_ranges(model.d), input_ranges(model.fc, 16), rtol=1e-4)


def test_resnet20_equalizes_the_inner_pairs_of_its_blocks_only():
    model = randomize(create_model("cifar_resnet20")).eval()
    fold_batchnorms(model)
    x = torch.randn(2, 3, 32, 32)
    expected = model(x)
    pairs = equalize(model, x)
    assert pairs == [(f"layer{s}.{b}.conv1", f"layer{s}.{b}.conv2")
                     for s in (1, 2, 3) for b in range(3)]
    assert (model(x) - expected).abs().max() <= 1e-4 * expected.abs().max()


def test_chains_converge_to_equal_ranges_in_both_layers_of_every_pair():
    torch.manual_seed(1)
    model = skewed(nn.Sequential(nn.Linear(10, 12), nn.ReLU(), nn.Linear(12, 12), nn.ReLU(),
                                 nn.Linear(12, 3)).eval(), [("0", "2"), ("2", "4")])
    x = torch.randn(8, 10)
    expected = model(x)
    assert equalize(model, x, iterations=100) == [("0", "2"), ("2", "4")]
    assert torch.allclose(output_ranges(model[0]), input_ranges(model[2]), rtol=1e-3)
    assert torch.allclose(output_ranges(model[2]), input_ranges(model[4]), rtol=1e-3)
    assert torch.allclose(model(x), expected, rtol=1e-4, atol=1e-5)


def test_equalization_reduces_per_tensor_weight_quantization_error():
    torch.manual_seed(2)
    model = skewed(nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(16, 8, 3, padding=1)).eval(), [("0", "2")])
    batches = [torch.randn(8, 3, 8, 8) for _ in range(3)]
    config = QuantConfig(weight_bits=4, per_channel=False, observer="minmax")
    x = torch.randn(8, 3, 8, 8)
    with torch.no_grad():
        expected = model(x)

    def error(float_model):
        quantized = quantize(float_model, config, batches, x[:1])
        return float((quantized(x) - expected).pow(2).mean().detach())

    plain = error(model)
    equalize(model, x[:1])
    assert error(model) < 0.1 * plain


def test_batchnorms_must_be_folded_and_quantized_models_are_refused():
    model = create_model("demo_cnn").eval()
    x = torch.zeros(1, 1, 8, 8)
    with pytest.raises(UserError, match="fold the BatchNorms first"):
        equalize(model, x)
    fold_batchnorms(model)
    quantized = quantize(model, QuantConfig(), [torch.randn(4, 1, 8, 8)], x)
    with pytest.raises(UserError, match="equalize the float model"):
        equalize(quantized, x)
    with pytest.raises(UserError, match="at least 1 iteration"):
        equalize(model, x, iterations=0)


def test_a_layer_called_twice_is_not_equalized():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 4)
            self.b = nn.Linear(4, 4)

        def forward(self, x):
            return self.b(F.relu(self.a(F.relu(self.a(x)))))

    assert equalize(Twice().eval(), torch.randn(2, 4)) == []


def test_a_flatten_by_view_with_the_batch_size_is_followed():
    class Vgg(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.fc = nn.Linear(4 * 2 * 2, 3)

        def forward(self, x):
            x = F.max_pool2d(F.relu(self.conv(x)), 2)
            return self.fc(x.view(x.size(0), -1))

    model = skewed(Vgg().eval(), [("conv", "fc")])
    x = torch.randn(2, 3, 4, 4)
    expected = model(x)
    assert equalize(model, x) == [("conv", "fc")]
    assert torch.allclose(model(x), expected, rtol=1e-4, atol=1e-5)
    assert torch.allclose(output_ranges(model.conv), input_ranges(model.fc, 4), rtol=1e-4)
