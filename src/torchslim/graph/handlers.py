"""Handlers: what each layer type and each traced function does to channels.

A :class:`ModuleHandler` answers, for one layer type: how channels flow through a call
(:meth:`~ModuleHandler.trace`: couple the incoming elements with the layer's input axis, return
the elements of its output), which of its tensors are indexed by each axis
(:meth:`~ModuleHandler.tensors`, with a tag saying what the slice is: ``"weight"``, ``"bias"``,
``"scale"``, ``"shift"``, ``"stat"``), its current size along an axis, and how to keep only some
positions of an axis (:meth:`~ModuleHandler.resize`, used by thinning). A
:class:`FunctionHandler` answers how channels flow through a traced function.

Built-in module handlers: convolutions (1-3d, grouped, depthwise, transposed), Linear,
BatchNorm (and instance norm with affine parameters), LayerNorm and GroupNorm (approximate: their
statistics change when channels go), PReLU, Embedding. Users add their own with
:func:`~torchslim.graph.register_module`.

Example::

    >>> import torch
    >>> from torchslim.graph import handler_for
    >>> conv = torch.nn.Conv2d(4, 8, 3, groups=2)
    >>> handler = handler_for(conv)
    >>> handler.tensors(conv, "in"), handler.size(conv, "in"), handler.size(conv, "out")
    ([('weight', 1, 'weight')], 2, 8)
    >>> handler.resize(conv, {"out": [0, 1, 4, 5], "in": [1]})
    >>> conv
    Conv2d(2, 4, kernel_size=(3, 3), stride=(1, 1), groups=2)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd
from torch.nn.modules.instancenorm import _InstanceNorm

from .registry import register_module
from .tracer import Layout

if TYPE_CHECKING:
    from .build import TracedCall

#: (attribute name, dim, tag) of a tensor indexed by an axis.
TensorSlice = tuple[str, int, str]


class Unsupported(Exception):
    """A call touches channels in a way the graph cannot follow (the message says how)."""


def slice_tensor(module: nn.Module, name: str, dim: int, kept: Sequence[int]) -> None:
    """Keep only the ``kept`` positions along ``dim`` of the parameter or buffer ``name``."""
    old = getattr(module, name)
    if old is None:
        return
    index = torch.as_tensor(list(kept), dtype=torch.long, device=old.device)
    smaller = old.detach().index_select(dim, index)
    if name in module._parameters:
        setattr(module, name, nn.Parameter(smaller, requires_grad=old.requires_grad))
    else:
        setattr(module, name, smaller)


class ModuleHandler:
    """What one layer type means for channels (see the module docstring)."""

    #: False when removing a channel changes the outputs of the channels that stay (a norm
    #: whose statistics run over the channels); thinning then cannot be checked for equality.
    exact = True

    def trace(self, call: TracedCall) -> Any:
        """Couple the call's input elements with this layer's axes; return its output."""
        raise NotImplementedError

    def tensors(self, module: nn.Module, role: str) -> list[TensorSlice]:
        """The tensors indexed by the ``role`` axis: (attribute, dim, tag)."""
        return []

    def size(self, module: nn.Module, role: str) -> int | None:
        """The current length of the ``role`` axis."""
        return None

    def resize(self, module: nn.Module, kept: Mapping[str, Sequence[int]]) -> None:
        """Keep only the ``kept[role]`` positions of each axis: slice the tensors, update the
        size attributes."""
        for role, positions in kept.items():
            for name, dim, _ in self.tensors(module, role):
                slice_tensor(module, name, dim, positions)
        self.set_sizes(module, {role: len(positions) for role, positions in kept.items()})

    def set_sizes(self, module: nn.Module, sizes: Mapping[str, int]) -> None:
        """Update the module's size attributes after :meth:`resize` sliced its tensors."""


