"""The engine of the channel graph: element ids that follow every channel through a trace.

Every position of every traced tensor carries the id of a *channel element*; a
:class:`Layout` holds them in a tensor of the traced tensor's shape, stored compressed (a
dimension along which every id is the same is kept with size 1). Layers own *axes* (the output
channels of a convolution, its input channels, a BatchNorm's features), each a list of fresh
elements. Handlers (:mod:`torchslim.graph.handlers`) *couple* elements that must be removed
together: a convolution couples the elements arriving at its input with its input axis, a
residual addition couples its two operands position by position, a concatenation just moves
ids. Data-movement ops (views, permutes, slices, concatenation, channel shuffles) are run on the
id tensors themselves, so the graph sees where every channel goes without a rule per op.
Coupling is a union-find; what ends up in one set is one *channel*: everything that goes when
it goes. Elements that reach the model's input or output, or an op the graph cannot follow,
carry a *reason* and their channels are not prunable.

Example::

    >>> import torch
    >>> from torchslim.graph.tracer import ChannelTracer, Layout
    >>> t = ChannelTracer(torch.nn.Identity())
    >>> a = t.fresh_layout((1, 4, 2, 2))
    >>> b = t.fresh_layout((1, 4, 2, 2))
    >>> t.couple(a.ids, b.ids)
    >>> [t.find(int(x)) == t.find(int(y)) for x, y in zip(t.channels(a, 1), t.channels(b, 1))]
    [True, True, True, True]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class TensorMeta:
    """Shape and dtype of a traced tensor (its data is never kept)."""

    shape: tuple[int, ...]
    dtype: torch.dtype


def compress(ids: torch.Tensor) -> torch.Tensor:
    """``ids`` with every dimension along which all ids agree narrowed to size 1."""
    for dim in range(ids.dim()):
        if ids.shape[dim] > 1 and bool((ids == ids.narrow(dim, 0, 1)).all()):
            ids = ids.narrow(dim, 0, 1)
    return ids.contiguous()


@dataclass
class Layout:
    """The element ids of one traced tensor: ``ids`` (compressed) broadcasts to ``shape``."""

    ids: torch.Tensor
    shape: tuple[int, ...]

    def full(self) -> torch.Tensor:
        """The ids at every position of the tensor."""
        return self.ids.expand(self.shape).contiguous()

    def varying(self) -> list[int]:
        """The dimensions along which the ids differ (those that carry channels)."""
        return [d for d in range(self.ids.dim()) if self.ids.shape[d] > 1]

    @classmethod
    def of(cls, ids: torch.Tensor) -> Layout:
        """A layout of the full id tensor ``ids``."""
        return cls(compress(ids), tuple(ids.shape))


@dataclass(frozen=True)
class Axis:
    """The output (``role="out"``) or input (``role="in"``) channels of one layer, as the
    layer's handler defines them (for a grouped convolution the input axis holds the positions
    within one group)."""

    module: str
    role: str
    size: int


@dataclass
class Site:
    """A traced function whose arguments name channel positions (a pad or a slice of the channel
    dimension): thinning must rewrite it when it removes such positions. ``inputs`` and
    ``outputs`` are the elements along ``dim`` before and after the op; ``parts`` (slices) are
    the input positions each output takes; ``spatial`` (pads) are the other dimensions' pads.
    ``rank`` is the input's number of dimensions. Only calls thinning can rewrite are sites:
    elsewhere the positions such a call depends on were frozen when the graph was traced."""

    family: str
    owner: str
    index: int
    node: str
    dim: int
    inputs: list[int]
    outputs: list[list[int]]
    parts: list[list[int]] = field(default_factory=list)
    spatial: list[int] = field(default_factory=list)
    rank: int = 0


class ChannelTracer:
    """Union-find over channel elements, the axes of layers, and the rewrite sites of a trace."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.parent: list[int] = []
        self.reasons: dict[int, str] = {}
        self.axes: dict[Axis, torch.Tensor] = {}
        self.sites: list[Site] = []
        self.approximate: dict[str, str] = {}

    # -- elements ------------------------------------------------------------------------------
    def fresh(self, count: int, reason: str | None = None) -> torch.Tensor:
        """``count`` new elements (with ``reason`` when they cannot be pruned)."""
        start = len(self.parent)
        self.parent.extend(range(start, start + count))
        if reason is not None:
            self.reasons.update(dict.fromkeys(range(start, start + count), reason))
        return torch.arange(start, start + count)

    def fresh_layout(
        self, shape: Sequence[int], reason: str | None = None, dim: int = 1
    ) -> Layout:
        """A tensor of ``shape`` with fresh elements along ``dim`` (one element for tensors of
        rank < 2), constant along the other dimensions."""
        shape = tuple(shape)
        if len(shape) < 2:
            return Layout(self.fresh(1, reason).view((1,) * len(shape)), shape)
        view = [1] * len(shape)
        view[dim] = shape[dim]
        return Layout(self.fresh(shape[dim], reason).view(view), shape)

    def find(self, element: int) -> int:
        parent = self.parent
        while parent[element] != element:
            parent[element] = parent[parent[element]]
            element = parent[element]
        return element

    def _union(self, a: int, b: int) -> None:
        root_a, root_b = self.find(a), self.find(b)
        if root_a != root_b:
            self.parent[root_b] = root_a
            if root_b in self.reasons:
                self.reasons.setdefault(root_a, self.reasons.pop(root_b))

    def couple(self, first: torch.Tensor, second: torch.Tensor) -> None:
        """Tie the elements of two equally shaped (or broadcastable) id tensors position by
        position: what goes at one position goes at the other."""
        first, second = torch.broadcast_tensors(first, second)
        pairs = torch.stack([first.reshape(-1), second.reshape(-1)])
        pairs = pairs[:, pairs[0] != pairs[1]]
        if pairs.numel():
            for a, b in torch.unique(pairs, dim=1).t().tolist():
                self._union(a, b)

    def couple_all(self, elements: torch.Tensor) -> None:
        """Tie every element of ``elements`` together."""
        flat = torch.unique(elements.reshape(-1))
        if flat.numel() > 1:
            self.couple(flat[:1].expand(flat.numel() - 1), flat[1:])

    def fix(self, elements: torch.Tensor | Sequence[int], reason: str) -> None:
        """Mark the channels of ``elements`` as not prunable, for ``reason``."""
        for element in torch.unique(torch.as_tensor(elements).reshape(-1)).tolist():
            self.reasons.setdefault(self.find(element), reason)

    # -- layouts ---------------------------------------------------------------------------------
    def channels(self, layout: Layout, dim: int) -> torch.Tensor:
        """One element per position along ``dim`` of ``layout``. Where the ids also vary along
        other dimensions (channels spread over space, as after a pixel shuffle), the elements
        of each position are tied together first."""
        dim = dim % len(layout.shape)
        size = layout.shape[dim]
        ids = layout.ids.expand(
            [size if d == dim else s for d, s in enumerate(layout.ids.shape)]
        )
        rows = ids.movedim(dim, 0).reshape(size, -1)
        first = rows[:, 0]
        if rows.shape[1] > 1 and bool((rows != first[:, None]).any()):
            self.couple(first[:, None].expand_as(rows), rows)
        return first.clone()

    def along(self, shape: Sequence[int], dim: int, elements: torch.Tensor) -> Layout:
        """A layout of ``shape`` carrying ``elements`` along ``dim``, constant elsewhere."""
        shape = tuple(shape)
        dim = dim % len(shape)
        view = [1] * len(shape)
        view[dim] = shape[dim]
        return Layout(elements.reshape(view), shape)

    def axis(self, module: str, role: str, size: int) -> torch.Tensor:
        """The elements of a layer's axis (made on first use; a layer called twice shares
        them)."""
        key = Axis(module, role, size)
        if key not in self.axes:
            self.axes[key] = self.fresh(size)
        return self.axes[key]

    def strided(self, elements: torch.Tensor, period: int) -> None:
        """Tie position ``j`` of every block of ``period`` positions together (``period``
        divides the length): removals then leave every block the same width."""
        blocks = elements.reshape(-1, period)
        if blocks.shape[0] > 1:
            self.couple(blocks[:1].expand_as(blocks), blocks)

    def unsupported(self, layouts: Sequence[Any], reason: str) -> None:
        """Freeze the channels of every layout in ``layouts`` (an op the graph cannot follow)."""
        for layout in layouts:
            if isinstance(layout, Layout):
                self.fix(layout.ids, reason)
