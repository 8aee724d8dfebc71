"""What the scheduler runs: small adapters from compression methods to the schedule's hooks.

A step has any of ``on_epoch_begin(ctx)``, ``before_backward_pass(ctx, loss, **kw)`` and
``on_epoch_end(ctx)`` (``ctx`` is a :class:`~torchslim.schedule.scheduler.ScheduleContext`),
called only on the epochs its policy names; what ``on_epoch_*`` returns goes into the schedule
log. :meth:`CompressionScheduler.add <torchslim.schedule.CompressionScheduler.add>` wraps
element-wise pruners in :class:`PruneStep` by itself.

Example::

    >>> import torch
    >>> from torchslim.models import create_model
    >>> from torchslim.pruning.structured import FilterNormPruner
    >>> from torchslim.schedule import CompressionScheduler, Policy
    >>> from torchslim.schedule import StructuredPruneStep, ThinningStep
    >>> model = create_model("demo_cnn")
    >>> scheduler = CompressionScheduler(model, example_input=torch.zeros(1, 1, 8, 8))
    >>> scheduler.add(StructuredPruneStep(FilterNormPruner(0.5)), Policy(epochs=[0]), "filters")
    >>> scheduler.add(ThinningStep(), Policy(epochs=[0]), "thin")
    >>> scheduler.on_epoch_begin(0)
    >>> model.features[1][0].weight.shape
    torch.Size([32, 16, 3, 3])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..core.errors import UserError
from ..pruning import Pruner
from ..pruning.allocation import allocate_ratios, layer_macs, prune_by_plan
from ..pruning.graph import build_graph
from ..pruning.structured import StructuredPruner
from ..pruning.thinning import thin


class PruneStep:
    """Run an element-wise ``pruner.prune`` on each firing epoch, and with ``steps_per_epoch``
    > 1 also at evenly spaced minibatches in between, with the progress interpolated towards
    the next firing epoch (Zhu & Gupta prune every few hundred steps, not once per epoch)."""

    kind = "pruner"

    def __init__(self, pruner: Pruner, steps_per_epoch: int = 1) -> None:
        if steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
        self.pruner = pruner
        self.steps_per_epoch = steps_per_epoch

    def on_epoch_begin(self, ctx) -> dict[str, Any]:
        return {"sparsity": self.pruner.prune(ctx.masks, ctx.progress)}

    def on_minibatch_begin(self, ctx, minibatch_id: int, minibatches_per_epoch: int) -> None:
        if self.steps_per_epoch == 1 or minibatches_per_epoch < 1 or ctx.progress >= 1.0:
            return
        interval = max(1, minibatches_per_epoch // self.steps_per_epoch)
        step = minibatch_id // interval
        if minibatch_id % interval or not 0 < step < self.steps_per_epoch:
            return
        fraction = step / self.steps_per_epoch
        self.pruner.prune(ctx.masks, ctx.progress + fraction * (ctx.next_progress - ctx.progress))


def _example_input(ctx) -> torch.Tensor:
    if ctx.example_input is None:
        raise UserError(
            "structured pruning and thinning trace the model: create the CompressionScheduler "
            "with example_input= (one batch the model accepts)"
        )
    return ctx.example_input


class StructuredPruneStep:
    """Zero whole channels with a structured pruner (filters, input channels, BN gamma, random).

    ``regimes`` is a list of ``(layers, pruner)``: each pruner acts on the channel groups of its
    layers (``None`` = every group it can rank). For input-channel pruning give the consuming
    layer with ``inputs=True``: its input channels are the ones ranked and removed.
    """

    kind = "pruner"

    def __init__(
        self,
        pruner: StructuredPruner | None = None,
        layers: Sequence[str] | None = None,
        regimes: Sequence[tuple[Sequence[str] | None, StructuredPruner, bool]] = (),
    ) -> None:
        self.regimes = list(regimes)
        if pruner is not None:
            self.regimes.insert(0, (layers, pruner, False))

    def on_epoch_begin(self, ctx) -> dict[str, Any]:
        graph = build_graph(ctx.model, _example_input(ctx))
        removed: dict[str, str] = {}
        for layers, pruner, inputs in self.regimes:
            groups = _input_groups(graph, layers) if inputs and layers is not None else layers
            for group, channels in pruner.apply(graph, ctx.masks, groups).items():
                total = len(graph.group(group).channels)
                removed[group] = f"{len(channels)}/{total}"
        return {"channels_pruned": removed, "sparsity": ctx.masks.sparsities()}


def _input_groups(graph, layers: Sequence[str]) -> list[str]:
    """The groups holding the input channels of ``layers``."""
    names = []
    for layer in layers:
        hits = [g.name for g in graph.groups
                if any(a.module == layer and a.role == "in" for a in g.axes)]
        if not hits:
            raise UserError(f"layer '{layer}' has no input channels the graph can prune")
        names += [h for h in hits if h not in names]
    return names


class PlannedPruneStep:
    """Structured pruning at per-group ratios chosen from a group sensitivity analysis to keep
    ``target_macs`` of the dense MACs (see :mod:`torchslim.pruning.allocation`)."""

    kind = "pruner"

    def __init__(self, sensitivity_rows: Sequence, target_macs: float, norm: int = 1) -> None:
        self.rows = list(sensitivity_rows)
        self.target_macs = target_macs
        self.norm = norm

    def on_epoch_begin(self, ctx) -> dict[str, Any]:
        example = _example_input(ctx)
        graph = build_graph(ctx.model, example)
        plan = allocate_ratios(graph, layer_macs(ctx.model, example), self.rows, self.target_macs)
        prune_by_plan(graph, ctx.masks, plan, norm=self.norm)
        return {"plan": plan, "sparsity": ctx.masks.sparsities()}


class ThinningStep:
    """Remove every pruned channel physically (Distiller's ``FilterRemover``/``ChannelRemover``);
    the optimizer and masks follow, and the record is kept so a resumed run and a saved model
    can rebuild the thinned shapes."""

    kind = "extension"

    def on_epoch_begin(self, ctx) -> dict[str, Any]:
        record = thin(ctx.model, _example_input(ctx), optimizer=ctx.optimizer, masks=ctx.masks)
        ctx.thinning.append(record)
        kept = {
            name: {role: len(indices) for role, indices in entry.get("kept", {}).items()}
            for name, entry in record.items()
        }
        return {"thinned": kept}


class LRSchedule:
    """A ``torch.optim.lr_scheduler`` class (or its name) built on the training optimizer when
    first needed, and stepped at the end of every firing epoch.

    Its steps compose with the trainer's own (chainable) schedule.
    """

    kind = "lr_scheduler"

    def __init__(self, scheduler: str | Callable[..., Any], **kwargs: Any) -> None:
        if isinstance(scheduler, str):
            scheduler = getattr(torch.optim.lr_scheduler, scheduler)
        self.factory = scheduler
        self.kwargs = kwargs
        self.scheduler: Any = None
        self._pending_state: dict[str, Any] | None = None

    def _build(self, optimizer: torch.optim.Optimizer) -> Any:
        if self.scheduler is None:
            self.scheduler = self.factory(optimizer, **self.kwargs)
            if self._pending_state is not None:
                self.scheduler.load_state_dict(self._pending_state)
        return self.scheduler

    def on_epoch_begin(self, ctx) -> dict[str, Any]:
        if ctx.optimizer is None:
            raise ValueError("an LR schedule needs the optimizer: pass optimizer= to the hooks")
        self._build(ctx.optimizer)
        return {}

    def on_epoch_end(self, ctx) -> dict[str, Any]:
        scheduler = self._build(ctx.optimizer)
        scheduler.step()
        return {"lr": [group["lr"] for group in ctx.optimizer.param_groups]}

    def state_dict(self) -> dict[str, Any]:
        if self.scheduler is not None:
            return {"scheduler": self.scheduler.state_dict()}
        return {"scheduler": self._pending_state} if self._pending_state else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._pending_state = state.get("scheduler")
        if self.scheduler is not None and self._pending_state is not None:
            self.scheduler.load_state_dict(self._pending_state)
