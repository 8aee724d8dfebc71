"""The graph on the zoo's models: the groups structured pruning has always found there."""

from __future__ import annotations

import torch

from torchslim.graph import Axis, build_graph
from torchslim.models import create_model


def test_graph_of_demo_cnn():
    graph = build_graph(create_model("demo_cnn"), torch.zeros(1, 1, 8, 8))
    prunable = {g.name: (len(g.channels), g.modules) for g in graph.groups if g.prunable}
    assert prunable == {
        "features.0.0": (32, ["features.0.0", "features.0.1", "features.1.0"]),
        "features.1.0": (64, ["features.1.0", "features.1.1", "features.3.0"]),
        "features.3.0": (64, ["features.3.0", "features.3.1", "classifier"]),
    }
    assert graph.unprunable() == {"features.0.0:in": "model input", "classifier": "model output"}


def test_graph_maps_a_channel_to_its_block_of_linear_features_after_flatten():
    graph = build_graph(create_model("lenet5"), torch.zeros(1, 1, 28, 28))
    group = graph.group("conv2")
    assert len(group.channels) == 16 and group.modules == ["conv2", "fc1"]
    assert group.channels[3][Axis("fc1", "in", 400)] == tuple(range(75, 100))
    assert [g.name for g in graph.groups if g.prunable] == ["conv1", "conv2", "fc1", "fc2"]


def test_graph_of_resnet20_couples_residual_stream_through_padding_shortcuts():
    graph = build_graph(create_model("cifar_resnet20"), torch.zeros(1, 3, 32, 32))
    sizes = {g.name: len(g.channels) for g in graph.groups if g.prunable}
    assert sizes["conv1"] == 16 and sizes["layer2.0.conv2"] == 16 and sizes["layer3.0.conv2"] == 32
    assert sum(1 for name in sizes if name.endswith(".conv1") and name != "conv1") == 9
    stream = graph.group("conv1")
    channel = stream.channels[5]  # stage-1 channel 5 is channel 8+5 of stage 2, 16+8+5 of stage 3
    assert channel[Axis("layer1.2.bn2", "out", 16)] == (5,)
    assert channel[Axis("layer2.0.conv1", "in", 16)] == (5,)
    assert channel[Axis("layer2.0.bn2", "out", 32)] == (13,)
    assert channel[Axis("layer2.2.conv2", "out", 32)] == (13,)
    assert channel[Axis("layer3.2.conv1", "in", 64)] == (29,)
    assert channel[Axis("linear", "in", 64)] == (29,)
    padded = graph.group("layer2.0.conv2")  # stage 2's own channels: the shortcut's zero padding
    positions = sorted(c[Axis("layer2.0.bn2", "out", 32)][0] for c in padded.channels)
    assert positions == [*range(8), *range(24, 32)]
    assert [(site.owner, site.family) for site in graph.sites] == [
        ("layer2.0.shortcut", "pad"), ("layer3.0.shortcut", "pad")
    ]
