"""Cross-layer equalization (Nagel et al. 2019, "Data-Free Quantization Through Weight
Equalization and Bias Correction", section 4.1): even out the per-channel weight ranges of
consecutive layers without changing what the float model computes.

For two layers with only positive-homogeneous ops between them (``f(x / s) = f(x) / s`` for
``s > 0``: ReLU, leaky ReLU, max and average pooling, dropout, a flatten into a Linear layer),
dividing output channel ``i`` of the first layer (its weights and bias) by ``s_i`` and
multiplying input channel ``i`` of the second layer by ``s_i`` leaves the output unchanged. With
``r1_i`` the range of output channel ``i`` of the first layer's weight and ``r2_i`` that of input
channel ``i`` of the second's, ``s_i = sqrt(r1_i / r2_i)`` makes both ranges ``sqrt(r1_i r2_i)``:
a channel with tiny weights no longer loses its precision to the largest channel of a per-tensor
grid (nor, per output channel, to the other input channels of the next layer). Chains of layers
are equalized pair by pair, repeatedly, until the scales stop changing.

Pairs come from the model's torch.fx graph (the channel graph's leaf policy), never from module
order: the first layer's output must feed nothing but the chain to the second layer (a tensor
that also goes to a residual addition or to the model's output is left alone), each layer must be
called once per forward, and ReLU6 / hard-tanh (clipping at a fixed value) break a chain.
BatchNorms must be folded first (:func:`~torchslim.quantization.fold.fold_batchnorms`); the
high-bias absorption of the paper is not done.

Example::

    >>> import torch
    >>> from torchslim.quantization.equalize import equalize, input_ranges, output_ranges
    >>> torch.manual_seed(0) and None
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(),
    ...                             torch.nn.Conv2d(8, 4, 3)).eval()
    >>> with torch.no_grad():
    ...     _ = model[0].weight.mul_(torch.logspace(-2, 1, 8).reshape(-1, 1, 1, 1))
    >>> x = torch.randn(2, 3, 10, 10)
    >>> expected = model(x)
    >>> equalize(model, x)
    [('0', '2')]
    >>> bool(torch.allclose(model(x), expected, rtol=1e-4, atol=1e-5))
    True
    >>> ranges = output_ranges(model[0])  # the spread was 880x: now its square root
    >>> round(float(ranges.max() / ranges.min()))
    30
    >>> bool(torch.allclose(ranges, input_ranges(model[2])))  # both layers share each range
    True
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import TensorMetadata
from torch.nn.modules.conv import _ConvNd

from ..core.errors import UserError
from ..core.modules import eval_mode
from ..graph.frontends import LeafTracer, propagate_shapes
from .fake import Quantizer
from .fold import foldable_pairs
from .modules import QuantConv, QuantConvBn, QuantLinear

#: Stop iterating once no scale changes by more than this factor (as ``|log s|``).
TOLERANCE = 1e-4
#: Channels whose weight range is below this are left alone (a dead channel has no scale).
_EPS = 1e-12

_ELEMENTWISE_FUNCTIONS = {
    F.relu, torch.relu, torch.relu_, F.leaky_relu, F.dropout, F.dropout1d, F.dropout2d,
    F.dropout3d,
}
_ELEMENTWISE_METHODS = {"relu", "relu_", "contiguous", "clone", "detach"}
_ELEMENTWISE_MODULES = (nn.ReLU, nn.LeakyReLU, nn.Identity, nn.Dropout, nn.Dropout1d,
                        nn.Dropout2d, nn.Dropout3d)
_POOL_FUNCTIONS = {
    F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
    F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d,
    F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d,
}
_POOL_MODULES = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d,
                 nn.AvgPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
                 nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)
_FLATTEN_FUNCTIONS = {torch.flatten, torch.reshape}
_FLATTEN_METHODS = {"flatten", "view", "reshape"}


@dataclass(frozen=True)
class LayerPair:
    """Two layers to equalize; ``group`` inputs of ``second`` per channel of ``first`` (more
    than one after a flatten of spatial positions into a Linear layer)."""

    first: str
    second: str
    group: int = 1


@dataclass(frozen=True)
class _Channels:
    """Where the first layer's channels are in a tensor of the chain."""

    axis: int
    ndim: int
    group: int = 1


