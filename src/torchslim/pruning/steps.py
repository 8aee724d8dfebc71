"""Pruning as schedule steps (see :mod:`torchslim.core.steps` for the protocol).

Every pruning step shares the schedule's ``"masks"`` service (:func:`~torchslim.pruning.masks.
masks_of`), which holds pruned weights at zero after every optimizer step; thinning records its
changes as ``"thinning"`` edits, so a resumed run and a saved model rebuild the thinned shapes.

Example::

    >>> import torch
    >>> from torchslim.models import create_model
    >>> from torchslim.pruning.structured import FilterNormPruner
    >>> from torchslim.pruning.steps import StructuredPruneStep, ThinningStep
    >>> from torchslim.schedule import CompressionScheduler, Policy
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
from ..core.steps import Step, StepContext
from ..graph import DependencyGraph, build_graph
from .allocation import allocate_ratios, layer_macs, prune_by_plan
from .masks import masks_of
from .pruners import Pruner
from .schedules import Polynomial
from .structured import StructuredPruner
from .thinning import thin


class PruneStep(Step):
    """Run an element-wise ``pruner.prune`` on each firing epoch, and with ``steps_per_epoch``
    > 1 also at evenly spaced minibatches in between, with the progress interpolated towards
    the next firing epoch (Zhu & Gupta prune every few hundred steps, not once per epoch)."""

    kind = "pruner"

    def __init__(self, pruner: Pruner, steps_per_epoch: int = 1) -> None:
        if steps_per_epoch < 1:
            raise UserError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
        self.pruner = pruner
        self.steps_per_epoch = steps_per_epoch

    def attach(self, ctx: StepContext) -> None:
        masks_of(ctx)
        try:  # the names as scheduled, for the pruner to find after quantization wraps them
            self.pruner.resolve(ctx.model)
        except UserError:
            pass  # names a later step makes (a factorization); the first prune says if not
        check_gradual_policy(ctx, [getattr(self.pruner, "schedule", None)])
        policy = ctx.policy
        if self.steps_per_epoch > 1 and policy is not None and (
                policy.epochs is not None or policy.frequency > 1):
            # the steps run within firing epochs only: the epochs between would prune nothing
            raise UserError(f"steps_per_epoch ({self.steps_per_epoch}) spreads pruning over "
                            f"the minibatches of every epoch, but the policy fires on "
                            f"{policy.describe()}: give it frequency 1 (and no epochs list)")

    #: on_epoch_begin leaves what it does in the model, masks, edits or state_dict
    resumes_mid_epoch = True

    def on_epoch_begin(self, ctx: StepContext) -> dict[str, Any]:
        return {"sparsity": self.pruner.prune(masks_of(ctx), ctx.progress)}

    def on_minibatch_begin(
        self, ctx: StepContext, minibatch_id: int, minibatches_per_epoch: int
    ) -> None:
        if self.steps_per_epoch == 1 or minibatches_per_epoch < 1 or ctx.progress >= 1.0:
            return
        interval = max(1, minibatches_per_epoch // self.steps_per_epoch)
        step = minibatch_id // interval
        if minibatch_id % interval or not 0 < step < self.steps_per_epoch:
            return
        fraction = step / self.steps_per_epoch
        progress = ctx.progress + fraction * (ctx.next_progress - ctx.progress)
        self.pruner.prune(masks_of(ctx), progress)


def check_gradual_policy(ctx: StepContext, schedules: Sequence[Any]) -> None:
    """A pruner whose sparsity rises over its policy (AGP) needs a policy that ends and fires
    on two epochs or more; otherwise it would prune to its final sparsity at once (Distiller
    refuses such a policy too)."""
    policy = ctx.policy
    gradual = [s for s in schedules
               if isinstance(s, Polynomial) and s.initial != s.final_sparsity]
    if policy is None or not gradual or (policy.last is not None and policy.last > policy.first):
        return
    raise UserError(
        f"a gradual pruner (sparsity {gradual[0].initial:g} rising to "
        f"{gradual[0].final_sparsity:g}) fires on {policy.describe()}, so it would prune to "
        f"{gradual[0].final_sparsity:g} at once: give "
        "its policy an ending_epoch at least two firing epochs after starting_epoch"
    )


def example_input_of(ctx: StepContext) -> torch.Tensor:
    """The context's example input, or a UserError saying how to give one."""
    if ctx.example_input is None:
        raise UserError(
            "structured pruning and thinning trace the model: create the CompressionScheduler "
            "with example_input= (one batch the model accepts)"
        )
    return ctx.example_input


