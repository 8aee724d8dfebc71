"""Placing quantizers in a traced model, calibrating, freezing, excluding, saving and reloading."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torchslim.core.errors import UserError
from torchslim.core.storage import save_compressed
from torchslim.models import create_model, load_weights
from torchslim.quantization import (
    QuantConfig,
    QuantConv,
    SharedQuantize,
    activation_quantizers,
    prepare,
    quantize,
    weight_quantizers,
)
from torchslim.quantization.fake import ClippedLinear, PACTQuantize, WRPNWeight
from torchslim.quantization.record import quantization_record


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        x = F.relu(self.bn(self.stem(x)))
        x = F.max_pool2d(x, 2)
        y = F.relu(self.conv(x) + x)
        return self.head(F.adaptive_avg_pool2d(y, 1).flatten(1))


def calibration(count=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(8, 3, 8, 8, generator=generator) for _ in range(count)]


def test_quantizers_sit_where_an_int8_runtime_requantizes():
    model = prepare(Block().eval(), torch.zeros(1, 3, 8, 8), QuantConfig())
    placed = activation_quantizers(model)
    # the input; the stem's ReLU (BatchNorm folded, activation fused); the pooled values share
    # the stem's grid; the conv before the addition; the addition's ReLU; the average pool and
    # the flatten sharing its grid; the head's output stays float
    assert set(placed) == {"x", "relu", "max_pool2d", "conv", "relu_1", "adaptive_avg_pool2d",
                           "flatten"}
    assert isinstance(placed["max_pool2d"], SharedQuantize)
    assert placed["max_pool2d"].source is placed["relu"]
    assert set(weight_quantizers(model)) == {"stem", "conv", "head"}
    assert isinstance(model.bn, nn.Identity) and isinstance(model.stem, QuantConv)


def test_quantized_model_tracks_the_float_model_and_the_original_is_untouched():
    torch.manual_seed(0)
    model = Block().eval()
    config = QuantConfig(observer="minmax")
    quantized = quantize(model, config, calibration(), torch.zeros(1, 3, 8, 8))
    x = calibration(1, seed=1)[0]
    with torch.no_grad():
        error = (quantized(x) - model(x)).abs().max() / model(x).abs().max()
    assert error < 0.05
    assert isinstance(model.bn, nn.BatchNorm2d)  # a copy was quantized


def test_in_place_preparation_keeps_the_model_object_and_its_parameters():
    model = Block().eval()
    stem_weight = model.conv.weight
    prepare(model, torch.zeros(1, 3, 8, 8), QuantConfig(fold_bn=False), inplace=True)
    assert model.conv.layer.weight is stem_weight
    assert type(model).__name__ == "Block" and "quant_x" in dict(model.named_children())


def test_excluded_layers_stay_in_float_and_unknown_names_are_user_errors():
    model = prepare(Block().eval(), torch.zeros(1, 3, 8, 8), QuantConfig(exclude=("conv",)))
    assert isinstance(model.conv, nn.Conv2d) and "conv" not in weight_quantizers(model)
    with pytest.raises(UserError, match="layer 'convv' to keep in float matches no layer"
                       r".*did you mean 'conv'"):
        prepare(Block().eval(), torch.zeros(1, 3, 8, 8), QuantConfig(exclude=("convv",)))


def test_a_float_region_ends_at_the_next_quantized_layer():
    """Excluding one convolution of a ResNet block leaves that block's addition in float and
    quantizes again where the next block reads it; the rest of the model is as before."""
    model, x = create_model("cifar_resnet20").eval(), torch.zeros(1, 3, 32, 32)
    full = activation_quantizers(prepare(model, x, QuantConfig()))
    kept = prepare(model, x, QuantConfig(exclude=("layer1.0.conv2",)))
    assert set(full) - set(activation_quantizers(kept)) == {"layer1_0_conv2"}
    assert set(activation_quantizers(kept)) <= set(full)
    code = kept._quantized_forward.code
    assert "add = layer1_0_bn2 + quant_relu" in code  # the float addition
    assert "layer1_1_conv1 = getattr(self.layer1, \"1\").conv1(quant_relu_2)" in code


class FloatEdges(nn.Module):
    """A float region whose value a quantized layer reads, the model returns, and whose shape
    another value's view uses."""

    def __init__(self):
        super().__init__()
        self.first = nn.Conv2d(3, 4, 1)
        self.second = nn.Conv2d(4, 4, 1)
        self.other = nn.Conv2d(3, 4, 1)

    def forward(self, x):
        f = torch.relu(self.first(x))
        g = self.other(x).reshape(f.size(0), -1)
        return self.second(f), f, g


