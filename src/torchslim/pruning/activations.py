"""Importance from data: activations and gradients seen while training (Distiller's
``ActivationAPoZRankedFilterPruner``, ``ActivationMeanRankedFilterPruner`` and
``GradientRankedFilterPruner``).

==============================  ==================================================================
:class:`ActivationImportance`   ``kind="apoz"``: one minus the average percentage of zeros of the
                                channel after ReLU (Hu et al. 2016, network trimming);
                                ``kind="mean"``: its mean activation after ReLU (Molchanov et al.
                                2016); read by forward hooks on the layers producing the channel
                                (its BatchNorm when it has one)
:class:`GradientImportance`     ``sum |w * dL/dw|`` over each filter (first-order Taylor,
                                Molchanov et al. 2017), accumulated after every optimizer step
==============================  ==================================================================

Two rankings follow the papers rather than Distiller's code: Distiller's
``ActivationMeanRankedFilterPruner`` removes the filters with the *highest* mean activation (it
shares APoZ's order, where high means unimportant), and its ``GradientRankedFilterPruner`` ranks
by the signed ``sum(w * grad)`` of the last minibatch; torchslim removes the lowest mean
activations and ranks by ``|w * grad|`` accumulated over the collected minibatches.

Statistics need minibatches, so :class:`CollectingPruneStep` prunes not when its epoch starts
but after ``collect_batches`` training minibatches of it (statistics restart every firing
epoch), and removes its hooks when training ends.

Example::

    >>> import torch
    >>> from torchslim.graph import build_graph
    >>> from torchslim.pruning.activations import ActivationImportance
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 1), torch.nn.ReLU(),
    ...                             torch.nn.Conv2d(3, 1, 1))
    >>> with torch.no_grad():
    ...     _ = model[0].weight.copy_(torch.tensor([1.0, -1.0, 0.5]).view(3, 1, 1, 1))
    ...     _ = model[0].bias.zero_()
    >>> graph = build_graph(model, torch.zeros(1, 1, 2, 2))
    >>> apoz = ActivationImportance("apoz")
    >>> apoz.watch(model, graph, graph.select(None))
    >>> _ = model(torch.ones(4, 1, 2, 2))
    >>> apoz.scores(graph, graph.group("0")).tolist()  # channel 1 is always zero
    [1.0, 0.0, 1.0]
    >>> apoz.unwatch()
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..core.errors import UserError
from ..core.steps import StepContext
from ..graph import ChannelGroup, DependencyGraph, build_graph
from .importance import Importance
from .masks import masks_of
from .steps import StructuredPruneStep, example_input_of, input_groups


class _Collecting(Importance):
    """Importances that watch the model while it trains."""

    def watch(self, model: nn.Module, graph: DependencyGraph,
              groups: Sequence[ChannelGroup]) -> None:
        """Start collecting for ``groups`` (statistics restart)."""

    def after_step(self) -> None:
        """After every optimizer step while watching."""

    def unwatch(self) -> None:
        """Stop collecting (remove hooks)."""

    def _combine(self, group: ChannelGroup, members: list[tuple[Any, torch.Tensor]]):
        per_member = []
        for axis, values in members:
            positions, owners = group.index_on(axis)
            sums = torch.zeros(len(group.channels)).index_add_(0, owners, values[positions])
            counts = torch.zeros(len(group.channels)).index_add_(
                0, owners, torch.ones(len(positions)))
            per_member.append(sums / counts.clamp_min(1))
        if not per_member:
            raise UserError(f"group '{group.name}' saw no data: prune it after training "
                            "minibatches ran (collect_batches >= 1)")
        return torch.stack(per_member).mean(0)


class ActivationImportance(_Collecting):
    """Channel scores from activations after ReLU (see the module docstring)."""

    def __init__(self, kind: str = "apoz") -> None:
        if kind not in ("apoz", "mean"):
            raise UserError(f"activation ranking is 'apoz' or 'mean', got {kind!r}")
        self.kind = kind
        self._handles: list[Any] = []
        self._stats: dict[str, list[torch.Tensor | int]] = {}

    def _probe(self, graph: DependencyGraph, group: ChannelGroup):
        """The out axes whose layer output to watch: BatchNorms if the group has any (their
        output is what the ReLU sees), else the layers producing the channels."""
        outs = [axis for axis in group.axes if axis.role == "out"]
        norms = [a for a in outs if isinstance(graph.module(a), _BatchNorm)]
        return norms or outs

    def can_rank(self, graph: DependencyGraph, group: ChannelGroup) -> bool:
        return bool(self._probe(graph, group))

    def watch(self, model: nn.Module, graph: DependencyGraph,
              groups: Sequence[ChannelGroup]) -> None:
        self.unwatch()
        self._stats = {}
        modules = dict(model.named_modules())
        for group in groups:
            for axis in self._probe(graph, group):
                if axis.module in self._stats or axis.module not in modules:
                    continue
                self._stats[axis.module] = [torch.zeros(axis.size, dtype=torch.float64), 0]
                self._handles.append(modules[axis.module].register_forward_hook(
                    _recorder(self._stats[axis.module], self.kind)))

    def unwatch(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def scores(self, graph: DependencyGraph, group: ChannelGroup) -> torch.Tensor:
        members = []
        for axis in self._probe(graph, group):
            total, count = self._stats.get(axis.module, (None, 0))
            if count:
                members.append((axis, (total / count).float()))
        return self._combine(group, members)


def _recorder(slot: list, kind: str):
    # A plain closure: deep copies of the model do not copy the statistics object.
    def hook(module: nn.Module, inputs: Any, output: Any) -> None:
        # Training passes only: an evaluation between training minibatches (torchslim
        # evaluates under inference_mode), on the test split say, must not choose what is
        # pruned; a pass under no_grad (a calibration loop over training data) still counts.
        if torch.is_inference_mode_enabled():
            return
        if not isinstance(output, torch.Tensor) or output.dim() < 2:
            return
        with torch.no_grad():
            active = torch.relu(output.detach().float()).movedim(1, -1)
            active = active.reshape(-1, active.shape[-1])
            value = (active > 0).double().mean(0) if kind == "apoz" else active.double().mean(0)
            if value.shape == slot[0].shape:
                slot[0] += value.cpu()
                slot[1] += 1
    return hook


class GradientImportance(_Collecting):
    """``sum |w * grad|`` over the slices tagged ``weight`` producing each channel, summed over
    the optimizer steps seen (see the module docstring)."""

    def __init__(self) -> None:
        self._tensors: list[tuple[str, torch.Tensor, int]] = []
        self._sums: dict[str, torch.Tensor] = {}

    def _members(self, graph: DependencyGraph, group: ChannelGroup):
        for axis in group.axes:
            if axis.role == "out":
                for tensor in graph.tensors_on(axis):
                    if tensor.tag == "weight" and tensor.is_parameter:
                        yield axis, tensor

    def can_rank(self, graph: DependencyGraph, group: ChannelGroup) -> bool:
        return any(True for _ in self._members(graph, group))

    def watch(self, model: nn.Module, graph: DependencyGraph,
              groups: Sequence[ChannelGroup]) -> None:
        self._tensors, self._sums = [], {}
        for group in groups:
            for _, tensor in self._members(graph, group):
                if tensor.name not in self._sums:
                    self._tensors.append((tensor.name, tensor.tensor, tensor.dim))
                    self._sums[tensor.name] = torch.zeros(tensor.tensor.shape[tensor.dim],
                                                          dtype=torch.float64)

    def after_step(self) -> None:
        for name, param, dim in self._tensors:
            if param.grad is not None:
                taylor = (param.detach() * param.grad.detach()).abs().transpose(0, dim)
                self._sums[name] += taylor.reshape(taylor.shape[0], -1).sum(1).double().cpu()

    def scores(self, graph: DependencyGraph, group: ChannelGroup) -> torch.Tensor:
        members = [(axis, self._sums[t.name].float()) for axis, t in self._members(graph, group)
                   if t.name in self._sums and self._sums[t.name].sum() > 0]
        return self._combine(group, members)


class CollectingPruneStep(StructuredPruneStep):
    """A :class:`StructuredPruneStep` whose pruners rank by data (:class:`ActivationImportance`,
    :class:`GradientImportance`): each firing epoch it watches the first ``collect_batches``
    training minibatches, then prunes."""

    def __init__(self, regimes, collect_batches: int = 32) -> None:
        super().__init__(regimes=regimes)
        if collect_batches < 1:
            raise UserError(f"collect_batches must be >= 1, got {collect_batches}")
        self.collect_batches = collect_batches
        self._watching = False
        self._result: dict[str, Any] = {}

    def _importances(self) -> list[_Collecting]:
        return [p.importance for _, p, _ in self.regimes if isinstance(p.importance, _Collecting)]

    def on_epoch_begin(self, ctx: StepContext) -> dict[str, Any]:
        masks_of(ctx)
        graph = build_graph(ctx.model, example_input_of(ctx))
        for layers, pruner, inputs in self.regimes:
            names = input_groups(graph, layers) if inputs and layers is not None else layers
            groups = graph.select(names)
            if isinstance(pruner.importance, _Collecting):
                pruner.importance.watch(ctx.model, graph, groups)
        self._watching = True
        return {"collecting": self.collect_batches}

    def mid_epoch_checkpoint_ok(self) -> bool:
        # the statistics collected so far, and the epoch's result, are not checkpointed
        return not self._watching and not self._result

    def on_minibatch_begin(self, ctx: StepContext, minibatch_id: int,
                           minibatches_per_epoch: int) -> None:
        last = minibatches_per_epoch - 1 if minibatches_per_epoch > 0 else self.collect_batches
        if self._watching and minibatch_id >= min(self.collect_batches, max(last, 1)):
            self._prune(ctx)

    def on_minibatch_end(self, ctx: StepContext, minibatch_id: int,
                         minibatches_per_epoch: int) -> None:
        if self._watching:
            for importance in self._importances():
                importance.after_step()
            if 0 < minibatches_per_epoch <= minibatch_id + 1:
                # the epoch's last minibatch, before collect_batches: prune with what training
                # showed, before the evaluation that follows can add to the statistics
                self._prune(ctx)

    def on_epoch_end(self, ctx: StepContext) -> dict[str, Any]:
        if self._watching:  # batches of unknown number ran out: prune with what they showed
            self._prune(ctx)
        result, self._result = self._result, {}
        return result

    def _prune(self, ctx: StepContext) -> None:
        self._watching = False
        for importance in self._importances():
            importance.unwatch()
        self._result = StructuredPruneStep.on_epoch_begin(self, ctx)

    def finish(self) -> None:
        for importance in self._importances():
            importance.unwatch()
