"""One small test per pattern the channel graph follows: the groups it finds, and that pruning
and thinning them keeps the outputs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.graph.helpers import prune_and_thin
from torchslim.core.errors import UserError
from torchslim.graph import Axis, build_graph
from torchslim.models.cifar_resnet import ChannelPadShortcut


def groups(model: nn.Module, shape: tuple[int, ...]) -> dict[str, int]:
    """Prunable group name -> channel count."""
    graph = build_graph(model, torch.zeros(1, *shape))
    return {g.name: len(g.channels) for g in graph.groups if g.prunable}


class Chain(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.c2, self.b2 = nn.Conv2d(8, 6, 3, padding=1), nn.BatchNorm2d(6)
        self.fc = nn.Linear(6, 4)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.b1(self.c1(x))), 2)
        x = F.relu(self.b2(self.c2(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def test_conv_bn_pool_linear_chain():
    assert groups(Chain(), (3, 8, 8)) == {"c1": 8, "c2": 6}
    result = prune_and_thin(Chain, (3, 8, 8), 0.5)
    assert result["model"].c2.in_channels == 4 and result["model"].fc.in_features == 3


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 1)
        self.a, self.b = nn.Conv2d(8, 4, 3, padding=1), nn.Conv2d(4, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = x + self.b(F.relu(self.a(x)))
        return self.head(x).mean((2, 3))


def test_residual_addition_ties_both_operands():
    graph = build_graph(Residual(), torch.zeros(1, 3, 4, 4))
    stream = graph.group("stem")
    assert set(stream.modules) == {"stem", "a", "b", "head"}
    assert stream.channels[5][Axis("b", "out", 8)] == (5,)
    prune_and_thin(Residual, (3, 4, 4))


class SqueezeExcite(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.se1, self.se2 = nn.Conv2d(8, 2, 1), nn.Conv2d(2, 8, 1)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        x = self.conv(x)
        w = F.adaptive_avg_pool2d(x, (1, 1))
        w = self.se2(self.se1(w) * self.se1(w).sigmoid()).sigmoid()
        return self.head(x * w).flatten(1)


def test_squeeze_excitation_gate_goes_with_its_channels():
    graph = build_graph(SqueezeExcite(), torch.zeros(1, 3, 4, 4))
    assert set(graph.group("conv").modules) == {"conv", "se1", "se2", "head"}
    assert set(graph.group("se1").modules) == {"se1", "se2"}
    prune_and_thin(SqueezeExcite, (3, 4, 4), 0.5)


class Concatenate(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 6, 1), nn.Conv2d(3, 4, 1)
        self.c = nn.Conv2d(10, 2, 1)

    def forward(self, x):
        return self.c(torch.cat([self.a(x), F.relu(self.b(x))], dim=1)).flatten(1)


def test_concatenation_places_channels_at_offsets():
    graph = build_graph(Concatenate(), torch.zeros(1, 3, 2, 2))
    c_in = Axis("c", "in", 10)
    assert [ch[c_in] for ch in graph.group("b").channels] == [(6 + i,) for i in range(4)]
    prune_and_thin(Concatenate, (3, 2, 2), 0.5)


class Split(nn.Module):
    """ShuffleNet V2's split, written with chunk, with computed slice bounds, and with split."""

    def __init__(self, how: str):
        super().__init__()
        self.how = how
        self.conv = nn.Conv2d(3, 8, 1)
        self.left, self.right = nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 1)

    def forward(self, x):
        x = self.conv(x)
        if self.how == "slices":
            half = x.size(1) // 2
            a, b = x[:, :half], x[:, half:]
        elif self.how == "split":
            a, b = x.split(x.size(1) // 2, dim=1)
        else:
            a, b = x.chunk(2, dim=1)
        return torch.cat([self.left(a), self.right(b)], 1).flatten(1)


@pytest.mark.parametrize("how", ["chunk", "slices", "split"])
def test_split_in_halves_removes_the_same_position_from_both(how):
    graph = build_graph(Split(how), torch.zeros(1, 3, 2, 2))
    assert graph.group("conv").channels[1][Axis("conv", "out", 8)] == (1, 5)
    prune_and_thin(lambda: Split(how), (3, 2, 2), 0.5)


class ConstantSlice(nn.Module):
    """A dual-path merge: constant channel bounds, rewritten by thinning."""

    def __init__(self):
        super().__init__()
        self.d = 4
        self.a, self.b = nn.Conv2d(3, 6, 1), nn.Conv2d(3, 6, 1)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        a, b = self.a(x), self.b(x)
        d = self.d
        return self.head(torch.cat([a[:, :d] + b[:, :d], a[:, d:], b[:, d:]], 1)).flatten(1)


class Holder(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = ConstantSlice()

    def forward(self, x):
        return self.block(x)


def test_constant_channel_slices_are_rewritten_when_their_channels_go():
    result = prune_and_thin(Holder, (3, 2, 2), 0.5)
    assert "block" in result["record"]["rewrites"]
    assert "channel_select" in result["model"].block.code


def test_constant_slice_in_the_models_own_forward_keeps_its_channels():
    graph = build_graph(ConstantSlice(), torch.zeros(1, 3, 2, 2))
    assert "selects channels by position" in graph.unprunable()["a"]
    assert "model's own forward" in graph.unprunable()["a"]


class LambdaLayer(nn.Module):
    def __init__(self, function):
        super().__init__()
        self.function = function

    def forward(self, x):
        return self.function(x)


class PadShortcut(nn.Module):
    """A down-sampling block with a zero-padding shortcut (CIFAR ResNet option A)."""

    def __init__(self, as_lambda: bool):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 1)
        self.conv = nn.Conv2d(4, 8, 3, stride=2, padding=1)
        self.shortcut = (
            LambdaLayer(lambda x: F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 2, 2), "constant", 0))
            if as_lambda else ChannelPadShortcut(4, 8, 2)
        )
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        x = self.stem(x)
        return self.head(F.relu(self.conv(x) + self.shortcut(x)).mean((2, 3)))