def test_a_float_region_stays_float_where_returned_and_shapes_do_not_spread_it():
    torch.manual_seed(0)
    model, x = FloatEdges().eval(), torch.randn(2, 3, 4, 4)
    quantized = quantize(model, QuantConfig(exclude=("first",)), [x], x[:1])
    quantizers = activation_quantizers(quantized)
    assert "relu" in quantizers  # where `second` reads the float region
    assert isinstance(quantizers["reshape"], SharedQuantize)  # the grid of `other`'s output
    with torch.no_grad():
        _, f, _ = quantized(x)
        # returned as computed, not rounded to the grid `second` reads it on
        expected = torch.relu(quantized.first(quantized.quant_x(x)))
        assert torch.equal(f, expected)
        assert not torch.equal(quantized.quant_relu(expected), expected)


def test_bad_inputs_are_user_errors():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)

        def forward(self, x):
            return self.conv(x) if x.sum() > 0 else x

    with pytest.raises(UserError, match="cannot trace Branchy with torch.fx"):
        prepare(Branchy(), torch.zeros(1, 3, 4, 4))
    with pytest.raises(UserError, match="calibration data yielded no batches"):
        quantize(Block().eval(), QuantConfig(), [], torch.zeros(1, 3, 8, 8))
    with pytest.raises(UserError, match="weight_bits must be a whole number from 2 to 8"):
        QuantConfig(weight_bits=16)
    with pytest.raises(UserError, match="already quantized"):
        prepare(prepare(Block(), torch.zeros(1, 3, 8, 8)), torch.zeros(1, 3, 8, 8))


def test_a_quantized_model_saves_and_reloads_with_weights_only(tmp_path):
    model = create_model("demo_cnn").eval()
    batches = [torch.randn(8, 1, 8, 8) for _ in range(3)]
    quantized = quantize(model, QuantConfig(weight_bits=4), batches, torch.zeros(1, 1, 8, 8))
    path = tmp_path / "quantized.pt"
    save_compressed(quantized, path, meta={"edits": [quantization_record(quantized)]})
    fresh = load_weights(create_model("demo_cnn"), path)
    x = torch.randn(4, 1, 8, 8)
    assert torch.equal(fresh.eval()(x), quantized(x))
    weights = fresh.features[1][0].quantized_weight()
    assert len(torch.unique(weights[0])) <= 16  # 4-bit weights


def test_equalization_and_bias_correction_through_the_config_and_reload(tmp_path):
    torch.manual_seed(0)
    model = create_model("demo_cnn").eval()
    batches = [torch.randn(16, 1, 8, 8) for _ in range(3)]
    plain = quantize(model, QuantConfig(weight_bits=4), batches, torch.zeros(1, 1, 8, 8))
    config = QuantConfig(weight_bits=4, equalize=True, bias_correction=True)
    refined = quantize(model, config, iter(batches), torch.zeros(1, 1, 8, 8))
    assert model.features[0][1].__class__ is nn.BatchNorm2d  # the original is untouched
    x = torch.cat(batches)
    with torch.no_grad():
        reference = model(x)
        error_plain = (plain(x) - reference).mean(0).abs().mean()
        error_refined = (refined(x) - reference).mean(0).abs().mean()
    assert error_refined < error_plain
    assert refined.features[0][0].layer.bias is not None  # bias correction created one
    path = tmp_path / "refined.pt"
    save_compressed(refined, path, meta={"edits": [quantization_record(refined)]})
    fresh = load_weights(create_model("demo_cnn"), path)
    assert torch.equal(fresh.eval()(x), refined(x))
    with pytest.raises(UserError, match="refine post-training quantization"):
        QuantConfig(method="lsq", bias_correction=True)
    with pytest.raises(UserError, match="fold_bn=True"):
        QuantConfig(equalize=True, fold_bn=False)


