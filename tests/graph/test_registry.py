"""Teaching the graph a layer of one's own with one call."""

from __future__ import annotations

import torch
from torch import nn

from tests.graph.helpers import prune_and_thin
from torchslim.graph import PassThrough, build_graph, register_module
from torchslim.graph.registry import MODULES


class Scale(nn.Module):
    """A per-channel scale, written with a parameter the graph cannot see into."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.linspace(0.5, 1.5, channels))

    def forward(self, x):
        return x * self.scale.view(1, -1, 1, 1)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 1)
        self.scale = Scale(8)
        self.b = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        return self.b(self.scale(self.a(x))).flatten(1)


def test_a_registered_module_is_followed_and_its_tensors_sliced():
    reason = build_graph(Net(), torch.zeros(1, 3, 2, 2)).unprunable()["a"]
    assert "tensor 'scale.scale' of the model is used directly" in reason
    assert "register_module" in reason
    register_module(Scale, PassThrough({"scale": 0}))
    try:
        graph = build_graph(Net(), torch.zeros(1, 3, 2, 2))
        assert graph.group("a").modules == ["a", "scale", "b"]
        model = prune_and_thin(Net, (3, 2, 2), 0.5)["model"]
        assert model.scale.scale.shape == (4,)
    finally:
        MODULES.pop(Scale)
