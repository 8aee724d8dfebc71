"""Channel dependency graph: which channels of which layers must be removed together.

:func:`build_graph` traces a model with :mod:`torch.fx` (``ChannelPadShortcut`` stays one leaf
node), runs :class:`~torch.fx.passes.shape_prop.ShapeProp` on an example input for the shapes, and
follows the channel dimension (dim 1) of every tensor through the graph:

* a Conv2d or Linear starts new channels at its output and consumes channels at its input; a
  depthwise convolution (``groups == in_channels``) and a BatchNorm pass them through, so their
  weights belong to the channel they pass;
* a residual addition (``+``, ``torch.add``, also ``-``, ``*``, ``/``) ties the channels of its
  inputs one to one; ``torch.cat`` along dim 1 places them at offsets; a flatten or
  ``view(n, -1)`` spreads channel ``c`` over a block of ``H*W`` Linear input features;
* activations, pooling, dropout, identity and spatial slicing keep channels as they are;
* the option-A ``ChannelPadShortcut`` carries input channel ``i`` to output channel
  ``pad_before + i`` (or its explicit ``channel_index``); its padded channels are constant zero
  and start new channels of their own.

One *channel* is everything that has to go when one channel is removed (filter, BatchNorm
entries, the matching input slices of every consumer, across residual additions). A
:class:`ChannelGroup` collects the channels that touch exactly the same layers, e.g. the output
channels of one convolution with its BatchNorm and the next layer's inputs; it is named after its
first producing layer. Channels that reach the model input or output, or an op the graph does not
understand (an unknown function or module, a reshape that mixes channels or hard-codes their
number, a grouped convolution), are not prunable, and :meth:`DependencyGraph.unprunable` says
why.

Example::

    >>> import torch
    >>> from torchslim.models import create_model
    >>> from torchslim.pruning.graph import build_graph
    >>> graph = build_graph(create_model("cifar_resnet20"), torch.zeros(1, 3, 32, 32))
    >>> [(group.name, len(group.channels)) for group in graph.groups if group.prunable][:3]
    [('conv1', 16), ('layer1.0.conv1', 16), ('layer1.1.conv1', 16)]
    >>> graph.unprunable()
    {'conv1:in': 'model input', 'linear': 'model output'}
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

from ..core.errors import UserError, did_you_mean
from ..core.modules import eval_mode
from ..models.cifar_resnet import ChannelPadShortcut

#: A channel: the positions it occupies on every layer axis it touches.
Channel = dict["Axis", tuple[int, ...]]


@dataclass(frozen=True)
class Axis:
    """The output (``role="out"``) or input (``role="in"``) channels of one layer."""

    module: str
    role: str
    size: int


@dataclass
class ChannelGroup:
    """Channels that touch the same layers; ``reason`` says why they cannot be pruned (or None)."""

    name: str
    axes: tuple[Axis, ...]
    channels: list[Channel]
    reason: str | None = None
    _index: dict[Axis, tuple[torch.Tensor, torch.Tensor]] = field(
        default_factory=dict, repr=False, compare=False
    )

    @property
    def prunable(self) -> bool:
        return self.reason is None

    def index_on(self, axis: Axis) -> tuple[torch.Tensor, torch.Tensor]:
        """(positions on ``axis``, index of the channel at each), for vectorised gathering."""
        if axis not in self._index:
            pairs = [(p, i) for i, channel in enumerate(self.channels) for p in channel[axis]]
            self._index[axis] = tuple(torch.tensor(column) for column in zip(*pairs, strict=True))
        return self._index[axis]

    @property
    def modules(self) -> list[str]:
        """The layers whose tensors shrink when a channel of this group goes, in graph order."""
        return list(dict.fromkeys(axis.module for axis in self.axes))


# -- what each layer type holds along an axis -------------------------------------------------
def is_depthwise(module: nn.Module) -> bool:
    """A convolution whose every output channel sees exactly one input channel."""
    is_conv = isinstance(module, _ConvNd) and not module.transposed
    return is_conv and 1 < module.groups == module.in_channels


def _is_plain_conv(module: nn.Module) -> bool:
    return isinstance(module, _ConvNd) and not module.transposed and module.groups == 1


def axis_tensors(module: nn.Module, role: str) -> list[tuple[str, int]]:
    """(name, dim) of every parameter and buffer of ``module`` indexed by its ``role`` axis."""
    if isinstance(module, nn.Linear) or _is_plain_conv(module):
        names = ("weight", "bias") if role == "out" else ("weight",)
        dim = 0 if role == "out" else 1
    elif is_depthwise(module) and role == "out":
        names, dim = ("weight", "bias"), 0
    elif isinstance(module, _BatchNorm):
        names, dim = ("weight", "bias", "running_mean", "running_var"), 0
    else:
        return []
    return [(name, dim) for name in names if getattr(module, name, None) is not None]


def axis_size(module: nn.Module, role: str) -> int | None:
    """The current number of ``role`` channels of a layer type the graph knows (else None)."""
    if isinstance(module, ChannelPadShortcut):
        return module.out_channels if role == "out" else len(module.input_positions())
    if isinstance(module, _BatchNorm):
        return module.num_features
    if isinstance(module, nn.Linear):
        return module.out_features if role == "out" else module.in_features
    if isinstance(module, _ConvNd):
        return module.out_channels if role == "out" else module.in_channels
    return None


# -- ops the graph follows ----------------------------------------------------------------------
def _functions(namespace: object, names: str) -> set[Any]:
    return {getattr(namespace, name) for name in names.split() if hasattr(namespace, name)}


_SAME_CHANNEL_MODULES = tuple(
    _functions(
        nn,
        "ReLU ReLU6 LeakyReLU ELU GELU SiLU Mish Hardswish Hardsigmoid Hardtanh Sigmoid Tanh "
        "Identity Dropout Dropout1d Dropout2d Dropout3d MaxPool1d MaxPool2d MaxPool3d AvgPool1d "
        "AvgPool2d AvgPool3d AdaptiveAvgPool1d AdaptiveAvgPool2d AdaptiveAvgPool3d "
        "AdaptiveMaxPool1d AdaptiveMaxPool2d AdaptiveMaxPool3d Upsample",
    )
)
_ACTIVATIONS = (
    "relu relu6 leaky_relu elu gelu silu mish hardswish hardsigmoid hardtanh sigmoid tanh"
)
_POOLING = (
    "dropout dropout1d dropout2d dropout3d max_pool1d max_pool2d max_pool3d avg_pool1d avg_pool2d "
    "avg_pool3d adaptive_avg_pool1d adaptive_avg_pool2d adaptive_avg_pool3d adaptive_max_pool1d "
    "adaptive_max_pool2d adaptive_max_pool3d interpolate"
)
_SAME_CHANNEL_FUNCTIONS = (
    _functions(F, f"{_ACTIVATIONS} {_POOLING}") | _functions(torch, _ACTIVATIONS + " clone")
)
_SAME_CHANNEL_METHODS = set(f"{_ACTIVATIONS} relu_ contiguous clone".split())
_ELEMENTWISE = _functions(operator, "add sub mul truediv") | _functions(torch, "add sub mul div")
_ELEMENTWISE_METHODS = set("add sub mul div add_ sub_ mul_ div_".split())
_CONCAT = _functions(torch, "cat concat concatenate")
_FLATTEN = _functions(torch, "flatten reshape")
_RESHAPE_METHODS = {"flatten", "view", "reshape"}
_REDUCTIONS = _functions(torch, "mean sum amax amin")
_REDUCTION_METHODS = {"mean", "sum", "amax", "amin"}
_METADATA_METHODS = {"size", "dim"}


class _Unsupported(Exception):
    """An op touches channels in a way the graph cannot follow (the message says how)."""


def _shape(node: object) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
    return tuple(meta.shape) if isinstance(meta, TensorMetadata) else None


def _describe(node: fx.Node, model: nn.Module) -> str:
    if node.op == "call_module":
        return f"module '{node.target}' ({type(model.get_submodule(node.target)).__name__})"
    if node.op == "call_method":
        return f"method .{node.target}()"
    return f"function {getattr(node.target, '__name__', node.target)}()"


def _argument(node: fx.Node, position: int, keyword: str, default: object = None) -> object:
    if len(node.args) > position:
        return node.args[position]
    return node.kwargs.get(keyword, default)


def _channel_block(in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> int:
    """How many consecutive dim-1 positions of a reshape's output each input channel fills."""
    if len(out_shape) < 2 or out_shape[0] != in_shape[0]:
        raise _Unsupported(f"reshape from {list(in_shape)} to {list(out_shape)} moves the batch")
    for end in range(2, len(in_shape) + 1):
        if math.prod(in_shape[1:end]) == out_shape[1]:
            return math.prod(in_shape[2:end])
    raise _Unsupported(f"reshape from {list(in_shape)} to {list(out_shape)} mixes channels")


