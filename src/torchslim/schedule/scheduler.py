"""The compression scheduler: runs pruners, regularizers, LR schedules and extensions on the
epochs their policies name, from the training loop's hooks.

It is a :class:`~torchslim.train.Callback`: give it to the :class:`~torchslim.train.Trainer`, or
call its hooks from your own loop. Methods are plain objects; the scheduler only decides when
they act. Pruning masks live in ``scheduler.masks`` and are re-applied after every optimizer
step, so pruned weights stay zero. ``state_dict()`` holds the masks, which policies fired, and
each method's own state, so a resumed run continues the schedule exactly. ``log`` lists, per
epoch, the policies that fired and what they did to each layer.

Example (a hand-written loop)::

    >>> import torch
    >>> from torchslim.pruning import AGPPruner
    >>> from torchslim.schedule import CompressionScheduler, LRSchedule, Policy
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 10), torch.nn.ReLU(), torch.nn.Linear(10, 2))
    >>> optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> scheduler = CompressionScheduler(model)
    >>> scheduler.add(AGPPruner(["0.weight"], 0.2, 0.8), Policy(0, 4), name="agp")
    >>> scheduler.add(LRSchedule("StepLR", step_size=2), Policy(0), name="lr")
    >>> x, y = torch.randn(32, 8), torch.randint(0, 2, (32,))
    >>> for epoch in range(5):
    ...     scheduler.on_epoch_begin(epoch, optimizer=optimizer)
    ...     scheduler.on_minibatch_begin(epoch, 0, 1, optimizer=optimizer)
    ...     loss = torch.nn.functional.cross_entropy(model(x), y)
    ...     loss = scheduler.before_backward_pass(epoch, 0, 1, loss, optimizer=optimizer)
    ...     optimizer.zero_grad(); loss.backward(); optimizer.step()
    ...     scheduler.on_minibatch_end(epoch, 0, 1, optimizer=optimizer)
    ...     scheduler.on_epoch_end(epoch, optimizer=optimizer)
    >>> scheduler.masks.sparsity("0.weight")
    0.8
    >>> [entry["fired"] for entry in scheduler.log][:2]
    [['agp', 'lr'], ['agp', 'lr']]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import nn

from ..errors import UserError
from ..pruning import Masks, Pruner
from ..train.callbacks import Callback
from .policy import Policy


@dataclass
class ScheduleContext:
    """What a scheduled method sees when it acts."""

    model: nn.Module
    masks: Masks
    optimizer: torch.optim.Optimizer | None
    epoch: int
    progress: float


class LossWithComponents(NamedTuple):
    """The loss to back-propagate and the named terms that were added to it."""

    overall_loss: torch.Tensor
    loss_components: dict[str, torch.Tensor]


class PruneStep:
    """Adapter: run ``pruner.prune`` on the first hook of each firing epoch."""

    kind = "pruner"

    def __init__(self, pruner: Pruner) -> None:
        self.pruner = pruner

    def on_epoch_begin(self, ctx: ScheduleContext) -> dict[str, Any]:
        return {"sparsity": self.pruner.prune(ctx.masks, ctx.progress)}


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

    def on_epoch_begin(self, ctx: ScheduleContext) -> dict[str, Any]:
        if ctx.optimizer is None:
            raise ValueError("an LR schedule needs the optimizer: pass optimizer= to the hooks")
        self._build(ctx.optimizer)
        return {}

    def on_epoch_end(self, ctx: ScheduleContext) -> dict[str, Any]:
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


@dataclass
class _Entry:
    name: str
    method: Any
    policy: Policy
    fired: list[int] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return getattr(self.method, "kind", type(self.method).__name__)


class CompressionScheduler(Callback):
    """Runs scheduled compression methods from the training hooks (see the module docstring)."""

    def __init__(self, model: nn.Module, masks: Masks | None = None) -> None:
        self.model = model
        self.masks = masks if masks is not None else Masks(model)
        self.entries: list[_Entry] = []
        self.log: list[dict[str, Any]] = []
        self.last_loss_components: dict[str, float] = {}

    def add(self, method: Any, policy: Policy, name: str | None = None) -> None:
        """Schedule ``method`` (a pruner, regularizer, :class:`LRSchedule` or extension)."""
        if isinstance(method, Pruner):
            method = PruneStep(method)
        name = name or f"{type(method).__name__.lower()}_{len(self.entries)}"
        if any(entry.name == name for entry in self.entries):
            raise ValueError(f"a method named '{name}' is already scheduled")
        self.entries.append(_Entry(name, method, policy))

    def policies_for(self, epoch: int) -> list[str]:
        """Names of the methods that act on ``epoch``."""
        return [entry.name for entry in self.entries if entry.policy.fires(epoch)]

    # -- hooks ---------------------------------------------------------------------------------
    def _run(self, hook: str, epoch: int, optimizer) -> dict[str, dict[str, Any]]:
        done = {}
        for entry in self.entries:
            method = getattr(entry.method, hook, None)
            if method is None or not entry.policy.fires(epoch):
                continue
            ctx = ScheduleContext(
                self.model, self.masks, optimizer, epoch, entry.policy.progress(epoch)
            )
            done[entry.name] = method(ctx) or {}
        return done

    def _log_entry(self, epoch: int) -> dict[str, Any]:
        if not self.log or self.log[-1]["epoch"] != epoch:
            self.log.append({"epoch": epoch, "fired": [], "actions": {}})
        return self.log[-1]

    def _record(self, epoch: int, done: dict[str, dict[str, Any]]) -> None:
        entry_log = self._log_entry(epoch)
        for entry in self.entries:
            if entry.name in done:
                if entry.name not in entry_log["fired"]:
                    entry_log["fired"].append(entry.name)
                    if epoch not in entry.fired:
                        entry.fired.append(epoch)
                entry_log["actions"].setdefault(entry.name, {"kind": entry.kind})
                entry_log["actions"][entry.name].update(done[entry.name])

    def on_epoch_begin(self, epoch: int, optimizer=None, **kwargs: Any) -> None:
        """Run the methods whose policies fire on ``epoch`` (pruners set their new masks)."""
        self._record(epoch, self._run("on_epoch_begin", epoch, optimizer))

    def on_minibatch_begin(
        self, epoch: int, minibatch_id: int, minibatches_per_epoch: int, **kwargs: Any
    ) -> None:
        """Nothing to do before a forward pass: masks were applied after the last step."""

    def before_backward_pass(
        self,
        epoch: int,
        minibatch_id: int,
        minibatches_per_epoch: int,
        loss: torch.Tensor,
        optimizer=None,
        return_loss_components: bool = False,
        **kwargs: Any,
    ) -> torch.Tensor | LossWithComponents:
        """``loss`` plus the terms of the regularizers (and other loss terms) active now."""
        components: dict[str, torch.Tensor] = {}
        for entry in self.entries:
            method = getattr(entry.method, "before_backward_pass", None)
            if method is None or not entry.policy.fires(epoch):
                continue
            ctx = ScheduleContext(
                self.model, self.masks, optimizer, epoch, entry.policy.progress(epoch)
            )
            term = method(ctx, loss, **kwargs)
            if term is not None:
                components[entry.name] = term
        overall = loss + sum(components.values()) if components else loss
        self.last_loss_components = {k: float(v.detach()) for k, v in components.items()}
        if return_loss_components:
            return LossWithComponents(overall, components)
        return overall

    def on_minibatch_end(
        self, epoch: int, minibatch_id: int, minibatches_per_epoch: int, **kwargs: Any
    ) -> None:
        """Re-apply every mask after the optimizer step."""
        self.masks.apply()

    def on_epoch_end(self, epoch: int, optimizer=None, **kwargs: Any) -> None:
        """Run end-of-epoch actions (LR schedules step) and log the layers' sparsity."""
        self._record(epoch, self._run("on_epoch_end", epoch, optimizer))
        entry_log = self._log_entry(epoch)
        entry_log["sparsity"] = {name: round(self.masks.sparsity(name), 6) for name in self.masks}
        if self.last_loss_components:
            entry_log["loss_components"] = dict(self.last_loss_components)

    # -- checkpoints ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "masks": self.masks.state_dict(),
            "fired": {entry.name: list(entry.fired) for entry in self.entries},
            "methods": {
                entry.name: entry.method.state_dict()
                for entry in self.entries
                if hasattr(entry.method, "state_dict")
            },
            "log": self.log,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        names = [entry.name for entry in self.entries]
        if sorted(state["fired"]) != sorted(names):
            raise UserError(
                f"the checkpoint's schedule has methods {sorted(state['fired'])}, this one "
                f"{sorted(names)}: resume with the same recipe or use a new --out directory"
            )
        for entry in self.entries:
            entry.fired = list(state["fired"][entry.name])
            if entry.name in state["methods"]:
                entry.method.load_state_dict(state["methods"][entry.name])
        self.masks.load_state_dict(state["masks"])
        self.log = list(state["log"])

    # -- reporting -----------------------------------------------------------------------------
    def format_log(self) -> str:
        """The schedule log as text: one block per epoch with what fired and layer sparsity."""
        lines = []
        for entry in self.log:
            fired = ", ".join(entry["fired"]) or "-"
            lines.append(f"epoch {entry['epoch']}: fired {fired}")
            for name, action in entry["actions"].items():
                for layer, value in action.get("sparsity", {}).items():
                    lines.append(f"  {name}: {layer} sparsity {value:.4f}")
                if "lr" in action:
                    lines.append(f"  {name}: lr {', '.join(f'{v:.6g}' for v in action['lr'])}")
            for key, value in entry.get("loss_components", {}).items():
                lines.append(f"  {key}: loss term {value:.6g}")
        return "\n".join(lines)
