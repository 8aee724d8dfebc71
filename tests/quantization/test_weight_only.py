"""Weight-only storage: error bounds, exact bit packing, real file sizes, safe reloading."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from torchslim.core.errors import UserError
from torchslim.models import create_model
from torchslim.quantization.weight_only import (
    FORMAT,
    PackedWeight,
    load_weight_only,
    pack_bits,
    quantize_weights,
    read_weight_only,
    save_weight_only,
    select_weights,
    unpack_bits,
)

# half a step, plus float32 rounding: near the grid's ends, w / scale (about 127) is off by up
# to 128 ulps of the step (relative 128 * 2**-23 = 1.5e-5)
SLACK = 1 + 1e-4


def assert_scales_follow_the_maxima(scale: torch.Tensor, maxima: torch.Tensor, q_max: int):
    """One scale per block, proportional to the block's largest |w|: max |w| / scale is the
    same for every block and between q_max (restricted grid) and q_max + 1/2 (full grid)."""
    ratio = maxima / scale
    torch.testing.assert_close(ratio, torch.full_like(ratio, float(ratio[0])))
    assert q_max - 1e-4 <= float(ratio[0]) <= q_max + 0.5 + 1e-4


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 512), nn.ReLU(),
                         nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 10)).eval()


def cnn() -> nn.Module:
    torch.manual_seed(0)
    model = create_model("demo_cnn").eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so they must be stored exactly
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    return model


def state_dict_bytes(model: nn.Module, tmp_path) -> int:
    path = tmp_path / "fp32.pt"
    torch.save(model.state_dict(), path)
    return path.stat().st_size


def test_8bit_is_per_output_channel_and_within_half_a_step():
    model = cnn()
    packed = quantize_weights(model, bits=8)
    assert list(packed) == ["features.0.0.weight", "features.1.0.weight", "features.3.0.weight",
                            "classifier.weight"]
    state = model.state_dict()
    for name, weight in packed.items():
        w = state[name]
        rows = w.reshape(w.shape[0], -1)
        assert weight.data.dtype == torch.int8 and weight.data.shape == w.shape
        assert weight.scale.shape == (w.shape[0], 1)  # one scale per output channel
        assert_scales_follow_the_maxima(weight.scale[:, 0], rows.abs().amax(1), 127)
        error = (weight.dequantize() - w).abs()
        assert (error <= weight.scale_per_element() / 2 * SLACK).all(), name
        assert error.max() > 0  # it was really rounded


def test_4bit_groups_of_128_along_the_input_dimension():
    torch.manual_seed(1)
    layer = nn.Linear(300, 6)
    layer.weight.data[2, 5] = 3.0  # an outlier coarsens its own group only
    weight = quantize_weights(layer, bits=4)["weight"]
    assert weight.group_size == 128 and weight.scale.shape == (6, 3)  # 128 + 128 + 44
    w = layer.weight.detach()
    for first, last, column in ((0, 128, 0), (128, 256, 1), (256, 300, 2)):
        assert_scales_follow_the_maxima(weight.scale[:, column],
                                        w[:, first:last].abs().amax(1), 7)
    assert weight.scale[2, 0] > 5 * weight.scale[2, 1]
    assert ((weight.dequantize() - w).abs() <= weight.scale_per_element() / 2 * SLACK).all()


def test_4bit_values_unpack_exactly_to_what_was_quantized():
    torch.manual_seed(2)
    w = torch.randn(7, 5, 3, 3)  # 45 weights a row: odd counts, one group per row
    weight = PackedWeight.quantize(w, bits=4, group_size=None)
    expected = torch.clamp(torch.round(w.reshape(7, -1) / weight.scale), -8, 7).reshape(w.shape)
    assert weight.data.dtype == torch.uint8 and weight.data.numel() == math.ceil(w.numel() / 2)
    assert torch.equal(weight.values(), expected.to(torch.int16))
    assert weight.values().min() == -8 or weight.values().max() == 7  # the grid's ends are used


@pytest.mark.parametrize("bits", range(2, 9))
def test_bit_packing_round_trips_exactly(bits):
    generator = torch.Generator().manual_seed(bits)
    codes = torch.randint(0, 2**bits, (1001,), generator=generator, dtype=torch.uint8)
    packed = pack_bits(codes, bits)
    assert packed.dtype == torch.uint8 and packed.numel() == math.ceil(1001 * bits / 8)
    assert torch.equal(unpack_bits(packed, bits, 1001), codes)


def test_4bit_packing_puts_two_weights_in_a_byte_low_nibble_first():
    codes = torch.tensor([0x1, 0xA, 0xF, 0x0, 0x7], dtype=torch.uint8)
    assert pack_bits(codes, 4).tolist() == [0xA1, 0x0F, 0x07]


def test_files_are_a_quarter_and_an_eighth_of_float32(tmp_path):
    model = mlp()
    dense = state_dict_bytes(model, tmp_path)
    int8 = save_weight_only(model, tmp_path / "int8.pt", bits=8).stat().st_size
    int4 = save_weight_only(model, tmp_path / "int4.pt", bits=4).stat().st_size
    assert int8 < 0.27 * dense, (int8, dense)
    assert int4 < 0.16 * dense, (int4, dense)


def test_reload_under_weights_only_gives_the_dequantized_model(tmp_path):
    model = cnn()
    path = save_weight_only(model, tmp_path / "cnn.pt", bits=8, meta={"model": "demo_cnn"})
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert raw["format"] == FORMAT and raw["meta"] == {"model": "demo_cnn"}
    assert raw["weights"]["classifier.weight"]["data"].dtype == torch.int8
    restored = load_weight_only(create_model("demo_cnn"), path).eval()
    packed = quantize_weights(model, bits=8)
    for name, tensor in restored.state_dict().items():
        expected = packed[name].dequantize() if name in packed else model.state_dict()[name]
        assert torch.equal(tensor, expected), name  # biases and BatchNorm stored exactly
    x = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference, output = model(x), restored(x)
    assert (output - reference).norm() / reference.norm() < 0.02
    assert read_weight_only(path)[1] == {"model": "demo_cnn"}


def test_4bit_model_stays_close_to_float(tmp_path):
    model = mlp()
    restored = load_weight_only(mlp(), save_weight_only(model, tmp_path / "m.pt", bits=4))
    x = torch.randn(32, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference, output = model(x), restored(x)
    assert 0 < (output - reference).norm() / reference.norm() < 0.15


def test_include_and_exclude_select_weights_by_name_or_layer(tmp_path):
    model = cnn()
    assert select_weights(model, exclude=["classifier"]) == [
        "features.0.0.weight", "features.1.0.weight", "features.3.0.weight"]
    assert select_weights(model, include="features.1.*") == ["features.1.0.weight"]
    assert select_weights(model, include=[r"features\.[13]\.0\.weight"]) == [
        "features.1.0.weight", "features.3.0.weight"]
    path = save_weight_only(model, tmp_path / "m.pt", bits=4, exclude=["features.0.0"])
    restored = load_weight_only(create_model("demo_cnn"), path)
    assert torch.equal(restored.features[0][0].weight, model.features[0][0].weight)
    assert not torch.equal(restored.classifier.weight, model.classifier.weight)


@pytest.mark.parametrize("bits", [1, 9, 16, 4.0, "4", True])
def test_unsupported_bit_widths_are_user_errors(bits):
    with pytest.raises(UserError, match="2 to 8 bits per weight"):
        quantize_weights(nn.Linear(4, 4), bits=bits)


@pytest.mark.parametrize("group_size", [0, -128, 2.5, "128"])
def test_bad_group_sizes_are_user_errors(group_size):
    with pytest.raises(UserError, match="group_size is a whole number"):
        quantize_weights(nn.Linear(4, 4), bits=4, group_size=group_size)


def test_selection_mistakes_are_user_errors():
    with pytest.raises(UserError, match=r"include pattern 'clasifier' matches no .*classifier"):
        select_weights(cnn(), include=["clasifier"])
    with pytest.raises(UserError, match="exclude pattern 'head'"):
        select_weights(cnn(), exclude=["head"])
    with pytest.raises(UserError, match="has no Conv or Linear weight"):
        quantize_weights(nn.Sequential(nn.BatchNorm1d(4), nn.ReLU()))


def test_loading_mistakes_are_one_line_user_errors(tmp_path):
    path = save_weight_only(cnn(), tmp_path / "cnn.pt", bits=4)
    with pytest.raises(UserError, match="does not fit the model: .*missing keys") as info:
        load_weight_only(mlp(), path)
    assert "\n" not in str(info.value)
    wide = nn.Sequential(nn.Conv2d(1, 32, 3), nn.Linear(64, 10))
    small = save_weight_only(nn.Sequential(nn.Conv2d(1, 16, 3), nn.Linear(64, 10)),
                             tmp_path / "small.pt")
    with pytest.raises(UserError, match=r"'0.weight' has shape \(16, 1, 3, 3\) in the file"):
        load_weight_only(wide, small)
    plain = tmp_path / "plain.pt"
    torch.save(cnn().state_dict(), plain)
    with pytest.raises(UserError, match="not a torchslim weight-only file"):
        load_weight_only(cnn(), plain)
    with pytest.raises(UserError, match="not found"):
        load_weight_only(cnn(), tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="junk.pt"):
        load_weight_only(cnn(), tmp_path / "junk.pt")


def test_a_damaged_entry_is_a_user_error(tmp_path):
    path = save_weight_only(cnn(), tmp_path / "cnn.pt", bits=4)
    payload = torch.load(path, weights_only=True)
    payload["weights"]["classifier.weight"]["data"] = torch.zeros(3, dtype=torch.uint8)
    torch.save(payload, path)
    with pytest.raises(UserError, match="'classifier.weight' is damaged"):
        load_weight_only(cnn(), path)


def test_meta_must_be_json_like(tmp_path):
    with pytest.raises(UserError, match="JSON-like"):
        save_weight_only(cnn(), tmp_path / "m.pt", meta={"model": object()})
