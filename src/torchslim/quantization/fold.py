"""BatchNorm folding: a convolution followed by a BatchNorm becomes one convolution.

For a convolution ``y = W x + b`` followed by a BatchNorm with running mean ``mu``, variance
``var``, scale ``gamma``, shift ``beta`` and ``eps`` (seed 001's formula)::

    W' = W * gamma / sqrt(var + eps)        (per output channel)
    b' = (b - mu) * gamma / sqrt(var + eps) + beta

so ``conv'(x) = bn(conv(x))`` in evaluation mode. :func:`fold_batchnorms` finds every such pair in
a traced model (the convolution's output feeds nothing but the BatchNorm) and folds it, replacing
the BatchNorm by ``nn.Identity``; the parameter names of the convolutions stay.

Example::

    >>> import torch
    >>> from torchslim.quantization.fold import fold_batchnorms
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)).eval()
    >>> _ = torch.nn.init.uniform_(model[1].running_var, 0.5, 2.0)
    >>> x = torch.randn(2, 3, 8, 8)
    >>> expected = model(x)
    >>> fold_batchnorms(model)
    ['0']
    >>> type(model[1]).__name__, bool((model(x) - expected).abs().max() < 1e-5)
    ('Identity', True)
"""

from __future__ import annotations

import torch
from torch import fx, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

from ..graph.frontends import LeafTracer


def fold_into(conv: nn.Module, bn: _BatchNorm) -> None:
    """Fold ``bn`` into ``conv`` (a convolution or Linear) in place (see the module docstring)."""
    with torch.no_grad():
        std = torch.sqrt(bn.running_var + bn.eps)
        gamma = bn.weight if bn.weight is not None else torch.ones_like(std)
        beta = bn.bias if bn.bias is not None else torch.zeros_like(std)
        factor = gamma / std
        transposed = getattr(conv, "transposed", False)
        shape = [1, -1] if transposed else [-1, 1]
        weight = conv.weight * factor.reshape(shape + [1] * (conv.weight.dim() - 2))
        bias = conv.bias if conv.bias is not None else torch.zeros_like(std)
        conv.weight = nn.Parameter(weight)
        conv.bias = nn.Parameter((bias - bn.running_mean) * factor + beta)


def _set(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, name, module)


def foldable_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(layer, BatchNorm) module paths where the layer's output feeds only the BatchNorm."""
    graph = LeafTracer().trace(model)
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module":
            continue
        module = model.get_submodule(node.target)
        source = node.args[0] if node.args else None
        if not isinstance(module, _BatchNorm) or not isinstance(source, fx.Node):
            continue
        if source.op != "call_module" or len(source.users) != 1:
            continue
        layer = model.get_submodule(source.target)
        if isinstance(layer, _ConvNd | nn.Linear) and (
            not isinstance(layer, _ConvNd) or not layer.transposed or layer.groups == 1
        ):
            pairs.append((source.target, node.target))
    return pairs


def fold_batchnorms(model: nn.Module) -> list[str]:
    """Fold every BatchNorm that directly follows a convolution or Linear (in evaluation mode
    terms); return the layers that absorbed one."""
    pairs = foldable_pairs(model)
    for layer, bn in pairs:
        fold_into(model.get_submodule(layer), model.get_submodule(bn))
        _set(model, bn, nn.Identity())
    return [layer for layer, _ in pairs]
