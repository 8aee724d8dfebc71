"""Channel dependency graph and structured pruners (ranking, rounding, coupled groups)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torchslim.core.errors import UserError
from torchslim.graph import build_graph
from torchslim.models import create_model
from torchslim.pruning.masks import Masks
from torchslim.pruning.regularizers import BNGammaL1Regularizer
from torchslim.pruning.structured import (
    BNGammaPruner,
    ChannelNormPruner,
    FilterNormPruner,
    RandomChannelPruner,
    removal_count,
)


# -- toy models --------------------------------------------------------------------------------
class Tiny(nn.Module):
    """conv1 (2 -> 4) -> bn1 -> relu -> conv2 (4 -> 3) -> global pool: one prunable group."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 3, 1)

    def forward(self, x):
        return self.conv2(F.relu(self.bn1(self.conv1(x)))).mean((2, 3))


class CatNet(nn.Module):
    """Two branches concatenated along channels, then a flatten into a Linear."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 6, 3, padding=1)
        self.bna = nn.BatchNorm2d(6)
        self.b = nn.Conv2d(3, 4, 1)
        self.c = nn.Conv2d(10, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 4 * 4, 5)

    def forward(self, x):
        y = torch.cat([F.relu(self.bna(self.a(x))), F.relu(self.b(x))], dim=1)
        y = F.max_pool2d(F.relu(self.c(y)), 2)
        return self.fc(y.view(y.size(0), -1))


class DepthwiseNet(nn.Module):
    """Pointwise -> depthwise (channel multiplier 2) -> pointwise."""

    def __init__(self):
        super().__init__()
        self.pw1 = nn.Conv2d(3, 8, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 16, 3, padding=1, groups=8)
        self.bn2 = nn.BatchNorm2d(16)
        self.pw2 = nn.Conv2d(16, 6, 1)
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        x = F.relu6(self.bn1(self.pw1(x)))
        x = F.relu6(self.bn2(self.dw(x)))
        return self.head(self.pw2(x).mean((2, 3)))


class RollNet(nn.Module):
    """conv1's channels go through torch.roll, which the graph does not understand."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv3 = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        x = torch.roll(self.conv1(x), 1, dims=1)
        return self.conv3(F.relu(self.conv2(x))).flatten(1)


class AddNet(nn.Module):
    """Two convolutions added: their output channels form one coupled group."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 4, 1, bias=False)
        self.b = nn.Conv2d(1, 4, 1, bias=False)
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return self.head(self.a(x) + self.b(x)).flatten(1)


class TwoStage(nn.Module):
    """conv1 (1 -> 4) -> conv2 (4 -> 4) -> conv3 (4 -> 2): two independent groups of 4."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(4)
        self.conv3 = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        x = self.bn2(self.conv2(self.bn1(self.conv1(x))))
        return self.conv3(x).flatten(1)


def tiny_with_known_weights():
    """Filter norms of conv1: L1 (3, 4, 2, 2.5), L2 (3, 2.83, 1.41, 2.5); |gamma| (0.1, 5, 2, 0.3);
    input-channel L1 norms of conv2 (5, 1, 3, 0.5)."""
    model = Tiny()
    with torch.no_grad():
        filters = torch.tensor([[3.0, 0], [2, 2], [1, 1], [-2.5, 0]])
        model.conv1.weight.copy_(filters.view(4, 2, 1, 1))
        model.bn1.weight.copy_(torch.tensor([0.1, -5, 2, 0.3]))
        model.bn1.bias.fill_(0.5)
        columns = torch.tensor([5.0, 1, 3, 0.5]) / 3
        model.conv2.weight.copy_(columns.repeat(3, 1).view(3, 4, 1, 1))
    return model, build_graph(model, torch.zeros(1, 2, 4, 4))


def set_filter_norms(conv, norms):
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(norms, dtype=torch.float32).view(-1, 1, 1, 1))


# -- rounding ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("sparsity", "channels", "removed"),
    [(0.5, 16, 8), (0.25, 10, 3), (0.24, 10, 2), (0.15, 10, 2), (0.9, 3, 2), (0.99, 1, 0),
     (0.0, 8, 0), (0.7, 64, 45)],
)
def test_removal_count_rounds_half_up_and_keeps_at_least_one(sparsity, channels, removed):
    assert removal_count(sparsity, channels) == removed


@pytest.mark.parametrize("sparsity", [1.0, -0.1, 1.5])
def test_sparsity_outside_zero_to_one_is_a_user_error(sparsity):
    with pytest.raises(UserError, match="sparsity must be in"):
        FilterNormPruner(sparsity)


