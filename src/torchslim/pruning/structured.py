"""Structured pruning: zero whole channels, ranked by weight norms, BatchNorm scales or at random.

A :class:`StructuredPruner` ranks the channels of every :class:`~torchslim.graph.ChannelGroup`
of a :class:`~torchslim.graph.DependencyGraph` with an importance strategy
(:mod:`~torchslim.pruning.importance`) and removes the lowest ones; its sparsity may be a
schedule (:mod:`~torchslim.pruning.schedules`), so a structured AGP is
``StructuredPruner(AGP(0.1, 0.5), WeightNorm())`` in a schedule. The usual combinations have
names:

============================  ============================================================
:class:`FilterNormPruner`     L1 or L2 norm of the filters producing the channel (Li et al.
                              2017; Distiller's ``L1RankedStructureParameterPruner``, ``3D``)
:class:`ChannelNormPruner`    L1 or L2 norm of the input-channel slices consuming it
                              (Distiller's group ``Channels``)
:class:`BNGammaPruner`        ``|gamma|`` of its BatchNorm (network slimming, Liu et al. 2017)
:class:`RandomChannelPruner`  uniformly at random, seeded (cf. Distiller's
                              ``BernoulliFilterPruner``, but with an exact count)
============================  ============================================================

Channels whose parameters are already all zero score ``-inf``: they count towards the target
first.

*How many.* ``sparsity`` is the fraction of channels to remove. Per group (the default, uniform
sparsity) that is ``floor(sparsity * n + 0.5)`` of its ``n`` channels, i.e. rounded half up, or
with ``rounding="floor"`` ``floor(sparsity * n)`` as Distiller removes (its classes use that),
but at most ``n - 1``: every group keeps at least one channel. With ``global_ranking=True`` one
threshold runs over the channels of all selected groups together: the same rounding over their
total, the lowest scores first, skipping any channel that would be the last of its group.

*Pruning* zeroes, through a :class:`~torchslim.pruning.masks.Masks` object, every parameter
slice of a removed channel: the filters and biases producing it, BatchNorm gamma and beta (so the
channel is exactly zero after the BatchNorm), and the input slices of every layer consuming it.
:func:`~torchslim.pruning.thinning.thin` then removes such channels physically.

Example::

    >>> import torch
    >>> from torchslim.models import create_model
    >>> from torchslim.graph import build_graph
    >>> from torchslim.pruning.masks import Masks
    >>> from torchslim.pruning.structured import FilterNormPruner
    >>> model = create_model("demo_cnn")
    >>> graph = build_graph(model, torch.zeros(1, 1, 8, 8))
    >>> removed = FilterNormPruner(0.5).apply(graph, Masks(model))
    >>> {name: len(channels) for name, channels in removed.items()}
    {'features.0.0': 16, 'features.1.0': 32, 'features.3.0': 32}
    >>> int((model.features[0][0].weight.flatten(1).abs().sum(1) == 0).sum())
    16
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from ..core.errors import UserError
from ..graph import ChannelGroup, DependencyGraph
from .importance import BNScale, Importance, RandomImportance, WeightNorm
from .masks import Masks
from .schedules import SparsitySchedule, as_schedule

ROUNDING = ("half_up", "floor")


def removal_count(sparsity: float, channels: int, round_to: int = 1,
                  rounding: str = "half_up") -> int:
    """How many of ``channels`` to remove: ``sparsity * channels`` rounded half up (or down,
    with ``rounding="floor"``, as Distiller does), at most all but one. With ``round_to`` > 1 the
    number kept is moved to the nearest multiple of it (at least one multiple, at most all
    channels): kernels run faster on such channel counts.

    >>> removal_count(0.5, 16), removal_count(0.25, 10), removal_count(0.9, 3), removal_count(0, 4)
    (8, 3, 2, 0)
    >>> removal_count(0.6, 16), removal_count(0.6, 16, rounding="floor")
    (10, 9)
    >>> removal_count(0.32, 64, round_to=8), removal_count(0.32, 16, round_to=8)
    (16, 8)
    """
    exact = sparsity * channels
    # A hair of tolerance: 0.3 * 64 is 19.199999999999996 in floating point.
    count = math.floor(exact + 1e-9) if rounding == "floor" else math.floor(exact + 0.5)
    removed = min(count, channels - 1)
    if round_to > 1 and removed:
        kept = max(round_to, round_to * math.floor((channels - removed) / round_to + 0.5))
        removed = channels - min(kept, channels)
    return removed


class StructuredPruner:
    """Removes the ``sparsity`` fraction of channels (a number or a
    :mod:`~torchslim.pruning.schedules` schedule) that ``importance`` scores lowest, per group
    or with one global threshold (see the module docstring)."""

    def __init__(
        self,
        sparsity: float | SparsitySchedule,
        importance: Importance,
        *,
        global_ranking: bool = False,
        round_to: int = 1,
        rounding: str = "half_up",
        leader: str | None = None,
        consumers: Iterable[str] | None = None,
    ) -> None:
        self.leader = leader
        self.consumers = list(consumers) if consumers is not None else None
        if rounding not in ROUNDING:
            raise UserError(f"rounding must be one of {', '.join(ROUNDING)}, got {rounding!r}")
        self.rounding = rounding
        self.schedule = as_schedule(sparsity)
        self.importance = importance
        self.global_ranking = global_ranking
        if round_to < 1 or (round_to > 1 and global_ranking):
            raise UserError(
                f"round_to must be >= 1 and works with per-group ranking only, got {round_to}"
                + (" with global ranking" if global_ranking else "")
            )
        self.round_to = round_to

    @property
    def sparsity(self) -> float:
        """The final fraction of channels removed."""
        return self.schedule.final

    def can_rank(self, graph: DependencyGraph, group: ChannelGroup) -> bool:
        """Whether the importance strategy can score ``group``."""
        return self.importance.can_rank(graph, group)

    def _scores(self, graph: DependencyGraph, groups: list[ChannelGroup]) -> list[torch.Tensor]:
        for group in groups:
            if not self.can_rank(graph, group):
                raise UserError(
                    f"{type(self).__name__} has nothing to rank group '{group.name}' by: "
                    "choose other layers or another pruner"
                )
        self.importance.start()
        return [
            self.importance.scores(graph, group).masked_fill(graph.zero_channels(group), -math.inf)
            for group in groups
        ]

    def select(
        self, graph: DependencyGraph, layers: Iterable[str] | None = None, progress: float = 1.0
    ) -> dict[str, list[int]]:
        """Group name -> indices (into ``group.channels``) of the channels to remove at
        ``progress`` of the schedule.

        ``layers`` names groups or layers (see :meth:`DependencyGraph.select`); by default every
        prunable group this pruner can rank.
        """
        groups = graph.select(layers)
        if layers is None:
            groups = [group for group in groups if self.can_rank(graph, group)]
        scores = self._scores(graph, groups)
        sparsity = self.schedule(progress)
        if self.leader is not None:
            return self._follow_leader(groups, scores, sparsity)
        if self.global_ranking:
            removed = _lowest_overall(scores, sparsity, self.rounding)
        else:
            removed = [_lowest(v, removal_count(sparsity, len(v), self.round_to, self.rounding))
                       for v in scores]
        return {group.name: chosen for group, chosen in zip(groups, removed, strict=True)}

    def _follow_leader(self, groups: list[ChannelGroup], scores: list[torch.Tensor],
                       sparsity: float) -> dict[str, list[int]]:
        """Distiller's ``group_dependency: Leader``: the channels the leader layer's group
        ranks lowest go in every selected group (all of the same width)."""
        lead = next((i for i, g in enumerate(groups) if self.leader in g.modules), None)
        if lead is None:
            raise UserError(f"the leader layer '{self.leader}' is in none of the selected "
                            "channel groups")
        width = len(groups[lead].channels)
        for group in groups:
            if len(group.channels) != width:
                raise UserError(
                    f"group_dependency Leader prunes the same channels everywhere, but group "
                    f"'{group.name}' has {len(group.channels)} channels and the leader's "
                    f"{width}: list layers of the same width"
                )
        count = removal_count(sparsity, width, self.round_to, self.rounding)
        chosen = _lowest(scores[lead], count)
        return {group.name: list(chosen) for group in groups}

    def as_step(self):
        """The schedule step that runs this pruner on every group it can rank."""
        from .steps import StructuredPruneStep

        return StructuredPruneStep(self)

    def compute_mask(
        self, graph: DependencyGraph, layers: Iterable[str] | None = None, progress: float = 1.0
    ) -> dict[str, torch.Tensor]:
        """Parameter name -> keep-mask that zeroes every slice of the selected channels."""
        return channel_masks(graph, self.select(graph, layers, progress))

    def apply(
        self,
        graph: DependencyGraph,
        masks: Masks,
        layers: Iterable[str] | None = None,
        progress: float = 1.0,
    ) -> dict[str, list[int]]:
        """Prune: add the masks of :meth:`compute_mask` to ``masks`` (and zero the weights).

        Returns what :meth:`select` chose.
        """
        if masks.model is not graph.model:
            raise UserError("the masks belong to another model than the dependency graph")
        removed = self.select(graph, layers, progress)
        for name, mask in channel_masks(graph, removed, self.consumers).items():
            masks.set(name, mask & masks[name] if name in masks else mask)
        return removed


def _lowest(scores: torch.Tensor, count: int) -> list[int]:
    return sorted(torch.argsort(scores, stable=True)[:count].tolist())


def _lowest_overall(scores: list[torch.Tensor], sparsity: float,
                    rounding: str = "half_up") -> list[list[int]]:
    if not scores:
        return []
    total = sum(len(values) for values in scores)
    budget = min(removal_count(sparsity, total, rounding=rounding), total - len(scores))
    owners = torch.cat([torch.full((len(v),), g) for g, v in enumerate(scores)])
    indices = torch.cat([torch.arange(len(v)) for v in scores])
    left = [len(values) for values in scores]
    removed: list[list[int]] = [[] for _ in scores]
    for flat in torch.argsort(torch.cat(scores), stable=True).tolist():
        if budget == 0:
            break
        group = int(owners[flat])
        if left[group] > 1:
            removed[group].append(int(indices[flat]))
            left[group] -= 1
            budget -= 1
    return [sorted(chosen) for chosen in removed]


def channel_masks(
    graph: DependencyGraph, removed: dict[str, list[int]], consumers: Iterable[str] | None = None
) -> dict[str, torch.Tensor]:
    """Keep-masks (parameter name -> bool tensor) zeroing every slice of the ``removed`` channels
    (group name -> channel indices).

    With ``consumers`` (Distiller's channel pruning of named weights), a group some other layer
    still reads keeps its channels: only the input slices of those layers are zeroed, so
    thinning leaves the channels in place, as Distiller's does.
    """
    masks: dict[str, torch.Tensor] = {}
    for group_name, indices in removed.items():
        group = graph.group(group_name)
        axes = group.axes
        if consumers is not None:
            readers = {a.module for a in axes if a.role == "in"}
            if not readers <= set(consumers):
                axes = tuple(a for a in axes if a.role == "in" and a.module in consumers)
        for axis in axes:
            positions, owners = group.index_on(axis)
            where = positions[torch.isin(owners, torch.tensor(indices, dtype=torch.long))]
            if len(where) == 0:
                continue
            for name, param, dim in graph.parameters_on(axis):
                mask = masks.setdefault(name, torch.ones_like(param, dtype=torch.bool))
                mask.index_fill_(dim, where.to(param.device), False)
    return masks


class _NormPruner(StructuredPruner):
    """Ranks channels by the Lp norm of the weight slices on the ``role`` side of them."""

    role = "out"

    def __init__(
        self,
        sparsity: float | SparsitySchedule,
        *,
        norm: int = 1,
        global_ranking: bool = False,
        normalize: bool = True,
        round_to: int = 1,
        rounding: str = "half_up",
        leader: str | None = None,
        consumers: Iterable[str] | None = None,
    ) -> None:
        super().__init__(sparsity, WeightNorm(norm, self.role, normalize=normalize),
                         global_ranking=global_ranking, round_to=round_to, rounding=rounding,
                         leader=leader, consumers=consumers)


class FilterNormPruner(_NormPruner):
    """Ranks channels by the L1 (``norm=1``) or L2 norm of the filters producing them."""

    role = "out"


class ChannelNormPruner(_NormPruner):
    """Ranks channels by the L1 or L2 norm of the weight slices of the layers consuming them."""

    role = "in"


class BNGammaPruner(StructuredPruner):
    """Ranks channels by ``|gamma|`` of their BatchNorm (network slimming).

    By default global ranking compares raw ``|gamma|`` across layers, as Liu et al. do;
    ``normalize=True`` divides by each layer's mean instead.
    """

    def __init__(
        self,
        sparsity: float | SparsitySchedule,
        *,
        global_ranking: bool = False,
        normalize: bool = False,
    ) -> None:
        super().__init__(sparsity, BNScale(normalize), global_ranking=global_ranking)


class RandomChannelPruner(StructuredPruner):
    """Removes channels chosen uniformly at random; the same ``seed`` gives the same choice."""

    def __init__(
        self, sparsity: float | SparsitySchedule, *, seed: int = 0, global_ranking: bool = False,
        rounding: str = "half_up",
    ) -> None:
        super().__init__(sparsity, RandomImportance(seed), global_ranking=global_ranking,
                         rounding=rounding)
        self.seed = seed