def equalize(
    model: nn.Module, example_input: torch.Tensor, *, iterations: int = 20
) -> list[tuple[str, str]]:
    """Equalize every pair of consecutive layers of the float ``model`` in place (see the module
    docstring); return the pairs, as (first layer, second layer) module paths."""
    if iterations < 1:
        raise UserError(f"equalization needs at least 1 iteration, got {iterations}")
    _check_float(model)
    pairs = equalization_pairs(model, example_input)
    _check_folded(model)
    modules = dict(model.named_modules())
    with torch.no_grad():
        for _ in range(iterations):
            change = 0.0
            for pair in pairs:
                scales = _scales(modules[pair.first], modules[pair.second], pair.group)
                _rescale(modules[pair.first], modules[pair.second], pair.group, scales)
                change = max(change, float(scales.log().abs().max()))
            if change < TOLERANCE:
                break
    return [(pair.first, pair.second) for pair in pairs]


def _check_float(model: nn.Module) -> None:
    if any(isinstance(m, Quantizer | QuantConv | QuantLinear | QuantConvBn)
           for m in model.modules()):
        raise UserError("the model already has quantizers: equalize the float model, then "
                        "quantize it")


def _check_folded(model: nn.Module) -> None:
    unfolded = foldable_pairs(model)
    if unfolded:
        raise UserError(f"BatchNorm '{unfolded[0][1]}' follows layer '{unfolded[0][0]}': fold "
                        "the BatchNorms first (torchslim.quantization.fold_batchnorms(model))")


def equalization_pairs(model: nn.Module, example_input: torch.Tensor) -> list[LayerPair]:
    """The pairs of layers :func:`equalize` rescales, in graph order."""
    graph = _traced(model, example_input)
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or calls[node.target] != 1:
            continue
        if not _equalizable(model.get_submodule(node.target)):
            continue
        second = _follow(model, node, calls)
        if second is not None:
            pairs.append(LayerPair(node.target, *second))
    return pairs


def _traced(model: nn.Module, example_input: torch.Tensor) -> fx.Graph:
    try:
        graph = LeafTracer().trace(model)
    except Exception as err:
        raise UserError(
            f"cannot trace {type(model).__name__} with torch.fx to find the layers to equalize "
            f"({str(err).splitlines()[0] if str(err) else type(err).__name__})"
        ) from err
    with eval_mode(model):
        propagate_shapes(model, graph, example_input)
    return graph


