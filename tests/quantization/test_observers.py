"""Observers and quantization parameters against values computed by hand."""

from __future__ import annotations

import pytest
import torch

from torchslim.core.errors import UserError
from torchslim.quantization import (
    HistogramObserver,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MSEObserver,
    PercentileObserver,
    QuantSpec,
    fake_quantize,
    make_observer,
    qparams,
)


def test_affine_uint8_scale_and_zero_point():
    scale, zero = qparams(torch.tensor(-1.0), torch.tensor(3.0), QuantSpec(bits=8))
    assert torch.isclose(scale, torch.tensor(4.0 / 255)) and int(zero) == 64  # round(255/4)


def test_range_is_widened_to_contain_zero():
    scale, zero = qparams(torch.tensor(0.5), torch.tensor(2.0), QuantSpec(bits=4))
    assert torch.isclose(scale, torch.tensor(2.0 / 15)) and int(zero) == 0


def test_symmetric_signed_and_unsigned():
    spec = QuantSpec.weights(per_channel=False)
    scale, zero = qparams(torch.tensor(-0.5), torch.tensor(2.0), spec)
    assert torch.isclose(scale, torch.tensor(2.0 / 127)) and int(zero) == 0  # [-127, 127]
    unsigned = QuantSpec(8, signed=False, symmetric=True)
    assert int(qparams(torch.tensor(-1.0), torch.tensor(1.0), unsigned)[1]) == 128


def test_scale_multiplier_centred_at_zero_or_at_the_minimum():
    lo, hi, spec = torch.tensor(-1.0), torch.tensor(3.0), QuantSpec()
    scale, zero = qparams(lo, hi, spec, multiplier=0.5)
    assert torch.isclose(scale, torch.tensor(2.0 / 255)) and int(zero) == 64
    scale, zero = qparams(lo, hi, spec, multiplier=0.6, center="min")
    assert int(zero) == 106  # round(0 - (-1) / (0.6 * 4 / 255)) = round(106.25)


@pytest.mark.parametrize("bits", [1, 9, 3.5])
def test_unsupported_bit_widths_are_user_errors(bits):
    with pytest.raises(UserError, match="bit width must be a whole number from 2 to 8"):
        QuantSpec(bits=bits)


def test_fake_quantize_round_trip_of_known_values():
    spec = QuantSpec(bits=2)  # 4 levels: 0, 1, 2, 3 at scale 0.5
    x = torch.tensor([-1.0, 0.0, 0.2, 0.3, 0.74, 1.2, 9.0])
    out = fake_quantize(x, torch.tensor(0.5), torch.tensor(0, dtype=torch.int32), spec)
    assert out.tolist() == [0.0, 0.0, 0.0, 0.5, 0.5, 1.0, 1.5]


def test_min_max_and_per_channel_ranges():
    observer = MinMaxObserver()
    observer(torch.tensor([[-2.0, 1.0]]))
    observer(torch.tensor([[0.5, 4.0]]))
    assert [float(v) for v in observer.range()] == [-2.0, 4.0]
    per_channel = MinMaxObserver(axis=0)
    per_channel(torch.tensor([[1.0, -3.0], [2.0, 5.0]]))
    lo, hi = per_channel.range()
    assert lo.tolist() == [-3.0, 0.0 + 2.0] and hi.tolist() == [1.0, 5.0]


def test_moving_average_follows_batches_by_momentum():
    observer = MovingAverageMinMaxObserver(momentum=0.5)
    observer(torch.tensor([0.0, 4.0]))
    observer(torch.tensor([-2.0, 8.0]))
    assert [float(v) for v in observer.range()] == [-1.0, 6.0]


def test_percentile_clips_the_outliers():
    values = torch.cat([torch.linspace(0, 1, 100_000), torch.tensor([50.0])])
    observer = PercentileObserver(99.9)
    observer(values)
    lo, hi = observer.range()
    assert float(lo) <= 0.01 and 0.99 <= float(hi) < 1.1


def test_histogram_range_clips_a_rare_outlier_when_that_lowers_the_error():
    torch.manual_seed(0)
    values = torch.cat([torch.randn(1_000_000), torch.tensor([50.0])])
    histogram, minmax = HistogramObserver(), MinMaxObserver()
    for chunk in values.chunk(4):
        histogram(chunk)
        minmax(chunk)
    lo, hi = histogram.range()
    assert float(lo) < -3 and 3 < float(hi) < 10

    def error(observer):
        scale, zero = observer.qparams(QuantSpec())
        return (fake_quantize(values, scale, zero, QuantSpec()) - values).pow(2).mean()

    assert error(histogram) < 0.75 * error(minmax)


def test_mse_observer_shrinks_the_range_when_it_lowers_the_error():
    torch.manual_seed(0)
    values = torch.cat([torch.randn(50_000), torch.tensor([30.0])])
    observer = MSEObserver(bits=4)
    observer(values)
    lo, hi = observer.range()
    assert float(hi) < 30.0 * 0.9


def test_observers_by_name_and_unknown_names():
    assert isinstance(make_observer("histogram", axis=0), MinMaxObserver)  # per tensor only
    with pytest.raises(UserError, match="unknown observer 'histgram'.*did you mean 'histogram'"):
        make_observer("histgram")
    with pytest.raises(UserError, match="has seen no data"):
        MinMaxObserver().qparams(QuantSpec())
