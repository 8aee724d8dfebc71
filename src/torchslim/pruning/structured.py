"""Structured pruning: zero whole channels, ranked by weight norms, BatchNorm scales or at random.

Each pruner ranks the channels of every :class:`~torchslim.pruning.graph.ChannelGroup` of a
:class:`~torchslim.pruning.graph.DependencyGraph` and removes the lowest ones:

============================  ============================================================
:class:`FilterNormPruner`     L1 or L2 norm of the filters producing the channel (Li et al.
                              2017; Distiller's ``L1RankedStructureParameterPruner``, ``3D``)
:class:`ChannelNormPruner`    L1 or L2 norm of the input-channel slices consuming it
                              (Distiller's group ``Channels``)
:class:`BNGammaPruner`        ``|gamma|`` of its BatchNorm (network slimming, Liu et al. 2017)
:class:`RandomChannelPruner`  uniformly at random, seeded (cf. Distiller's
                              ``BernoulliFilterPruner``, but with an exact count)
============================  ============================================================

*Coupled channels.* The channels of a group span the same layers (e.g. every block of a
residual stage). Each scored tensor of those layers (a member: a filter bank, a BatchNorm) gives
per-channel norms; with ``normalize=True`` they are divided by their mean over the group, so no
layer dominates by the scale of its weights, and a channel's score is the mean over the members.
Channels whose parameters are already all zero score ``-inf``: they count towards the target
first.

*How many.* ``sparsity`` is the fraction of channels to remove. Per group (the default, uniform
sparsity) that is ``floor(sparsity * n + 0.5)`` of its ``n`` channels, i.e. rounded half up, but
at most ``n - 1``: every group keeps at least one channel. With ``global_ranking=True`` one
threshold runs over the channels of all selected groups together: the same rounding over their
total, the lowest scores first, skipping any channel that would be the last of its group.

*Pruning* zeroes, through a :class:`~torchslim.pruning.masks.Masks` object, every parameter
slice of a removed channel: the filters and biases producing it, BatchNorm gamma and beta (so the
channel is exactly zero after the BatchNorm), and the input slices of every layer consuming it.
:func:`~torchslim.pruning.thinning.thin` then removes such channels physically.

Example::

    >>> import torch
    >>> from torchslim.models import create_model
    >>> from torchslim.pruning.graph import build_graph
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
from abc import ABC, abstractmethod
from collections.abc import Iterable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

from ..core.errors import UserError
from .graph import Axis, ChannelGroup, DependencyGraph
from .masks import Masks


def removal_count(sparsity: float, channels: int, round_to: int = 1) -> int:
    """How many of ``channels`` to remove: ``sparsity * channels`` rounded half up, at most all
    but one. With ``round_to`` > 1 the number kept is moved to the nearest multiple of it (at
    least one multiple, at most all channels): kernels run faster on such channel counts.

    >>> removal_count(0.5, 16), removal_count(0.25, 10), removal_count(0.9, 3), removal_count(0, 4)
    (8, 3, 2, 0)
    >>> removal_count(0.32, 64, round_to=8), removal_count(0.32, 16, round_to=8)
    (16, 8)
    """
    removed = min(math.floor(sparsity * channels + 0.5), channels - 1)
    if round_to > 1 and removed:
        kept = max(round_to, round_to * math.floor((channels - removed) / round_to + 0.5))
        removed = channels - min(kept, channels)
    return removed


def _check_sparsity(sparsity: float) -> float:
    if not 0 <= sparsity < 1:
        raise UserError(f"sparsity must be in [0, 1) (a fraction of channels), got {sparsity}")
    return float(sparsity)


class StructuredPruner(ABC):
    """Ranks the channels of each group by :meth:`channel_scores` and removes the lowest."""

    def __init__(
        self, sparsity: float, *, global_ranking: bool = False, round_to: int = 1
    ) -> None:
        self.sparsity = _check_sparsity(sparsity)
        self.global_ranking = global_ranking
        if round_to < 1 or (round_to > 1 and global_ranking):
            raise UserError(
                f"round_to must be >= 1 and works with per-group ranking only, got {round_to}"
                + (" with global ranking" if global_ranking else "")
            )
        self.round_to = round_to

    @abstractmethod
    def can_rank(self, graph: DependencyGraph, group: ChannelGroup) -> bool:
        """Whether ``group`` has what this pruner ranks by (e.g. a BatchNorm)."""

    @abstractmethod
    def channel_scores(self, graph: DependencyGraph, group: ChannelGroup) -> torch.Tensor:
        """Importance per channel of ``group`` (higher = keep)."""

    def _scores(self, graph: DependencyGraph, groups: list[ChannelGroup]) -> list[torch.Tensor]:
        for group in groups:
            if not self.can_rank(graph, group):
                raise UserError(
                    f"{type(self).__name__} has nothing to rank group '{group.name}' by: "
                    "choose other layers or another pruner"
                )
        return [
            self.channel_scores(graph, group).masked_fill(graph.zero_channels(group), -math.inf)
            for group in groups
        ]

    def select(
        self, graph: DependencyGraph, layers: Iterable[str] | None = None
    ) -> dict[str, list[int]]:
        """Group name -> indices (into ``group.channels``) of the channels to remove.

        ``layers`` names groups or layers (see :meth:`DependencyGraph.select`); by default every
        prunable group this pruner can rank.
        """
        groups = graph.select(layers)
        if layers is None:
            groups = [group for group in groups if self.can_rank(graph, group)]
        scores = self._scores(graph, groups)
        if self.global_ranking:
            removed = _lowest_overall(scores, self.sparsity)
        else:
            removed = [
                _lowest(v, removal_count(self.sparsity, len(v), self.round_to)) for v in scores
            ]
        return {group.name: chosen for group, chosen in zip(groups, removed, strict=True)}

    def as_step(self):
        """The schedule step that runs this pruner on every group it can rank."""
        from .steps import StructuredPruneStep

        return StructuredPruneStep(self)

    def compute_mask(
        self, graph: DependencyGraph, layers: Iterable[str] | None = None
    ) -> dict[str, torch.Tensor]:
        """Parameter name -> keep-mask that zeroes every slice of the selected channels."""
        return channel_masks(graph, self.select(graph, layers))

    def apply(
        self, graph: DependencyGraph, masks: Masks, layers: Iterable[str] | None = None
    ) -> dict[str, list[int]]:
        """Prune: add the masks of :meth:`compute_mask` to ``masks`` (and zero the weights).

        Returns what :meth:`select` chose.
        """
        if masks.model is not graph.model:
            raise UserError("the masks belong to another model than the dependency graph")
        removed = self.select(graph, layers)
        for name, mask in channel_masks(graph, removed).items():
            masks.set(name, mask & masks[name] if name in masks else mask)
        return removed


def _lowest(scores: torch.Tensor, count: int) -> list[int]:
    return sorted(torch.argsort(scores, stable=True)[:count].tolist())


def _lowest_overall(scores: list[torch.Tensor], sparsity: float) -> list[list[int]]:
    if not scores:
        return []
    total = sum(len(values) for values in scores)
    budget = min(math.floor(sparsity * total + 0.5), total - len(scores))
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


def channel_masks(graph: DependencyGraph, removed: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    """Keep-masks (parameter name -> bool tensor) zeroing every slice of the ``removed`` channels
    (group name -> channel indices)."""
    masks: dict[str, torch.Tensor] = {}
    for group_name, indices in removed.items():
        group = graph.group(group_name)
        for axis in group.axes:
            positions, owners = group.index_on(axis)
            where = positions[torch.isin(owners, torch.tensor(indices, dtype=torch.long))]
            if len(where) == 0:
                continue
            for name, param, dim in graph.parameters_on(axis):
                mask = masks.setdefault(name, torch.ones_like(param, dtype=torch.bool))
                mask.index_fill_(dim, where.to(param.device), False)
    return masks


class _NormRankedPruner(StructuredPruner):
    """Scores channels by the Lp norm of one tensor slice per member layer (see module docs)."""

    def __init__(
        self,
        sparsity: float,
        *,
        norm: int = 1,
        global_ranking: bool = False,
        normalize: bool = True,
        round_to: int = 1,
    ) -> None:
        super().__init__(sparsity, global_ranking=global_ranking, round_to=round_to)
        if norm not in (1, 2):
            raise UserError(f"norm must be 1 (L1) or 2 (L2), got {norm}")
        self.norm = norm
        self.normalize = normalize

    @abstractmethod
    def scored_dim(self, module: nn.Module, axis: Axis) -> int | None:
        """The dim of ``module.weight`` whose slices along ``axis`` are scored, or None."""

    def can_rank(self, graph: DependencyGraph, group: ChannelGroup) -> bool:
        return any(self.scored_dim(graph.module(axis), axis) is not None for axis in group.axes)

    def channel_scores(self, graph: DependencyGraph, group: ChannelGroup) -> torch.Tensor:
        per_member = []
        for axis in group.axes:
            module = graph.module(axis)
            dim = self.scored_dim(module, axis)
            if dim is None:
                continue
            weight = module.weight.detach().float().transpose(0, dim)
            per_position = weight.reshape(axis.size, -1).abs().pow(self.norm).sum(1)
            positions, owners = group.index_on(axis)
            sums = torch.zeros(len(group.channels)).index_add_(0, owners, per_position[positions])
            values = sums ** (1 / self.norm)
            if self.normalize and values.mean() > 0:
                values = values / values.mean()
            per_member.append(values)
        return torch.stack(per_member).mean(0)


class FilterNormPruner(_NormRankedPruner):
    """Ranks channels by the L1 (``norm=1``) or L2 norm of the filters producing them."""

    def scored_dim(self, module: nn.Module, axis: Axis) -> int | None:
        is_filter = isinstance(module, nn.Linear | _ConvNd) and axis.role == "out"
        return 0 if is_filter else None


class ChannelNormPruner(_NormRankedPruner):
    """Ranks channels by the L1 or L2 norm of the weight slices of the layers consuming them."""

    def scored_dim(self, module: nn.Module, axis: Axis) -> int | None:
        is_input = isinstance(module, nn.Linear | _ConvNd) and axis.role == "in"
        return 1 if is_input else None


class BNGammaPruner(_NormRankedPruner):
    """Ranks channels by ``|gamma|`` of their BatchNorm (network slimming).

    By default global ranking compares raw ``|gamma|`` across layers, as Liu et al. do;
    ``normalize=True`` divides by each layer's mean instead.
    """

    def __init__(
        self, sparsity: float, *, global_ranking: bool = False, normalize: bool = False
    ) -> None:
        super().__init__(sparsity, norm=1, global_ranking=global_ranking, normalize=normalize)

    def scored_dim(self, module: nn.Module, axis: Axis) -> int | None:
        has_gamma = isinstance(module, _BatchNorm) and module.weight is not None
        return 0 if has_gamma else None


class RandomChannelPruner(StructuredPruner):
    """Removes channels chosen uniformly at random; the same ``seed`` gives the same choice."""

    def __init__(self, sparsity: float, *, seed: int = 0, global_ranking: bool = False) -> None:
        super().__init__(sparsity, global_ranking=global_ranking)
        self.seed = seed
        self._generator = torch.Generator().manual_seed(seed)

    def select(
        self, graph: DependencyGraph, layers: Iterable[str] | None = None
    ) -> dict[str, list[int]]:
        self._generator.manual_seed(self.seed)
        return super().select(graph, layers)

    def can_rank(self, graph: DependencyGraph, group: ChannelGroup) -> bool:
        return True

    def channel_scores(self, graph: DependencyGraph, group: ChannelGroup) -> torch.Tensor:
        return torch.rand(len(group.channels), generator=self._generator)
