"""What every graph test does: prune every prunable group, thin, and check the model."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from torchslim.analysis import summarize
from torchslim.graph import build_graph
from torchslim.pruning import Masks
from torchslim.pruning.structured import FilterNormPruner
from torchslim.pruning.thinning import apply_thinning, thin


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial norm statistics and affine parameters, then eval mode (so a thinning that
    drops the wrong channel shows in the outputs)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.2)
                module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(n, generator=generator) * 0.2)
    return model.eval()


def prune_and_thin(
    factory: Callable[[], nn.Module], shape: tuple[int, ...], sparsity: float = 0.3,
    tolerance: float = 1e-5,
) -> dict:
    """Prune ``sparsity`` of every prunable group by filter norm, thin, and check: same output
    shape, fewer MACs, masked and thinned outputs within ``tolerance``, and a fresh instance
    reshaped by the record loads the thinned weights and gives the same outputs."""
    torch.manual_seed(0)
    model = randomize(factory())
    x = torch.randn(2, *shape)
    macs = summarize(model, shape).macs
    graph = build_graph(model, x[:1])
    FilterNormPruner(sparsity).apply(graph, Masks(model))
    with torch.no_grad():
        masked = model(x)
    record = thin(model, x[:1])
    with torch.no_grad():
        thinned = model(x)
    assert thinned.shape == masked.shape
    difference = (thinned - masked).abs().max().item()
    assert difference <= tolerance, difference
    thinned_macs = summarize(model, shape).macs
    assert thinned_macs < macs
    fresh = apply_thinning(randomize(factory(), seed=1), copy.deepcopy(record))
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(fresh.eval()(x), thinned)
    return {"graph": graph, "record": record, "model": model, "macs": (macs, thinned_macs),
            "difference": difference}
