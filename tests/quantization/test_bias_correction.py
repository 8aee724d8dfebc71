"""Empirical bias correction: the mean output error per channel goes to ~0 (convolutions, Linear
layers, kept BatchNorms), a bias is created where there was none, and a briefly trained digits
CNN with 4-bit weights loses no accuracy to it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from torchslim.core.errors import UserError
from torchslim.data import BatchLoader, load_digits
from torchslim.models import create_model
from torchslim.quantization import QuantConfig, quantize
from torchslim.quantization.bias_correction import (
    correct_bias,
    ensure_biases,
    mean_output_error,
    quantized_layers,
)
from torchslim.train import TrainConfig, Trainer, evaluate


def positive_batches(count: int, seed: int, shape=(16, 4, 8, 8)) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(*shape, generator=generator) for _ in range(count)]


def per_channel_error(float_model, quantized, batches) -> torch.Tensor:
    """|mean over the data of quantized - float| per output channel of the model's output."""
    with torch.no_grad():
        diff = [quantized(x) - float_model(x) for x in batches]
    return torch.cat(diff).mean(dim=(0, 2, 3)).abs()


def biased_conv() -> nn.Module:
    """A conv with positive weights and no bias: with positive inputs, 3-bit rounding shifts
    every output channel (the errors do not average out)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(4, 6, 3, padding=1, bias=False)).eval()
    with torch.no_grad():
        model[0].weight.uniform_(0.0, 1.0)
    return model


def test_correction_removes_the_mean_error_of_each_channel_and_creates_a_bias():
    model = biased_conv()
    calibration, held_out = positive_batches(4, seed=1), positive_batches(4, seed=2)
    config = QuantConfig(weight_bits=3, per_channel=False, observer="minmax")
    quantized = quantize(model, config, calibration, torch.zeros(1, 4, 8, 8))
    before = per_channel_error(model, quantized, held_out)
    assert before.min() > 0.02  # every channel is shifted
    corrections = correct_bias(model, quantized, calibration)
    assert set(corrections) == {"0"} and corrections["0"] > 0.05
    assert quantized[0].layer.bias is not None and model[0].bias is None
    after = per_channel_error(model, quantized, held_out)
    assert after.max() < 0.05 * before.mean()
    # on the calibration batches themselves the means match up to the int32 bias grid
    assert mean_output_error(model, quantized, calibration)["0"] < 1e-3


def test_layers_are_corrected_in_order_with_the_earlier_corrections_in_their_inputs():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                          nn.Linear(32, 4)).eval()
    calibration = positive_batches(4, seed=4, shape=(64, 16))
    quantized = quantize(model, QuantConfig(weight_bits=3), calibration, torch.zeros(1, 16))
    before = mean_output_error(model, quantized, calibration)
    correct_bias(model, quantized, calibration, max_batches=4)
    after = mean_output_error(model, quantized, calibration)
    assert list(after) == ["0", "2", "4"]
    for name in after:  # every layer, the last included, matches the float means
        assert after[name] < 0.02 * before[name] + 1e-4


def test_a_kept_batchnorm_takes_the_correction():
    torch.manual_seed(5)
    model = nn.Sequential(nn.Conv2d(4, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU()).eval()
    with torch.no_grad():
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.5, 2.0)
    calibration = positive_batches(3, seed=6)
    config = QuantConfig(weight_bits=3, fold_bn=False, observer="minmax")
    quantized = quantize(model, config, calibration, torch.zeros(1, 4, 8, 8))
    before = mean_output_error(model, quantized, calibration)["0"]
    correct_bias(model, quantized, calibration)
    assert mean_output_error(model, quantized, calibration)["0"] < 0.02 * before


def test_the_float_model_must_be_the_one_that_was_quantized():
    model = biased_conv()
    calibration = positive_batches(2, seed=1)
    quantized = quantize(model, QuantConfig(), calibration, torch.zeros(1, 4, 8, 8))
    other = biased_conv()
    with torch.no_grad():
        other[0].weight.mul_(2)
    with pytest.raises(UserError, match="pass the float model the quantized model was made"):
        correct_bias(other, quantized, calibration)
    with pytest.raises(UserError, match="no layers with quantized weights"):
        correct_bias(model, model, calibration)
    with pytest.raises(UserError, match="got no batches"):
        correct_bias(model, quantized, [])
    quantized.get_submodule("0.weight_quantizer").start()  # as in quantization-aware training
    with pytest.raises(UserError, match="still observing"):
        correct_bias(model, quantized, calibration)


def test_ensure_biases_adds_zero_biases_that_change_nothing():
    model = biased_conv()
    quantized = quantize(model, QuantConfig(), positive_batches(2, seed=1),
                         torch.zeros(1, 4, 8, 8))
    x = positive_batches(1, seed=3)[0]
    expected = quantized(x)
    assert ensure_biases(quantized) == ["0"] and ensure_biases(quantized) == []
    assert torch.equal(quantized(x), expected)
    assert "0.layer.bias" in quantized.state_dict()


@pytest.fixture(scope="module")
def digits_model():
    torch.manual_seed(0)
    train = BatchLoader(load_digits("train"), 64, shuffle=True, normalization="digits")
    model = create_model("demo_cnn")
    Trainer(model, train, TrainConfig(epochs=3, lr=0.05, device="cpu"), progress=False).fit()
    return model.eval()


def test_a_digits_cnn_with_4_bit_weights_loses_nothing_to_the_correction(digits_model):
    calibration = list(BatchLoader(load_digits("train"), 128, normalization="digits"))[:4]
    test = list(BatchLoader(load_digits("test"), 450, normalization="digits"))
    config = QuantConfig(weight_bits=4, per_channel=False, observer="minmax")
    quantized = quantize(digits_model, config, calibration, torch.zeros(1, 1, 8, 8))
    plain_top1 = evaluate(quantized, test, 10).top1
    plain_error = mean_output_error(digits_model, quantized, test)
    corrections = correct_bias(digits_model, quantized, calibration)
    assert set(corrections) == set(quantized_layers(quantized)) == set(plain_error)
    corrected_error = mean_output_error(digits_model, quantized, test)
    assert evaluate(quantized, test, 10).top1 >= plain_top1
    for name, error in corrected_error.items():  # measured on the test split, not calibration
        assert error < 0.5 * plain_error[name]