def test_equalized_model_with_an_excluded_layer_reloads(tmp_path):
    model = create_model("demo_cnn").eval()
    batches = [torch.randn(8, 1, 8, 8) for _ in range(2)]
    config = QuantConfig(equalize=True, exclude=("features.0.0",))
    quantized = quantize(model, config, batches, torch.zeros(1, 1, 8, 8))
    path = tmp_path / "q.pt"
    save_compressed(quantized, path, meta={"edits": [quantization_record(quantized)]})
    fresh = load_weights(create_model("demo_cnn"), path)
    x = torch.randn(4, 1, 8, 8)
    assert torch.equal(fresh.eval()(x), quantized(x))


def test_models_holding_five_dimensional_weights_calibrate():
    class Volume(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv3d(3, 4, (1, 3, 3), padding=(0, 1, 1))
            self.head = nn.Linear(4 * 64, 2)

        def forward(self, x):
            return self.head(F.relu(self.conv(x.unsqueeze(2))).flatten(1))

    quantized = quantize(Volume().eval(), QuantConfig(observer="minmax"),
                         [torch.randn(4, 3, 8, 8)], torch.zeros(1, 3, 8, 8))
    assert quantized(torch.randn(2, 3, 8, 8)).shape == (2, 2)


def test_weight_ranges_follow_the_weights_as_training_moves_them():
    # A range that only grew kept the grid of the largest weights ever seen: after the
    # weights shrank tenfold, 4-bit weights used 3 of their 15 levels.
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU())
    prepared = prepare(model, torch.zeros(1, 1, 6, 6),
                       QuantConfig(weight_bits=4, observer="moving_average"))
    prepared.train()
    for quantizer in [*weight_quantizers(prepared).values(),
                      *activation_quantizers(prepared).values()]:
        quantizer.start()
    prepared(torch.rand(2, 1, 6, 6))
    quantizer = next(iter(weight_quantizers(prepared).values()))
    first = quantizer.scale.clone()
    with torch.no_grad():
        prepared[0].layer.weight.mul_(0.1)
    prepared(torch.rand(2, 1, 6, 6))
    assert torch.allclose(quantizer.scale, first * 0.1)


@pytest.mark.parametrize("per_channel,signed", [(False, True), (True, False)])
def test_the_weight_mse_search_runs_on_the_weights_own_grid(per_channel, signed):
    config = QuantConfig(weight_bits=4, weight_observer="mse", per_channel=per_channel,
                         signed_weights=signed)
    prepared = prepare(nn.Sequential(nn.Linear(8, 8)), torch.zeros(1, 8), config)
    observer = next(iter(weight_quantizers(prepared).values())).observer
    assert observer.spec == config.weight_spec()


@pytest.mark.parametrize("method", ["static", "lsq", "pact", "dorefa", "wrpn"])
def test_quantizers_are_made_on_the_models_device(method):
    # The "meta" device stands in for a GPU: a quantizer left on the CPU fails there.
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(),
                          nn.Linear(8 * 6 * 6, 4)).to("meta")
    config = QuantConfig(method=method, fold_bn=False, observer="histogram")
    prepared = prepare(model, torch.zeros(1, 3, 8, 8, device="meta"), config)
    quantizers = [*weight_quantizers(prepared).values(),
                  *activation_quantizers(prepared).values()]
    tensors = [t for q in quantizers for t in [*q.buffers(), *q.parameters()]]
    assert tensors and {t.device.type for t in tensors} == {"meta"}
    fixed = [q for q in quantizers if isinstance(q, ClippedLinear | WRPNWeight | PACTQuantize)]
    assert bool(fixed) == (method != "static" and method != "lsq")
    for quantizer in fixed:  # their grids are constants (PACT's: the clipping level)
        assert {t.device.type for t in quantizer.qparams()} == {"meta"}