def _equalizable(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or (
        isinstance(module, _ConvNd) and not module.transposed
    )


def _shape(node: fx.Node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if isinstance(meta, TensorMetadata) else None


def _follow(
    model: nn.Module, start: fx.Node, calls: dict[str, int]
) -> tuple[str, int] | None:
    """The layer ``start``'s output reaches through positive-homogeneous ops only, and how many
    of its inputs each channel becomes; None where the chain branches or breaks."""
    shape = _shape(start)
    if shape is None:
        return None
    axis = 1 if isinstance(model.get_submodule(start.target), _ConvNd) else len(shape) - 1
    channels, current = _Channels(axis, len(shape)), start
    count = shape[axis]
    while channels is not None:
        users = [u for u in current.users if not _shape_query(u)]
        if len(users) != 1:
            return None
        user = users[0]
        if not user.args or user.args[0] is not current:
            return None
        if any(n is not current and "tensor_meta" in n.meta for n in user.all_input_nodes):
            return None  # another tensor joins in (sizes such as x.size(0) are fine)
        if user.op == "call_module" and calls[user.target] == 1:
            layer = model.get_submodule(user.target)
            if _equalizable(layer):
                return (user.target, channels.group) if _fits(layer, channels, count) else None
        channels, current = _through(model, user, current, channels), user
    return None


def _shape_query(node: fx.Node) -> bool:
    """``x.size(0)``, ``x.shape``, ``x.dim()``: reads the tensor's shape, not its values."""
    if node.op == "call_method":
        return node.target in ("size", "dim")
    return (node.op == "call_function" and node.target is getattr and len(node.args) > 1
            and node.args[1] in ("shape", "ndim"))


def _fits(layer: nn.Module, channels: _Channels, count: int) -> bool:
    """Whether ``layer`` reads the chain's channels as its input channels."""
    if isinstance(layer, nn.Linear):
        return channels.axis == channels.ndim - 1 and layer.in_features == count * channels.group
    return channels.axis == 1 and channels.group == 1 and layer.in_channels == count


def _through(
    model: nn.Module, node: fx.Node, source: fx.Node, channels: _Channels
) -> _Channels | None:
    """Where the channels are after ``node`` (None: an op equalization cannot pass)."""
    shape, before = _shape(node), _shape(source)
    if shape is None or before is None:
        return None
    kind = _kind(model, node)
    if kind == "elementwise" and shape == before:
        return channels
    if kind == "pool" and channels.axis == 1 and shape[:2] == before[:2]:
        return channels
    if kind == "flatten" and channels.axis == 1 and len(before) >= 2:
        spatial = 1
        for size in before[2:]:
            spatial *= size
        if shape == (before[0], before[1] * spatial):
            return _Channels(1, 2, channels.group * spatial)
    return None


def _kind(model: nn.Module, node: fx.Node) -> str | None:
    if node.op == "call_module":
        module = model.get_submodule(node.target)
        if isinstance(module, _ELEMENTWISE_MODULES):
            return "elementwise"
        if isinstance(module, _POOL_MODULES):
            return "pool"
        return "flatten" if isinstance(module, nn.Flatten) else None
    if node.op == "call_method":
        if node.target in _ELEMENTWISE_METHODS:
            return "elementwise"
        return "flatten" if node.target in _FLATTEN_METHODS else None
    if node.op == "call_function":
        if node.target in _ELEMENTWISE_FUNCTIONS:
            return "elementwise"
        if node.target in _POOL_FUNCTIONS:
            return "pool"
        return "flatten" if node.target in _FLATTEN_FUNCTIONS else None
    return None


def output_ranges(layer: nn.Module) -> torch.Tensor:
    """The largest absolute weight of each output channel."""
    weight = layer.weight.detach()
    return weight.abs().reshape(weight.shape[0], -1).amax(1)


def _input_view_shape(layer: nn.Module, group: int) -> tuple[int, int, int, int]:
    """``layer``'s weight as (groups, outputs per group, channels per group, the rest): the
    third axis is the first layer's channel."""
    weight, groups = layer.weight, getattr(layer, "groups", 1)
    return (groups, weight.shape[0] // groups, weight.shape[1] // group, -1)


def input_ranges(layer: nn.Module, group: int = 1) -> torch.Tensor:
    """The largest absolute weight of each input channel (``group`` inputs per channel)."""
    view = layer.weight.detach().abs().reshape(_input_view_shape(layer, group))
    return view.amax(dim=(1, 3)).reshape(-1)


def _scales(first: nn.Module, second: nn.Module, group: int) -> torch.Tensor:
    r1, r2 = output_ranges(first), input_ranges(second, group)
    live = (r1 > _EPS) & (r2 > _EPS)
    return torch.where(live, torch.sqrt(r1 / torch.where(live, r2, 1.0)), 1.0)


def _rescale(first: nn.Module, second: nn.Module, group: int, scales: torch.Tensor) -> None:
    """Output channel i of ``first`` / s_i, input channel i of ``second`` * s_i (in place)."""
    shape = [-1] + [1] * (first.weight.dim() - 1)
    first.weight.div_(scales.reshape(shape).to(first.weight.dtype))
    if first.bias is not None:
        first.bias.div_(scales.to(first.bias.dtype))
    view = _input_view_shape(second, group)
    weight = second.weight.reshape(view) * scales.reshape(view[0], 1, view[2], 1)
    second.weight.copy_(weight.reshape(second.weight.shape))