class StructuredPruneStep(Step):
    """Zero whole channels with a structured pruner (filters, input channels, BN gamma, random)
    at the sparsity its schedule gives for the policy's progress (a structured AGP when the
    schedule is :class:`~torchslim.pruning.schedules.AGP`).

    ``regimes`` is a list of ``(layers, pruner, inputs)``: each pruner acts on the channel groups
    of its layers (``None`` = every group it can rank). For input-channel pruning give the
    consuming layer with ``inputs=True``: its input channels are the ones ranked and removed.
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

    def attach(self, ctx: StepContext) -> None:
        masks_of(ctx)
        check_gradual_policy(ctx, [getattr(p, "schedule", None) for _, p, _ in self.regimes])

    #: on_epoch_begin leaves what it does in the model, masks, edits or state_dict
    resumes_mid_epoch = True

    def on_epoch_begin(self, ctx: StepContext) -> dict[str, Any]:
        masks = masks_of(ctx)
        graph = build_graph(ctx.model, example_input_of(ctx))
        removed: dict[str, str] = {}
        for layers, pruner, inputs in self.regimes:
            groups = input_groups(graph, layers) if inputs and layers is not None else layers
            for group, channels in pruner.apply(graph, masks, groups, ctx.progress).items():
                total = len(graph.group(group).channels)
                removed[group] = f"{len(channels)}/{total}"
        return {"channels_pruned": removed, "sparsity": masks.sparsities()}

    def state_dict(self) -> dict[str, Any]:
        """The state of schedules that have one (a random level's draws)."""
        return {"schedules": [getattr(p.schedule, "state_dict", dict)()
                              for _, p, _ in self.regimes]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for (_, pruner, _), saved in zip(self.regimes, state.get("schedules", []), strict=False):
            if saved and hasattr(pruner.schedule, "load_state_dict"):
                pruner.schedule.load_state_dict(saved)


def input_groups(graph: DependencyGraph, layers: Sequence[str]) -> list[str]:
    """The groups holding the input channels of ``layers``."""
    names = []
    for layer in layers:
        hits = [g.name for g in graph.groups
                if any(a.module == layer and a.role == "in" for a in g.axes)]
        if not hits:
            raise UserError(f"layer '{layer}' has no input channels the graph can prune")
        names += [h for h in hits if h not in names]
    return names


class PlannedPruneStep(Step):
    """Structured pruning at per-group ratios chosen from a group sensitivity analysis to keep
    ``target_macs`` of the dense MACs (see :mod:`torchslim.pruning.allocation`)."""

    kind = "pruner"

    def __init__(self, sensitivity_rows: Sequence, target_macs: float, norm: int = 1,
                 round_to: int = 1) -> None:
        self.rows = list(sensitivity_rows)
        self.target_macs = target_macs
        self.norm = norm
        self.round_to = round_to

    def attach(self, ctx: StepContext) -> None:
        masks_of(ctx)

    #: on_epoch_begin leaves what it does in the model, masks, edits or state_dict
    resumes_mid_epoch = True

    def on_epoch_begin(self, ctx: StepContext) -> dict[str, Any]:
        example, masks = example_input_of(ctx), masks_of(ctx)
        graph = build_graph(ctx.model, example)
        plan = allocate_ratios(graph, layer_macs(ctx.model, example), self.rows, self.target_macs,
                               round_to=self.round_to)
        prune_by_plan(graph, masks, plan, norm=self.norm, round_to=self.round_to)
        return {"plan": plan, "sparsity": masks.sparsities()}


class ThinningStep(Step):
    """Remove every pruned channel physically (Distiller's ``FilterRemover``/``ChannelRemover``);
    the optimizer and masks follow, and the record is kept as an edit so a resumed run and a
    saved model can rebuild the thinned shapes."""

    kind = "extension"

    def attach(self, ctx: StepContext) -> None:
        masks_of(ctx)

    #: on_epoch_begin leaves what it does in the model, masks, edits or state_dict
    resumes_mid_epoch = True

    def on_epoch_begin(self, ctx: StepContext) -> dict[str, Any]:
        record = thin(
            ctx.model, example_input_of(ctx), optimizer=ctx.optimizer, masks=masks_of(ctx)
        )
        ctx.edits.append(record)
        kept = {
            name: {role: len(indices) for role, indices in entry.get("kept", {}).items()}
            for name, entry in record["layers"].items()
        }
        return {"thinned": kept}


class RegularizerStep(Step):
    """Add ``penalty(model)`` to the loss on every minibatch of a firing epoch."""

    kind = "regularizer"

    def __init__(self, penalty: Callable[[torch.nn.Module], torch.Tensor]) -> None:
        self.penalty = penalty

    def before_backward_pass(
        self, ctx: StepContext, loss: torch.Tensor, **batch: Any
    ) -> torch.Tensor:
        return self.penalty(ctx.model)