@pytest.mark.parametrize("as_lambda", [False, True])
def test_zero_padding_shortcut_is_recognised_from_its_pad_call(as_lambda):
    graph = build_graph(PadShortcut(as_lambda), torch.zeros(1, 3, 4, 4))
    carried = graph.group("stem")  # stem channel i is position 2 + i of the block's output
    assert [c[Axis("conv", "out", 8)] for c in carried.channels] == [(2,), (3,), (4,), (5,)]
    padded = graph.group("conv")
    assert sorted(c[Axis("conv", "out", 8)][0] for c in padded.channels) == [0, 1, 6, 7]
    result = prune_and_thin(lambda: PadShortcut(as_lambda), (3, 4, 4), 0.5)
    assert list(result["record"]["rewrites"]) == ["shortcut"]


class Shuffle(nn.Module):
    def __init__(self, functional: bool):
        super().__init__()
        self.functional = functional
        self.a = nn.Conv2d(3, 8, 1)
        self.b = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        x = self.a(x)
        if self.functional:
            x = F.channel_shuffle(x, 2)
        else:
            n, c, h, w = x.size()
            x = x.view(n, 2, c // 2, h, w).permute(0, 2, 1, 3, 4).reshape(n, c, h, w)
        return self.b(x).flatten(1)


@pytest.mark.parametrize("functional", [False, True])
def test_channel_shuffle_removes_the_same_position_from_every_group(functional):
    graph = build_graph(Shuffle(functional), torch.zeros(1, 3, 2, 2))
    assert graph.group("a").channels[0][Axis("a", "out", 8)] == (0, 4)
    prune_and_thin(lambda: Shuffle(functional), (3, 2, 2), 0.5)


class Grouped(nn.Module):
    """A ResNeXt-style grouped convolution and a depthwise one with a channel multiplier."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 1)
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=4)
        self.depthwise = nn.Conv2d(8, 16, 3, padding=1, groups=8)
        self.head = nn.Conv2d(16, 2, 1)

    def forward(self, x):
        return self.head(self.depthwise(self.grouped(self.a(x)))).flatten(1)


def test_grouped_convolutions_keep_every_group_the_same_width():
    graph = build_graph(Grouped(), torch.zeros(1, 3, 4, 4))
    # an input position of the grouped conv is one position within each of its 4 groups
    assert graph.group("a").channels[1][Axis("a", "out", 8)] == (1, 3, 5, 7)
    # its output position 0 of each group goes together; the depthwise conv passes each of
    # those channels on to its 2 outputs
    assert graph.group("grouped").channels[0][Axis("grouped", "out", 8)] == (0, 2, 4, 6)
    assert graph.group("grouped").channels[0][Axis("depthwise", "out", 16)] == (
        0, 1, 4, 5, 8, 9, 12, 13
    )
    model = prune_and_thin(Grouped, (3, 4, 4), 0.5)["model"]
    grouped = model.grouped
    assert (grouped.groups, grouped.in_channels, grouped.out_channels) == (4, 4, 4)
    assert model.depthwise.groups == model.depthwise.in_channels == 4


class Transposed(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv1d(3, 6, 3, padding=1)
        self.up = nn.ConvTranspose1d(6, 4, 2, stride=2)
        self.b = nn.Conv1d(4, 2, 1)

    def forward(self, x):
        return self.b(F.relu(self.up(F.relu(self.a(x))))).flatten(1)


def test_conv1d_and_transposed_convolution():
    assert groups(Transposed(), (3, 8)) == {"a": 6, "up": 4}
    model = prune_and_thin(Transposed, (3, 8), 0.5)["model"]
    assert model.up.weight.shape[:2] == (3, 2)


class ChannelsLastMLP(nn.Module):
    """Features last: permute, LayerNorm and Linear over the channels, permute back."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1)
        self.norm = nn.LayerNorm(8)
        self.fc1, self.fc2 = nn.Linear(8, 12), nn.Linear(12, 8)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        y = self.conv(x).permute(0, 2, 3, 1)
        y = self.fc2(F.gelu(self.fc1(self.norm(y))))
        return self.head(y.permute(0, 3, 1, 2)).flatten(1)


def test_permute_layernorm_and_linear_over_the_last_dimension():
    graph = build_graph(ChannelsLastMLP(), torch.zeros(1, 3, 2, 2))
    assert groups(ChannelsLastMLP(), (3, 2, 2)) == {"conv": 8, "fc1": 12, "fc2": 8}
    assert graph.group("conv").approximate == {"norm": "LayerNorm statistics run over the channels"}
    assert "approximately" in graph.prunable_report()
    prune_and_thin(ChannelsLastMLP, (3, 2, 2), 0.25, tolerance=float("inf"))


class Normed(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 1)
        self.gn = nn.GroupNorm(2, 8)
        self.act = nn.PReLU(8)
        self.b = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        return self.b(self.act(self.gn(self.a(x)))).flatten(1)


def test_group_norm_keeps_its_groups_equal_and_prelu_slices_its_slopes():
    graph = build_graph(Normed(), torch.zeros(1, 3, 2, 2))
    assert graph.group("a").channels[0][Axis("gn", "out", 8)] == (0, 4)
    model = prune_and_thin(Normed, (3, 2, 2), 0.5, tolerance=float("inf"))["model"]
    assert model.gn.num_channels == 4 and model.act.weight.shape == (4,)


class Embed(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 8)
        self.fc = nn.Linear(8, 3)

    def forward(self, tokens):
        return self.fc(self.embed(tokens)).mean(1)


def test_embedding_features_feed_a_linear_layer():
    graph = build_graph(Embed(), torch.zeros(1, 5, dtype=torch.long))
    assert {g.name: len(g.channels) for g in graph.groups if g.prunable} == {"embed": 8}
    model = Embed()
    thinned = graph.group("embed")
    assert thinned.modules == ["embed", "fc"]
    assert model.embed.weight.shape == (10, 8)


class PixelShuffle(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 1)
        self.b = nn.Conv2d(2, 2, 1)

    def forward(self, x):
        return self.b(F.pixel_shuffle(self.a(x), 2)).flatten(1)


def test_pixel_shuffle_ties_the_channels_of_one_output_channel():
    graph = build_graph(PixelShuffle(), torch.zeros(1, 3, 2, 2))
    assert graph.group("a").channels[1][Axis("a", "out", 8)] == (4, 5, 6, 7)
    prune_and_thin(PixelShuffle, (3, 2, 2), 0.5)


class Roll(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 4, 1)
        self.c = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return self.c(self.b(torch.roll(self.a(x), 1, dims=1))).flatten(1)


def test_an_unknown_op_freezes_its_channels_and_says_why():
    graph = build_graph(Roll(), torch.zeros(1, 3, 2, 2))
    assert "function roll(): the graph does not know" in graph.unprunable()["a"]
    assert [g.name for g in graph.groups if g.prunable] == ["b"]
    prune_and_thin(Roll, (3, 2, 2), 0.5)


class DirectTensor(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 1)
        self.offset = nn.Parameter(torch.zeros(1, 4, 1, 1))
        self.b = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return self.b(self.a(x) + self.offset).flatten(1)


def test_a_parameter_used_directly_freezes_its_channels():
    reason = build_graph(DirectTensor(), torch.zeros(1, 3, 2, 2)).unprunable()["a"]
    assert "tensor 'offset' of the model is used directly" in reason


class HardCodedView(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 4 * 4, 2)

    def forward(self, x):
        return self.fc(self.conv(x).view(-1, 64))


def test_a_view_that_hard_codes_the_channel_count_freezes_them():
    reason = build_graph(HardCodedView(), torch.zeros(1, 1, 4, 4)).unprunable()["conv"]
    assert reason.startswith("method .view() hard-codes 64")


class SizeArithmetic(nn.Module):
    """``int()`` of a traced size: torch.fx fails, torch.export traces it."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 1)
        self.left, self.right = nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 1)

    def forward(self, x):
        x = self.a(x)
        c = int(x.size(1) * 0.5)
        return torch.cat([self.left(x[:, :c]), self.right(x[:, c:])], 1).flatten(1)


def test_torch_export_traces_what_fx_cannot():
    graph = build_graph(SizeArithmetic(), torch.zeros(1, 3, 2, 2))
    assert graph.frontend == "export"
    assert graph.group("a").channels[0][Axis("a", "out", 8)] == (0, 4)
    prune_and_thin(SizeArithmetic, (3, 2, 2), 0.5)


def test_a_model_neither_tracer_can_follow_is_a_user_error():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 1)

        def forward(self, x):
            return self.conv(x) if x.sum() > 0 else x

    with pytest.raises(UserError, match="cannot trace Branchy: torch.fx failed .* torch.export"):
        build_graph(Branchy(), torch.ones(1, 1, 2, 2))
    with pytest.raises(UserError, match="does not run on an example input of shape"):
        build_graph(Chain(), torch.zeros(1, 1, 8, 8))


def test_model_input_and_output_channels_stay():
    assert build_graph(Chain(), torch.zeros(1, 3, 8, 8)).unprunable() == {
        "c1:in": "model input", "fc": "model output"
    }


class OwnPad(nn.Module):
    """A channel pad in the model's own forward, which thinning cannot rewrite."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 1)
        self.b = nn.Conv2d(4, 6, 1)
        self.head = nn.Conv2d(6, 2, 1)

    def forward(self, x):
        x = self.a(x)
        return self.head(self.b(x) + F.pad(x, (0, 0, 0, 0, 1, 1))).flatten(1)


def test_a_pad_thinning_cannot_rewrite_keeps_only_its_padded_channels():
    graph = build_graph(OwnPad(), torch.zeros(1, 3, 2, 2))
    assert "function pad() pads channels (it is in the model's own forward" in (
        graph.unprunable()["b"]
    )
    assert sorted(c[Axis("b", "out", 6)][0] for c in graph.group("a").channels) == [1, 2, 3, 4]
    prune_and_thin(OwnPad, (3, 2, 2), 0.5)


class ChannelMean(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(4, 2, 1)

    def forward(self, x):
        x = self.a(x)
        return self.b(x * x.mean(1, keepdim=True).sigmoid()).flatten(1)


def test_a_reduction_over_the_channels_freezes_them():
    reason = build_graph(ChannelMean(), torch.zeros(1, 3, 2, 2)).unprunable()["a"]
    assert "method .mean(): it reduces over the channels" in reason