def test_high_sparsity_still_keeps_one_channel_per_group():
    model = create_model("demo_cnn")
    graph = build_graph(model, torch.zeros(1, 1, 8, 8))
    removed = FilterNormPruner(0.999).select(graph)
    assert {name: len(channels) for name, channels in removed.items()} == {
        "features.0.0": 31, "features.1.0": 63, "features.3.0": 63}


# -- ranking on hand-built weights ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("pruner", "removed"),
    [
        (FilterNormPruner(0.5, norm=1), [2, 3]),
        (FilterNormPruner(0.75, norm=1), [0, 2, 3]),
        (FilterNormPruner(0.75, norm=2), [1, 2, 3]),
        (BNGammaPruner(0.5), [0, 3]),
        (ChannelNormPruner(0.5, norm=1), [1, 3]),
        (ChannelNormPruner(0.25, norm=2), [3]),
    ],
)
def test_each_ranking_removes_the_weakest_channels(pruner, removed):
    _, graph = tiny_with_known_weights()
    assert pruner.select(graph) == {"conv1": removed}


def test_pruning_zeroes_filter_gamma_beta_and_consumer_inputs():
    model, graph = tiny_with_known_weights()
    masks = Masks(model)
    assert BNGammaPruner(0.5).apply(graph, masks) == {"conv1": [0, 3]}
    assert set(masks) == {"conv1.weight", "bn1.weight", "bn1.bias", "conv2.weight"}
    kept = torch.tensor([False, True, True, False])
    assert torch.equal(model.conv1.weight.flatten(1).ne(0).any(1), kept)
    assert torch.equal(model.bn1.weight.ne(0), kept) and torch.equal(model.bn1.bias.ne(0), kept)
    assert torch.equal(model.conv2.weight.flatten(2).ne(0).any(2).any(0), kept)
    assert torch.equal(model.bn1.running_var, torch.ones(4))  # buffers are not masked


def test_compute_mask_only_computes():
    model, graph = tiny_with_known_weights()
    before = {name: p.clone() for name, p in model.named_parameters()}
    masks = FilterNormPruner(0.5).compute_mask(graph)
    assert masks["conv1.weight"].shape == model.conv1.weight.shape
    assert masks["conv1.weight"][:, 0, 0, 0].tolist() == [True, True, False, False]
    assert all(torch.equal(before[name], p) for name, p in model.named_parameters())


def test_apply_keeps_earlier_masks():
    model, graph = tiny_with_known_weights()
    masks = Masks(model)
    masks.set("conv2.weight", torch.ones_like(model.conv2.weight, dtype=torch.bool).index_fill(0,
              torch.tensor([0]), False))
    FilterNormPruner(0.5).apply(graph, masks)
    assert not masks["conv2.weight"][0].any()  # the earlier unstructured mask survives
    assert not masks["conv2.weight"][:, 2:].any() and masks["conv2.weight"][1:, :2].all()


def test_random_pruner_is_seeded_and_removes_exactly_the_rounded_count():
    graph = build_graph(create_model("cifar_resnet20"), torch.zeros(1, 3, 32, 32))
    first = RandomChannelPruner(0.5, seed=3).select(graph)
    assert first == RandomChannelPruner(0.5, seed=3).select(graph)
    assert first != RandomChannelPruner(0.5, seed=4).select(graph)
    pruner = RandomChannelPruner(0.3, seed=0)
    assert pruner.select(graph) == pruner.select(graph)  # the same object repeats itself
    sizes = {group.name: len(group.channels) for group in graph.groups}
    assert all(len(chosen) == removal_count(0.5, sizes[name]) for name, chosen in first.items())


def test_coupled_members_are_normalised_per_layer_then_averaged():
    model = AddNet()
    set_filter_norms(model.a, [100, 200, 300, 400])  # divided by its mean: .4 .8 1.2 1.6
    set_filter_norms(model.b, [4, 1, 1, 2])  # divided by its mean: 2 .5 .5 1
    graph = build_graph(model, torch.zeros(1, 1, 2, 2))
    assert [g.name for g in graph.groups if g.prunable] == ["a"]
    scores = FilterNormPruner(0.5).importance.scores(graph, graph.group("a"))
    assert torch.allclose(scores, torch.tensor([1.2, 0.65, 0.85, 1.3]))
    assert FilterNormPruner(0.5).select(graph) == {"a": [1, 2]}
    assert FilterNormPruner(0.5, normalize=False).select(graph) == {"a": [0, 1]}


def test_already_pruned_channels_count_towards_the_target():
    model = create_model("demo_cnn")
    graph = build_graph(model, torch.zeros(1, 1, 8, 8))
    masks = Masks(model)
    RandomChannelPruner(0.25, seed=1).apply(graph, masks)
    RandomChannelPruner(0.5, seed=2).apply(graph, masks)
    assert int(graph.zero_channels(graph.group("features.1.0")).sum()) == 32