class PassThrough(ModuleHandler):
    """A layer that keeps every channel where it is and holds per-channel tensors (a scale, a
    shift): ``tensors`` maps attribute names to the dim indexed by the channel; ``size_attr``
    names the attribute holding the channel count, if any; ``dim`` is the input's channel
    dimension (1 for NCHW, -1 for features last)."""

    def __init__(
        self,
        tensors: Mapping[str, int] | None = None,
        size_attr: str | None = None,
        dim: int = 1,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        self.per_channel = dict(tensors or {})
        self.size_attr = size_attr
        self.dim = dim
        self.tags = dict(tags or {})

    def trace(self, call: TracedCall) -> Layout:
        x = call.input()
        channels = call.tracer.channels(x, self.dim)
        size = self.size(call.module, "out")
        if size is not None and size != len(channels):
            raise Unsupported(f"it has {size} channels but its input has {len(channels)}")
        if self.per_channel:
            call.tracer.couple(channels, call.tracer.axis(call.path, "out", len(channels)))
        return x

    def tensors(self, module: nn.Module, role: str) -> list[TensorSlice]:
        if role != "out":
            return []
        return [
            (name, dim, self.tags.get(name, "scale"))
            for name, dim in self.per_channel.items()
            if getattr(module, name, None) is not None
        ]

    def size(self, module: nn.Module, role: str) -> int | None:
        if role != "out":
            return None
        if self.size_attr is not None:
            return int(getattr(module, self.size_attr))
        for name, dim, _ in self.tensors(module, role):
            return getattr(module, name).shape[dim]
        return None

    def set_sizes(self, module: nn.Module, sizes: Mapping[str, int]) -> None:
        if self.size_attr is not None and "out" in sizes:
            setattr(module, self.size_attr, sizes["out"])


class BatchNormHandler(PassThrough):
    """BatchNorm (any dimension) and InstanceNorm with affine parameters or running stats."""

    def __init__(self) -> None:
        super().__init__(
            {"weight": 0, "bias": 0, "running_mean": 0, "running_var": 0}, "num_features", 1,
            {"weight": "scale", "bias": "shift", "running_mean": "stat", "running_var": "stat"},
        )


class LayerNormHandler(PassThrough):
    """LayerNorm over the last dimension (features last). Approximate: its mean and variance
    run over the channels, so removing one changes the others slightly."""

    exact = False

    def __init__(self) -> None:
        super().__init__({"weight": 0, "bias": 0}, None, -1, {"weight": "scale", "bias": "shift"})

    def trace(self, call: TracedCall) -> Layout:
        if len(call.module.normalized_shape) != 1:
            raise Unsupported("LayerNorm over more than the last dimension is not followed")
        call.tracer.approximate[call.path] = "LayerNorm statistics run over the channels"
        return super().trace(call)

    def size(self, module: nn.Module, role: str) -> int | None:
        return module.normalized_shape[0] if role == "out" else None

    def set_sizes(self, module: nn.Module, sizes: Mapping[str, int]) -> None:
        if "out" in sizes:
            module.normalized_shape = (sizes["out"],)


class GroupNormHandler(PassThrough):
    """GroupNorm: every group keeps the same width (the same position goes from each group).
    Approximate: the group statistics change when channels go."""

    exact = False

    def __init__(self) -> None:
        super().__init__({"weight": 0, "bias": 0}, "num_channels", 1,
                         {"weight": "scale", "bias": "shift"})

    def trace(self, call: TracedCall) -> Layout:
        out = super().trace(call)
        module = call.module
        axis = call.tracer.axis(call.path, "out", module.num_channels)
        call.tracer.strided(axis, module.num_channels // module.num_groups)
        call.tracer.approximate[call.path] = "GroupNorm statistics run over the channels"
        return out


class PReLUHandler(PassThrough):
    """PReLU: one slope per channel (or one for all, then nothing to slice)."""

    def __init__(self) -> None:
        super().__init__({"weight": 0}, "num_parameters", 1, {"weight": "scale"})

    def trace(self, call: TracedCall) -> Layout:
        if call.module.num_parameters == 1:
            return call.input()
        return super().trace(call)


class ConvHandler(ModuleHandler):
    """Convolutions, 1-3d. The output axis holds the filters (weight dim 0, bias); the input
    axis holds the weight's dim 1, which for a grouped convolution is a position *within* a
    group: input position ``p`` of every group goes together, and output position ``q`` of every
    group too, so all groups keep the same width. A depthwise convolution (one input channel per
    group) passes each input channel on to its group's outputs instead. Transposed convolutions
    (groups = 1) swap the roles of the weight's first two dims."""

    def tensors(self, module: _ConvNd, role: str) -> list[TensorSlice]:
        out_dim, in_dim = (1, 0) if module.transposed else (0, 1)
        if role == "out":
            found = [("weight", out_dim, "weight")]
            return found + ([("bias", 0, "bias")] if module.bias is not None else [])
        if role == "in" and not _depthwise(module):
            return [("weight", in_dim, "weight")]
        return []

    def size(self, module: _ConvNd, role: str) -> int | None:
        if role == "out":
            return module.out_channels
        return module.in_channels // module.groups

    def trace(self, call: TracedCall) -> Layout:
        conv, t = call.module, call.tracer
        if conv.transposed and conv.groups > 1:
            raise Unsupported("grouped transposed convolutions are not followed")
        x = call.input()
        incoming = t.channels(x, 1)
        groups = conv.groups
        out = t.axis(call.path, "out", conv.out_channels)
        if _depthwise(conv):
            multiplier = conv.out_channels // groups
            t.couple(incoming.repeat_interleave(multiplier), out)
        else:
            per_group = conv.in_channels // groups
            axis_in = t.axis(call.path, "in", per_group)
            t.couple(incoming.reshape(groups, per_group), axis_in.expand(groups, per_group))
            if groups > 1:
                t.strided(out, conv.out_channels // groups)
        return t.along(call.out_shape, 1, out)

    def set_sizes(self, module: _ConvNd, sizes: Mapping[str, int]) -> None:
        if "out" in sizes:
            module.out_channels = sizes["out"]
        if "in" in sizes:
            module.in_channels = sizes["in"] * module.groups

    def resize(self, module: nn.Module, kept: Mapping[str, Sequence[int]]) -> None:
        if _depthwise(module) and "out" in kept:
            multiplier = module.out_channels // module.groups
            for name, dim, _ in self.tensors(module, "out"):
                slice_tensor(module, name, dim, kept["out"])
            module.out_channels = len(kept["out"])
            module.in_channels = module.groups = len(kept["out"]) // multiplier
            return
        super().resize(module, kept)


def _depthwise(module: _ConvNd) -> bool:
    return not module.transposed and module.groups > 1 and module.in_channels == module.groups


class LinearHandler(ModuleHandler):
    """Linear: features in the last dimension; output axis = weight rows and bias, input axis =
    weight columns."""

    def tensors(self, module: nn.Linear, role: str) -> list[TensorSlice]:
        if role == "out":
            return [("weight", 0, "weight")] + (
                [("bias", 0, "bias")] if module.bias is not None else []
            )
        return [("weight", 1, "weight")] if role == "in" else []

    def size(self, module: nn.Linear, role: str) -> int | None:
        return module.out_features if role == "out" else module.in_features

    def trace(self, call: TracedCall) -> Layout:
        linear, t = call.module, call.tracer
        x = call.input()
        if any(d != len(x.shape) - 1 for d in x.varying()):
            raise Unsupported("its input's channels are not all in the last dimension")
        t.couple(t.channels(x, -1), t.axis(call.path, "in", linear.in_features))
        return t.along(call.out_shape, -1, t.axis(call.path, "out", linear.out_features))

    def set_sizes(self, module: nn.Linear, sizes: Mapping[str, int]) -> None:
        module.out_features = sizes.get("out", module.out_features)
        module.in_features = sizes.get("in", module.in_features)


class EmbeddingHandler(ModuleHandler):
    """Embedding: its output features (weight dim 1) start new channels."""

    def tensors(self, module: nn.Embedding, role: str) -> list[TensorSlice]:
        return [("weight", 1, "weight")] if role == "out" else []

    def size(self, module: nn.Embedding, role: str) -> int | None:
        return module.embedding_dim if role == "out" else None

    def trace(self, call: TracedCall) -> Layout:
        axis = call.tracer.axis(call.path, "out", call.module.embedding_dim)
        return call.tracer.along(call.out_shape, -1, axis)

    def set_sizes(self, module: nn.Embedding, sizes: Mapping[str, int]) -> None:
        if "out" in sizes:
            module.embedding_dim = sizes["out"]


register_module(_ConvNd, ConvHandler())
register_module(nn.Linear, LinearHandler())
register_module(_BatchNorm, BatchNormHandler())
register_module(_InstanceNorm, BatchNormHandler())
register_module(nn.LayerNorm, LayerNormHandler())
register_module(nn.GroupNorm, GroupNormHandler())
register_module(nn.PReLU, PReLUHandler())
register_module(nn.Embedding, EmbeddingHandler())
