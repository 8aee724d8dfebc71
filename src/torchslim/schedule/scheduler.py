"""The compression scheduler: runs pruners, regularizers, LR schedules and extensions on the
epochs their policies name, from the training loop's hooks.

It is a :class:`~torchslim.train.Callback`: give it to the :class:`~torchslim.train.Trainer`, or
call its hooks from your own loop. Methods are plain objects; the scheduler only decides when
they act. Pruning masks live in ``scheduler.masks`` and are re-applied after every optimizer
step, so pruned weights stay zero. ``state_dict()`` holds the masks, which policies fired, and
each method's own state and the thinning records (a fresh model is reshaped on load), so a
resumed run continues the schedule exactly. ``log`` lists, per
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

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import nn

from ..core.errors import UserError
from ..pruning import Masks, Pruner
from ..pruning.structured import StructuredPruner
from ..pruning.thinning import apply_thinning
from ..train.callbacks import Callback
from .policy import Policy
from .steps import PruneStep, StructuredPruneStep


@dataclass
class ScheduleContext:
    """What a scheduled method sees when it acts.

    ``example_input`` is one batch the model accepts (structured pruning traces the model with
    it); ``thinning`` is the scheduler's list of thinning records, in the order they happened;
    ``next_progress`` is the policy's progress at its next firing epoch (1.0 after the last), for
    methods that also act between epochs.
    """

    model: nn.Module
    masks: Masks
    optimizer: torch.optim.Optimizer | None
    epoch: int
    progress: float
    example_input: torch.Tensor | None = None
    thinning: list[dict[str, Any]] = field(default_factory=list)
    next_progress: float = 1.0


class LossWithComponents(NamedTuple):
    """The loss to back-propagate and the named terms that were added to it."""

    overall_loss: torch.Tensor
    loss_components: dict[str, torch.Tensor]


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

    def __init__(
        self,
        model: nn.Module,
        masks: Masks | None = None,
        example_input: torch.Tensor | None = None,
    ) -> None:
        self.model = model
        self.masks = masks if masks is not None else Masks(model)
        self.example_input = example_input
        self.thinning: list[dict[str, Any]] = []
        self.entries: list[_Entry] = []
        self.log: list[dict[str, Any]] = []
        self.last_loss_components: dict[str, float] = {}

    def add(self, method: Any, policy: Policy, name: str | None = None) -> None:
        """Schedule ``method``: a pruner (element-wise or structured), a regularizer, an
        :class:`~torchslim.schedule.steps.LRSchedule`, a thinning step or any step object."""
        if isinstance(method, Pruner):
            method = PruneStep(method)
        elif isinstance(method, StructuredPruner):
            method = StructuredPruneStep(method)
        name = name or f"{type(method).__name__.lower()}_{len(self.entries)}"
        if any(entry.name == name for entry in self.entries):
            raise ValueError(f"a method named '{name}' is already scheduled")
        self.entries.append(_Entry(name, method, policy))

    # -- hooks ---------------------------------------------------------------------------------
    def _context(self, entry: _Entry, epoch: int, optimizer) -> ScheduleContext:
        upcoming = entry.policy.next_after(epoch)
        return ScheduleContext(
            self.model, self.masks, optimizer, epoch, entry.policy.progress(epoch),
            self.example_input, self.thinning,
            entry.policy.progress(upcoming) if upcoming is not None else 1.0,
        )

    def _run(self, hook: str, epoch: int, optimizer) -> dict[str, dict[str, Any]]:
        done = {}
        for entry in self.entries:
            method = getattr(entry.method, hook, None)
            if method is None or not entry.policy.fires(epoch):
                continue
            done[entry.name] = method(self._context(entry, epoch, optimizer)) or {}
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
        self, epoch: int, minibatch_id: int, minibatches_per_epoch: int, optimizer=None,
        **kwargs: Any,
    ) -> None:
        """Let methods that act within an epoch (gradual pruning in several steps) act."""
        for entry in self.entries:
            method = getattr(entry.method, "on_minibatch_begin", None)
            if method is not None and entry.policy.fires(epoch):
                method(self._context(entry, epoch, optimizer), minibatch_id, minibatches_per_epoch)

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
            term = method(self._context(entry, epoch, optimizer), loss, **kwargs)
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
        entry_log["sparsity"] = self.masks.sparsities()
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
            "thinning": self.thinning,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        names = [entry.name for entry in self.entries]
        if sorted(state["fired"]) != sorted(names):
            raise UserError(
                f"the checkpoint's schedule has methods {sorted(state['fired'])}, this one "
                f"{sorted(names)}: resume with the same recipe or use a new --out directory"
            )
        for record in state.get("thinning", [])[len(self.thinning):]:
            apply_thinning(self.model, record)  # a fresh model takes the thinned shapes first
            self.thinning.append(record)
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