def test_global_ranking_uses_one_threshold_over_normalised_layers():
    model = TwoStage()
    set_filter_norms(model.conv1, [0.1, 0.1, 0.1, 3.7])
    with torch.no_grad():
        model.conv2.weight.copy_(torch.tensor([0.9, 1, 1, 1.1]).view(4, 1, 1, 1).expand(4, 4, 1, 1))
    graph = build_graph(model, torch.zeros(1, 1, 2, 2))
    assert FilterNormPruner(0.5, global_ranking=True).select(graph) == {
        "conv1": [0, 1, 2], "conv2": [0]}
    assert FilterNormPruner(0.5).select(graph) == {"conv1": [0, 1], "conv2": [0, 1]}
    assert FilterNormPruner(0.9, global_ranking=True).select(graph) == {
        "conv1": [0, 1, 2], "conv2": [0, 1, 2]}


def test_global_bn_gamma_ranking_compares_raw_gammas():
    model = TwoStage()
    with torch.no_grad():
        model.bn1.weight.copy_(torch.tensor([1.0, 2, 3, 4]))
        model.bn2.weight.copy_(torch.tensor([0.01, 0.02, 0.03, 0.04]))
    graph = build_graph(model, torch.zeros(1, 1, 2, 2))
    raw = BNGammaPruner(0.375, global_ranking=True).select(graph)
    assert raw == {"conv1": [], "conv2": [0, 1, 2]}
    normalised = BNGammaPruner(0.375, global_ranking=True, normalize=True).select(graph)
    assert normalised == {"conv1": [0, 1], "conv2": [0]}


def test_bn_gamma_pruner_skips_groups_without_batchnorm_and_refuses_them_by_name():
    graph = build_graph(create_model("lenet5"), torch.zeros(1, 1, 28, 28))
    assert BNGammaPruner(0.5).select(graph) == {}
    assert BNGammaPruner(0.5, global_ranking=True).select(graph) == {}
    with pytest.raises(UserError, match="nothing to rank group 'fc1'"):
        BNGammaPruner(0.5).select(graph, ["fc1"])


def test_layers_select_groups_by_name_or_by_a_layer_they_span():
    graph = build_graph(create_model("cifar_resnet20"), torch.zeros(1, 3, 32, 32))
    removed = FilterNormPruner(0.5).select(graph, ["layer1.1.bn2", "layer2.0.conv1"])
    assert {name: len(chosen) for name, chosen in removed.items()} == {
        "conv1": 8, "layer2.0.conv1": 16}
    with pytest.raises(UserError, match=r"no layer 'layer2.0.conv' .*mean.*'layer2.0.conv1'"):
        FilterNormPruner(0.5).select(graph, ["layer2.0.conv"])


def test_bn_gamma_l1_regularizer_penalises_gammas():
    model = create_model("demo_cnn")
    with torch.no_grad():
        model.features[0][1].weight.fill_(-2.0)
    regularizer = BNGammaL1Regularizer(model, 1e-3)
    penalty = regularizer.penalty()
    assert penalty.item() == pytest.approx(1e-3 * (32 * 2 + 64 + 64))
    penalty.backward()
    assert torch.allclose(model.features[0][1].weight.grad, torch.full((32,), -1e-3))
    with pytest.raises(UserError, match=">= 0"):
        BNGammaL1Regularizer(model, -1.0)
    with pytest.raises(UserError, match="no BatchNorm"):
        BNGammaL1Regularizer(create_model("lenet5"), 1e-4)


# -- what the graph cannot follow --------------------------------------------------------------
def test_pruners_refuse_groups_the_graph_cannot_follow_and_skip_them_by_default():
    graph = build_graph(RollNet(), torch.zeros(1, 3, 8, 8))
    assert [g.name for g in graph.groups if g.prunable] == ["conv2"]
    assert "conv1: 8 channels over conv1; NOT prunable: function roll()" in graph.prunable_report()
    with pytest.raises(UserError, match=r"cannot prune these layers: 'conv1': function roll\(\)"):
        FilterNormPruner(0.5).select(graph, ["conv1", "conv2"])
    assert list(FilterNormPruner(0.5).select(graph)) == ["conv2"]
    resnet = create_model("cifar_resnet20")
    graph = build_graph(resnet, torch.zeros(1, 3, 32, 32))
    with pytest.raises(UserError, match="cannot prune these layers: 'linear'.*model output"):
        FilterNormPruner(0.5).apply(graph, Masks(resnet), ["linear"])