class _ChannelTracer:
    """Walks an fx graph with shapes and ties channel elements together (union-find)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.parent: list[int] = []
        self.reasons: dict[int, str] = {}
        self.layouts: dict[fx.Node, list[int]] = {}
        self.axes: dict[Axis, list[int]] = {}

    # -- union-find -------------------------------------------------------------------------
    def fresh(self, count: int, reason: str | None = None) -> list[int]:
        start = len(self.parent)
        self.parent.extend(range(start, start + count))
        if reason is not None:
            self.reasons.update(dict.fromkeys(range(start, start + count), reason))
        return list(range(start, start + count))

    def find(self, element: int) -> int:
        while self.parent[element] != element:
            self.parent[element] = self.parent[self.parent[element]]
            element = self.parent[element]
        return element

    def couple(self, first: Sequence[int], second: Sequence[int]) -> None:
        for a, b in zip(first, second, strict=True):
            root_a, root_b = self.find(a), self.find(b)
            if root_a != root_b:
                self.parent[root_b] = root_a
                if root_b in self.reasons:
                    self.reasons.setdefault(root_a, self.reasons.pop(root_b))

    def fix(self, layout: Iterable[int], reason: str) -> None:
        for element in layout:
            self.reasons.setdefault(self.find(element), reason)

    def axis(self, module: str, role: str, size: int) -> list[int]:
        key = Axis(module, role, size)
        if key not in self.axes:
            self.axes[key] = self.fresh(size)
        return self.axes[key]

    # -- walking the graph ------------------------------------------------------------------
    def run(self, graph: fx.Graph) -> None:
        for node in graph.nodes:
            try:
                layout = self.visit(node)
            except _Unsupported as problem:
                layout = self.unsupported(node, f"{_describe(node, self.model)}: {problem}")
            if layout is not None:
                self.layouts[node] = layout

    def visit(self, node: fx.Node) -> list[int] | None:
        shape = _shape(node)
        if node.op == "placeholder":
            return self.fresh(shape[1], "model input") if shape and len(shape) >= 2 else None
        if node.op == "output":
            for arg in node.all_input_nodes:
                self.fix(self.layouts.get(arg, ()), "model output")
            return None
        if node.op == "get_attr":
            if shape and len(shape) >= 2:
                return self.fresh(shape[1], f"tensor '{node.target}' is used directly")
            return None
        inputs = [arg for arg in node.all_input_nodes if arg in self.layouts]
        is_metadata = node.target in _METADATA_METHODS or node.target is getattr
        if "tensor_meta" not in node.meta and is_metadata:
            return None
        if not inputs and (shape is None or len(shape) < 2):
            return None
        if node.op == "call_module":
            return self.visit_module(node, self.model.get_submodule(node.target))
        return self.visit_function(node)

    def unsupported(self, node: fx.Node, reason: str) -> list[int] | None:
        reason = f"{reason} (node '{node.name}')"
        for arg in node.all_input_nodes:
            self.fix(self.layouts.get(arg, ()), reason)
        shape = _shape(node)
        if shape is None or len(shape) < 2:
            return None
        layout = self.fresh(shape[1], reason)
        if node.op == "call_module":  # name the layer in the report, unless its sizes disagree
            if axis_size(self.model.get_submodule(node.target), "out") in (None, shape[1]):
                self.couple(layout, self.axis(node.target, "out", shape[1]))
        return layout

    def input_layout(self, node: fx.Node) -> list[int]:
        source = node.args[0] if node.args else None
        if source not in self.layouts:
            raise _Unsupported("its input is not a tensor whose channels the graph follows")
        return self.layouts[source]

    def same_channels(self, node: fx.Node) -> list[int]:
        layout, shape = self.input_layout(node), _shape(node)
        if shape is None:
            raise _Unsupported("its result is not one tensor")
        if len(shape) < 2 or shape[1] != len(layout):
            raise _Unsupported("it changes the number of channels")
        return layout

    # -- modules ----------------------------------------------------------------------------
    def visit_module(self, node: fx.Node, module: nn.Module) -> list[int]:
        name = node.target
        if isinstance(module, _SAME_CHANNEL_MODULES) or isinstance(module, _BatchNorm):
            layout = self.same_channels(node)
            if isinstance(module, _BatchNorm):
                self.couple(layout, self.axis(name, "out", module.num_features))
            return layout
        if isinstance(module, nn.Flatten):
            return self.reshape(node)
        if isinstance(module, nn.Linear):
            return self.linear(node, name, module)
        if isinstance(module, _ConvNd):
            return self.conv(node, name, module)
        if isinstance(module, ChannelPadShortcut):
            return self.shortcut(node, name, module)
        raise _Unsupported("this layer type is not supported")

    def linear(self, node: fx.Node, name: str, linear: nn.Linear) -> list[int]:
        layout, shape = self.input_layout(node), _shape(node.args[0])
        if len(shape) != 2:
            raise _Unsupported(f"Linear on a rank-{len(shape)} tensor (only rank 2 is followed)")
        self.couple(layout, self.axis(name, "in", linear.in_features))
        return self.axis(name, "out", linear.out_features)

    def conv(self, node: fx.Node, name: str, conv: _ConvNd) -> list[int]:
        layout = self.input_layout(node)
        if conv.transposed:
            raise _Unsupported("transposed convolutions are not supported")
        if conv.groups == 1:
            self.couple(layout, self.axis(name, "in", conv.in_channels))
            return self.axis(name, "out", conv.out_channels)
        if not is_depthwise(conv):
            raise _Unsupported(f"grouped convolution (groups={conv.groups}) is not supported")
        multiplier = conv.out_channels // conv.in_channels
        out = [layout[i // multiplier] for i in range(conv.out_channels)]
        self.couple(out, self.axis(name, "out", conv.out_channels))
        return out

    def shortcut(self, node: fx.Node, name: str, shortcut: ChannelPadShortcut) -> list[int]:
        layout = self.input_layout(node)
        positions = shortcut.input_positions()
        out = self.axis(name, "out", shortcut.out_channels)
        if len(positions) != len(layout) or _shape(node)[1] != len(out):
            raise _Unsupported("its channel mapping does not match its input")
        self.couple(layout, self.axis(name, "in", len(layout)))
        self.couple(layout, [out[p] for p in positions])
        return out

    # -- functions and methods --------------------------------------------------------------
    def visit_function(self, node: fx.Node) -> list[int]:
        target, is_method = node.target, node.op == "call_method"
        if target in (_SAME_CHANNEL_METHODS if is_method else _SAME_CHANNEL_FUNCTIONS):
            return self.same_channels(node)
        if target in (_ELEMENTWISE_METHODS if is_method else _ELEMENTWISE):
            return self.elementwise(node)
        if target in (_RESHAPE_METHODS if is_method else _FLATTEN):
            return self.reshape(node)
        if target in (_REDUCTION_METHODS if is_method else _REDUCTIONS):
            return self.reduction(node)
        if not is_method and target in _CONCAT:
            return self.concat(node)
        if not is_method and target is F.pad:
            return self.pad(node)
        if not is_method and target is operator.getitem:
            return self.getitem(node)
        raise _Unsupported("the dependency graph does not know how it treats channels")

    def elementwise(self, node: fx.Node) -> list[int]:
        shape = _shape(node)
        if shape is None or len(shape) < 2:
            raise _Unsupported("its result has no channel dimension")
        layouts = []
        for arg in [*node.args, *node.kwargs.values()]:
            arg_shape = _shape(arg)
            if arg_shape is None or (arg not in self.layouts and math.prod(arg_shape) == 1):
                continue  # a number or a one-element tensor
            if arg not in self.layouts or len(arg_shape) != len(shape) or arg_shape[1] != shape[1]:
                raise _Unsupported(f"it broadcasts a {list(arg_shape)} tensor across channels")
            layouts.append(self.layouts[arg])
        if not layouts:
            raise _Unsupported("none of its inputs has the channels of its result")
        for other in layouts[1:]:
            self.couple(layouts[0], other)
        return layouts[0]

    def concat(self, node: fx.Node) -> list[int]:
        tensors, shape = _argument(node, 0, "tensors"), _shape(node)
        dim = _argument(node, 1, "dim", 0)
        if shape is None or any(t not in self.layouts for t in tensors):
            raise _Unsupported("one of its inputs has no channel dimension")
        layouts = [self.layouts[t] for t in tensors]
        if dim % len(shape) == 1:
            return [element for layout in layouts for element in layout]
        for other in layouts[1:]:
            self.couple(layouts[0], other)
        return layouts[0]

    def reshape(self, node: fx.Node) -> list[int]:
        layout = self.input_layout(node)
        if node.op == "call_method" and node.target in ("view", "reshape") or (
            node.target is torch.reshape
        ):
            sizes = node.args[1:] if node.op == "call_method" else (_argument(node, 1, "shape"),)
            if len(sizes) == 1 and isinstance(sizes[0], tuple | list):
                sizes = sizes[0]
            if len(sizes) >= 2 and isinstance(sizes[1], int) and sizes[1] != -1:
                raise _Unsupported(f"it hard-codes {sizes[1]} features in dim 1 (use -1)")
        block = _channel_block(_shape(node.args[0]), _shape(node))
        return [element for element in layout for _ in range(block)]

    def reduction(self, node: fx.Node) -> list[int]:
        layout, rank = self.input_layout(node), len(_shape(node.args[0]))
        dims = _argument(node, 1, "dim")
        dims = [dims] if isinstance(dims, int) else dims
        if not isinstance(dims, tuple | list) or not dims or any(d % rank < 2 for d in dims):
            raise _Unsupported("it reduces over the batch or channel dimension")
        return layout

    def pad(self, node: fx.Node) -> list[int]:
        padding, rank = _argument(node, 1, "pad"), len(_shape(node.args[0]))
        if not isinstance(padding, tuple | list) or len(padding) > 2 * (rank - 2):
            raise _Unsupported("it pads the channel dimension")
        return self.same_channels(node)

    def getitem(self, node: fx.Node) -> list[int]:
        self.input_layout(node)
        index, everything = node.args[1], slice(None)
        if not (isinstance(index, tuple) and len(index) >= 2 and index[:2] == (everything,) * 2):
            raise _Unsupported("indexing that is not [:, :, ...] selects channels")
        return self.same_channels(node)


class _Tracer(fx.Tracer):
    """The default fx tracer, plus ``ChannelPadShortcut`` as a leaf module."""

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return isinstance(module, ChannelPadShortcut) or super().is_leaf_module(
            module, qualified_name
        )


def _traced_with_shapes(model: nn.Module, example_input: torch.Tensor) -> fx.GraphModule:
    with eval_mode(model), torch.no_grad():
        try:
            model(example_input)
        except Exception as err:
            raise UserError(
                f"the model does not run on an example input of shape "
                f"{tuple(example_input.shape)} ({err}): pass an input the model accepts"
            ) from err
        try:
            graph = _Tracer().trace(model)
        except Exception as err:
            raise UserError(
                f"cannot trace {type(model).__name__} with torch.fx ({err}): structured pruning "
                "needs a forward without data-dependent control flow"
            ) from err
        module = fx.GraphModule(model, graph)
        ShapeProp(module).propagate(example_input)
    return module


def _group_name(axes: tuple[Axis, ...], taken: set[str]) -> str:
    producer = next((axis.module for axis in axes if axis.role == "out"), None)
    name = producer if producer is not None else f"{axes[0].module}:in"
    suffix = 2
    unique = name
    while unique in taken:
        unique, suffix = f"{name}#{suffix}", suffix + 1
    taken.add(unique)
    return unique


def _groups(tracer: _ChannelTracer) -> list[ChannelGroup]:
    channels: dict[int, Channel] = {}
    for axis, elements in tracer.axes.items():
        for position, element in enumerate(elements):
            channel = channels.setdefault(tracer.find(element), {})
            channel[axis] = (*channel.get(axis, ()), position)
    by_signature: dict[tuple[tuple[Axis, ...], bool], list[int]] = {}
    for root, channel in channels.items():
        by_signature.setdefault((tuple(channel), root in tracer.reasons), []).append(root)
    groups, taken = [], set()
    for (axes, _), roots in by_signature.items():
        reasons = dict.fromkeys(tracer.reasons[r] for r in roots if r in tracer.reasons)
        reason = "; ".join(reasons) or None
        groups.append(ChannelGroup(_group_name(axes, taken), axes, [channels[r] for r in roots],
                                   reason))
    return groups


def build_graph(model: nn.Module, example_input: torch.Tensor) -> DependencyGraph:
    """Trace ``model`` on ``example_input`` (one batch; shapes only) into a dependency graph."""
    tracer = _ChannelTracer(model)
    tracer.run(_traced_with_shapes(model, example_input).graph)
    return DependencyGraph(model, _groups(tracer))


def _produces(group: ChannelGroup, module: str) -> bool:
    return any(axis.module == module and axis.role == "out" for axis in group.axes)


class DependencyGraph:
    """The channel groups of ``model`` (see the module docstring); build it with
    :func:`build_graph`, and again after thinning."""

    def __init__(self, model: nn.Module, groups: list[ChannelGroup]) -> None:
        self.model = model
        self.groups = groups

    def group(self, name: str) -> ChannelGroup:
        """The group called ``name``."""
        for group in self.groups:
            if group.name == name:
                return group
        raise UserError(f"no channel group '{name}'{did_you_mean(name, self.names())}")

    def names(self) -> list[str]:
        """The group names, in graph order."""
        return [group.name for group in self.groups]

    def unprunable(self) -> dict[str, str]:
        """Group name -> why its channels cannot be removed."""
        return {group.name: group.reason for group in self.groups if not group.prunable}

    def prunable_report(self) -> str:
        """One line per group: name, channel count, layers it spans, prunable or why not."""
        lines = []
        for group in self.groups:
            modules = group.modules
            span = ", ".join(modules[:4])
            if len(modules) > 4:
                span += f", ... ({len(modules)} layers)"
            status = "prunable" if group.prunable else f"NOT prunable: {group.reason}"
            lines.append(f"{group.name}: {len(group.channels)} channels over {span}; {status}")
        return "\n".join(lines)

    def select(self, layers: Iterable[str] | None = None) -> list[ChannelGroup]:
        """The prunable groups (all when ``layers`` is None) named by group or producing layer.

        A layer name selects every group holding some of its output channels; naming a layer
        the graph cannot prune raises a :class:`UserError` that lists why.
        """
        if layers is None:
            return [group for group in self.groups if group.prunable]
        if isinstance(layers, str):
            layers = [layers]
        chosen: dict[str, ChannelGroup] = {}
        for layer in layers:
            matches = [g for g in self.groups if g.name == layer or _produces(g, layer)]
            if not matches:
                known = dict.fromkeys([*self.names(), *(m for g in self.groups for m in g.modules)])
                raise UserError(f"no layer '{layer}' with channels to prune"
                                f"{did_you_mean(layer, known)}")
            chosen.update((group.name, group) for group in matches)
        blocked = [group for group in chosen.values() if not group.prunable]
        if blocked:
            details = "; ".join(f"'{group.name}': {group.reason}" for group in blocked)
            raise UserError(f"cannot prune these layers: {details}")
        return list(chosen.values())

    # -- tensors of a channel ---------------------------------------------------------------
    def module(self, axis: Axis) -> nn.Module:
        """The layer of ``axis``; a :class:`UserError` when its size changed (thinned since)."""
        module = self.model.get_submodule(axis.module)
        current = axis_size(module, axis.role)
        if current is not None and current != axis.size:
            raise UserError(
                f"the dependency graph is out of date: '{axis.module}' has {current} "
                f"{axis.role}put channels, not {axis.size}; build the graph again after thinning"
            )
        return module

    def parameters_on(self, axis: Axis) -> list[tuple[str, nn.Parameter, int]]:
        """(full name, parameter, dim) of the parameters indexed by ``axis``."""
        module = self.module(axis)
        prefix = f"{axis.module}." if axis.module else ""
        return [
            (prefix + name, module._parameters[name], dim)
            for name, dim in axis_tensors(module, axis.role)
            if name in module._parameters
        ]

    def zero_channels(self, group: ChannelGroup) -> torch.Tensor:
        """Per channel of ``group``: True when its parameters (if any) are all exactly zero."""
        nonzero = torch.zeros(len(group.channels), dtype=torch.long)
        has_parameters = False
        for axis in group.axes:
            positions, owners = group.index_on(axis)
            for _, param, dim in self.parameters_on(axis):
                per_position = param.detach().ne(0).transpose(0, dim).reshape(axis.size, -1).any(1)
                nonzero.index_add_(0, owners, per_position[positions].long())
                has_parameters = True
        return (nonzero == 0) & has_parameters

