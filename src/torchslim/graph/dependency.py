"""The channel dependency graph of a model: which channels of which layers go together.

One *channel* is everything that has to go when one channel is removed (filters, BatchNorm
entries, the matching input slices of every consumer, across residual additions and
concatenations). A :class:`ChannelGroup` collects the channels that touch exactly the same
layers, e.g. the output channels of one convolution with its BatchNorm and the next layer's
inputs; it is named after its first producing layer. Channels that reach the model's input or
output, or an op the graph cannot follow, are not prunable, and :meth:`DependencyGraph.unprunable`
says why, layer by layer.

Example::

    >>> import torch
    >>> from torchslim.graph import build_graph
    >>> from torchslim.models import create_model
    >>> graph = build_graph(create_model("cifar_resnet20"), torch.zeros(1, 3, 32, 32))
    >>> [(group.name, len(group.channels)) for group in graph.groups if group.prunable][:3]
    [('conv1', 16), ('layer1.0.conv1', 16), ('layer1.1.conv1', 16)]
    >>> graph.unprunable()
    {'conv1:in': 'model input', 'linear': 'model output'}
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import nn

from ..core.errors import UserError, did_you_mean
from .registry import handler_for
from .tracer import Axis, Site

#: A channel: the positions it occupies on every layer axis it touches.
Channel = dict[Axis, tuple[int, ...]]


class AxisTensor(NamedTuple):
    """A parameter or buffer indexed by an axis: full name, tensor, dim, tag (``"weight"``,
    ``"bias"``, ``"scale"``, ``"shift"``, ``"stat"``), and whether it is a parameter."""

    name: str
    tensor: torch.Tensor
    dim: int
    tag: str
    is_parameter: bool


@dataclass
class ChannelGroup:
    """Channels that touch the same layers; ``reason`` says why they cannot be pruned (or None);
    ``approximate`` names layers whose outputs change slightly when a channel goes (norms over
    the channels)."""

    name: str
    axes: tuple[Axis, ...]
    channels: list[Channel]
    reason: str | None = None
    approximate: dict[str, str] = field(default_factory=dict)
    roots: list[int] = field(default_factory=list, repr=False)
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


def _produces(group: ChannelGroup, module: str) -> bool:
    return any(axis.module == module and axis.role == "out" for axis in group.axes)


class DependencyGraph:
    """The channel groups of ``model`` (see the module docstring): build it with
    :func:`~torchslim.graph.build_graph`, and again after thinning. ``sites`` are the pads and
    slices of channels thinning may rewrite; ``frontend`` is the tracer that read the model
    (``"fx"`` or ``"export"``)."""

    def __init__(
        self,
        model: nn.Module,
        groups: list[ChannelGroup],
        sites: list[Site] | None = None,
        frontend: str = "fx",
        roots: dict[int, int] | None = None,
    ) -> None:
        self.model = model
        self.groups = groups
        self.sites = list(sites or [])
        self.frontend = frontend
        self.roots = dict(roots or {})

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
            if group.prunable and group.approximate:
                status += f" (approximately: {'; '.join(sorted(set(group.approximate.values())))})"
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
        current = self.handler(axis).size(module, axis.role)
        if current is not None and current != axis.size:
            raise UserError(
                f"the dependency graph is out of date: '{axis.module}' has {current} "
                f"{axis.role}put channels, not {axis.size}; build the graph again after thinning"
            )
        return module

    def handler(self, axis: Axis) -> Any:
        """The handler of the layer of ``axis``."""
        return handler_for(self.model.get_submodule(axis.module))

    def tensors_on(self, axis: Axis) -> list[AxisTensor]:
        """Every parameter and buffer indexed by ``axis``."""
        module = self.module(axis)
        prefix = f"{axis.module}." if axis.module else ""
        found = []
        for name, dim, tag in self.handler(axis).tensors(module, axis.role):
            tensor = getattr(module, name, None)
            if tensor is not None:
                found.append(AxisTensor(prefix + name, tensor, dim, tag,
                                        name in module._parameters))
        return found

    def parameters_on(self, axis: Axis) -> list[tuple[str, nn.Parameter, int]]:
        """(full name, parameter, dim) of the parameters indexed by ``axis``."""
        return [(t.name, t.tensor, t.dim) for t in self.tensors_on(axis) if t.is_parameter]

    def zero_channels(self, group: ChannelGroup) -> torch.Tensor:
        """Per channel of ``group``: True when its parameters (if any) are all exactly zero."""
        return self._all_zero(group, group.axes)

    def unread_channels(self, group: ChannelGroup) -> torch.Tensor:
        """Per channel of ``group``: True when every layer that reads it (its input axes) has
        only zeros there, so no output depends on it whatever its producers hold. False for
        every channel of a group without readers, whose removal would not be exact, or whose
        tensors another layer shares (tied weights)."""
        none = torch.zeros(len(group.channels), dtype=torch.bool)
        readers = [axis for axis in group.axes if axis.role == "in"]
        if not readers or group.approximate:
            return none
        shared = self._shared_parameters()
        if any(id(param) in shared for axis in group.axes
               for _, param, _ in self.parameters_on(axis)):
            return none
        return self._all_zero(group, readers, reading=True)

    def _shared_parameters(self) -> set[int]:
        seen: dict[int, int] = {}
        for _, param in self.model.named_parameters(remove_duplicate=False):
            seen[id(param)] = seen.get(id(param), 0) + 1
        return {key for key, count in seen.items() if count > 1}

    def _all_zero(self, group: ChannelGroup, axes, reading: bool = False) -> torch.Tensor:
        """Per channel: its parameters on ``axes`` all zero. With ``reading``, an axis whose
        layer holds no parameter there (a parametrized weight) counts as reading every
        channel."""
        nonzero = torch.zeros(len(group.channels), dtype=torch.long)
        has_parameters = False
        for axis in axes:
            positions, owners = group.index_on(axis)
            if reading and not self.parameters_on(axis):
                nonzero += 1
                continue
            for _, param, dim in self.parameters_on(axis):
                per_position = param.detach().ne(0).transpose(0, dim).reshape(axis.size, -1).any(1)
                nonzero.index_add_(0, owners, per_position[positions].long().cpu())
                has_parameters = True
        return (nonzero == 0) & has_parameters

    def root(self, element: int) -> int:
        """The channel (union-find root) an element belongs to."""
        return self.roots.get(element, element)
