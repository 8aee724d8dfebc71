"""Channel importance: strategies that score the channels of a group (higher = keep).

A structured pruner takes one of these (Torch-Pruning's "importance is a strategy object
passed in"): it decides *what* matters, the pruner decides *how many* go. Scores come from the
tensors the layers' handlers tag (:mod:`torchslim.graph.handlers`), so no strategy knows a layer
type.

==========================  ======================================================================
:class:`WeightNorm`         Lp norm of the slices of tagged tensors on one side of the channel:
                            the filters producing it (``role="out"``, Li et al. 2017) or the
                            input slices consuming it (``role="in"``)
:class:`BNScale`            ``|gamma|`` of the channel's normalisation layer (network slimming,
                            Liu et al. 2017)
:class:`RandomImportance`   uniform at random, seeded (a baseline)
==========================  ======================================================================

*Coupled channels.* A group's channels span several layers (every block of a residual stage).
Each scored tensor (a *member*) gives per-channel norms; with ``normalize=True`` they are
divided by their mean over the group, so no layer dominates by the scale of its weights, and a
channel's score is the mean over the members.

Example::

    >>> import torch
    >>> from torchslim.graph import build_graph
    >>> from torchslim.pruning.importance import BNScale, WeightNorm
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 1), torch.nn.BatchNorm2d(3),
    ...                             torch.nn.Conv2d(3, 1, 1))
    >>> with torch.no_grad():
    ...     _ = model[0].weight.copy_(torch.tensor([1.0, 3.0, 2.0]).view(3, 1, 1, 1))
    ...     _ = model[1].weight.copy_(torch.tensor([0.5, 0.1, 0.9]))
    >>> graph = build_graph(model, torch.zeros(1, 1, 4, 4))
    >>> group = graph.group("0")
    >>> WeightNorm(normalize=False).scores(graph, group).tolist()
    [1.0, 3.0, 2.0]
    >>> [round(v, 2) for v in BNScale().scores(graph, group).tolist()]
    [0.5, 0.1, 0.9]
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..core.errors import UserError
from ..graph import ChannelGroup, DependencyGraph


class Importance:
    """Base class: :meth:`scores` gives one value per channel of a group (higher = keep)."""

    def start(self) -> None:
        """Called once before a pruner scores the groups it selected (reseed here)."""

    def can_rank(self, graph: DependencyGraph, group: ChannelGroup) -> bool:
        """Whether ``group`` has what this strategy scores (e.g. a BatchNorm)."""
        return True

    def scores(self, graph: DependencyGraph, group: ChannelGroup) -> torch.Tensor:
        """Importance per channel of ``group``."""
        raise NotImplementedError


class WeightNorm(Importance):
    """The Lp norm (``p`` = 1 or 2) of the slices of tensors tagged ``tags`` on the ``role``
    side of each channel (see the module docstring)."""

    def __init__(
        self,
        p: int = 1,
        role: str = "out",
        tags: Sequence[str] = ("weight",),
        normalize: bool = True,
    ) -> None:
        if p not in (1, 2):
            raise UserError(f"norm must be 1 (L1) or 2 (L2), got {p}")
        if role not in ("out", "in"):
            raise UserError(f"role must be 'out' (filters) or 'in' (input slices), got {role!r}")
        self.p, self.role, self.tags, self.normalize = p, role, tuple(tags), normalize

    def _members(self, graph: DependencyGraph, group: ChannelGroup):
        for axis in group.axes:
            if axis.role != self.role:
                continue
            for tensor in graph.tensors_on(axis):
                if tensor.tag in self.tags:
                    yield axis, tensor

    def can_rank(self, graph: DependencyGraph, group: ChannelGroup) -> bool:
        return any(True for _ in self._members(graph, group))

    def scores(self, graph: DependencyGraph, group: ChannelGroup) -> torch.Tensor:
        per_member = []
        for axis, tensor in self._members(graph, group):
            values = tensor.tensor.detach().float().transpose(0, tensor.dim)
            per_position = values.reshape(axis.size, -1).abs().pow(self.p).sum(1).cpu()
            positions, owners = group.index_on(axis)
            sums = torch.zeros(len(group.channels)).index_add_(0, owners, per_position[positions])
            norms = sums ** (1 / self.p)
            if self.normalize and norms.mean() > 0:
                norms = norms / norms.mean()
            per_member.append(norms)
        if not per_member:
            raise UserError(f"group '{group.name}' has no {self.role} tensors tagged "
                            f"{'/'.join(self.tags)} to score")
        return torch.stack(per_member).mean(0)


class BNScale(WeightNorm):
    """``|gamma|`` of the channel's normalisation layer; raw by default, so global ranking
    compares gammas across layers as Liu et al. do."""

    def __init__(self, normalize: bool = False) -> None:
        super().__init__(p=1, role="out", tags=("scale",), normalize=normalize)


class RandomImportance(Importance):
    """Uniform random scores; the same ``seed`` gives the same choice every time."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._generator = torch.Generator().manual_seed(seed)

    def start(self) -> None:
        self._generator.manual_seed(self.seed)

    def scores(self, graph: DependencyGraph, group: ChannelGroup) -> torch.Tensor:
        return torch.rand(len(group.channels), generator=self._generator)
