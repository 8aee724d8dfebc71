"""The compression scheduler: runs steps on the epochs their policies name, from the training
loop's hooks.

It is a :class:`~torchslim.train.Callback`: give it to the :class:`~torchslim.train.Trainer`,
or call its hooks from your own loop. It knows steps (:mod:`torchslim.core.steps`), not
methods: a pruner, a regularizer, an LR schedule or a quantizer is scheduled the same way, and
what a step shares with others (the pruning masks) is a *service* the scheduler keeps, calls
after every optimizer step and saves. ``state_dict()`` holds which policies fired, each step's
and service's state and the architecture edits (replayed on a fresh model first), so a resumed
run continues exactly. ``log`` lists, per epoch, the steps that fired and what they did.

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
    >>> scheduler.services["masks"].sparsity("0.weight")
    0.8
    >>> [entry["fired"] for entry in scheduler.log][:2]
    [['agp', 'lr'], ['agp', 'lr']]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import nn

from ..core.edits import apply_edits
from ..core.errors import UserError
from ..core.steps import Services, Step, StepContext, as_step
from ..train.callbacks import Callback
from .policy import Policy


class LossWithComponents(NamedTuple):
    """The loss to back-propagate and the named terms that were added to it."""

    overall_loss: torch.Tensor
    loss_components: dict[str, torch.Tensor]


@dataclass
class ScheduledStep:
    """A step, its policy and the epochs it fired on."""

    name: str
    step: Step
    policy: Policy
    fired: list[int] = field(default_factory=list)


class CompressionScheduler(Callback):
    """Runs scheduled steps from the training hooks (see the module docstring).

    ``example_input`` is one batch the model accepts, for steps that trace the model.
    """

    def __init__(self, model: nn.Module, example_input: torch.Tensor | None = None) -> None:
        self.model = model
        self.example_input = example_input
        self.services = Services()
        self.edits: list[dict[str, Any]] = []
        self.entries: list[ScheduledStep] = []
        self.log: list[dict[str, Any]] = []
        self.last_loss_components: dict[str, float] = {}

    def add(self, step: Any, policy: Policy, name: str | None = None) -> None:
        """Schedule ``step`` (a :class:`~torchslim.core.steps.Step`, or a method object with
        ``as_step()``, such as a pruner or a regularizer) to act on ``policy``'s epochs."""
        step = as_step(step)
        name = name or f"{type(step).__name__.lower()}_{len(self.entries)}"
        if any(entry.name == name for entry in self.entries):
            raise ValueError(f"a step named '{name}' is already scheduled")
        entry = ScheduledStep(name, step, policy)
        step.attach(self._context(entry, policy.first, None))
        self.entries.append(entry)

    # -- hooks ---------------------------------------------------------------------------------
    def _context(self, entry: ScheduledStep, epoch: int, optimizer,
                 metrics: dict[str, Any] | None = None) -> StepContext:
        upcoming = entry.policy.next_after(epoch)
        return StepContext(
            model=self.model,
            optimizer=optimizer,
            epoch=epoch,
            progress=entry.policy.progress(epoch),
            next_progress=entry.policy.progress(upcoming) if upcoming is not None else 1.0,
            example_input=self.example_input,
            services=self.services,
            edits=self.edits,
            metrics=metrics,
            policy=entry.policy,
        )

    def _firing(self, epoch: int) -> list[ScheduledStep]:
        return [entry for entry in self.entries if entry.policy.fires(epoch)]

    def _run(self, hook: str, epoch: int, optimizer,
             metrics: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
        return {
            entry.name: getattr(entry.step, hook)(
                self._context(entry, epoch, optimizer, metrics)) or {}
            for entry in self._firing(epoch)
        }

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
                entry_log["actions"].setdefault(entry.name, {"kind": entry.step.kind})
                entry_log["actions"][entry.name].update(done[entry.name])

    def on_epoch_begin(self, epoch: int, optimizer=None, **kwargs: Any) -> None:
        """Run the steps whose policies fire on ``epoch`` (pruners set their new masks)."""
        self._record(epoch, self._run("on_epoch_begin", epoch, optimizer))

    def on_epoch_resume(self, epoch: int, optimizer=None, **kwargs: Any) -> None:
        """Training resumes within ``epoch``: the firing steps set up their hooks again."""
        for entry in self._firing(epoch):
            entry.step.on_epoch_resume(self._context(entry, epoch, optimizer))

    def mid_epoch_checkpoint_ok(self) -> bool:
        """Whether every step can resume from a checkpoint written now."""
        return all(entry.step.mid_epoch_checkpoint_ok() for entry in self.entries)

    def on_minibatch_begin(
        self, epoch: int, minibatch_id: int, minibatches_per_epoch: int, optimizer=None,
        **kwargs: Any,
    ) -> None:
        """Let steps that act within an epoch (gradual pruning in several steps) act."""
        for entry in self._firing(epoch):
            entry.step.on_minibatch_begin(
                self._context(entry, epoch, optimizer), minibatch_id, minibatches_per_epoch
            )

    def before_backward_pass(
        self,
        epoch: int,
        minibatch_id: int,
        minibatches_per_epoch: int,
        loss: torch.Tensor,
        optimizer=None,
        return_loss_components: bool = False,
        **batch: Any,
    ) -> torch.Tensor | LossWithComponents:
        """``loss`` plus the terms the active steps add (regularizers, distillation)."""
        components: dict[str, torch.Tensor] = {}
        for entry in self._firing(epoch):
            term = entry.step.before_backward_pass(
                self._context(entry, epoch, optimizer), loss, **batch
            )
            if term is not None:
                components[entry.name] = term
        overall = loss + sum(components.values()) if components else loss
        self.last_loss_components = {k: float(v.detach()) for k, v in components.items()}
        if return_loss_components:
            return LossWithComponents(overall, components)
        return overall

    def on_minibatch_end(
        self, epoch: int, minibatch_id: int, minibatches_per_epoch: int, optimizer=None,
        **kwargs: Any,
    ) -> None:
        """After the optimizer step: the firing steps, then every service (masks re-applied)."""
        for entry in self._firing(epoch):
            entry.step.on_minibatch_end(
                self._context(entry, epoch, optimizer), minibatch_id, minibatches_per_epoch
            )
        for service in self.services.values():
            if hasattr(service, "on_minibatch_end"):
                service.on_minibatch_end()

    def on_epoch_end(self, epoch: int, optimizer=None, metrics: dict[str, Any] | None = None,
                     **kwargs: Any) -> None:
        """Run end-of-epoch actions (LR schedules step; ``metrics``, the epoch's numbers, reach
        them) and log what the services report."""
        self._record(epoch, self._run("on_epoch_end", epoch, optimizer, metrics))
        entry_log = self._log_entry(epoch)
        for service in self.services.values():
            if hasattr(service, "epoch_log"):
                entry_log.update(service.epoch_log())
        if self.last_loss_components:
            entry_log["loss_components"] = dict(self.last_loss_components)

    def finish(self) -> None:
        """Training is over: let every service clean up (the masks drop their hooks)."""
        for entry in self.entries:
            entry.step.finish()
        for service in self.services.values():
            if hasattr(service, "finish"):
                service.finish()

    # -- checkpoints ---------------------------------------------------------------------------
    def metric_users(self) -> list[str]:
        """The names of the scheduled steps that act on the epoch's validation numbers."""
        return [entry.name for entry in self.entries
                if getattr(entry.step, "uses_metrics", False)]

    def extra_parameters(self) -> dict[str, nn.Parameter]:
        """The parameters the steps train outside the model, as ``<step name>.<name>``."""
        return {
            f"{entry.name}.{name}": param
            for entry in self.entries
            for name, param in entry.step.extra_parameters().items()
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "fired": {entry.name: list(entry.fired) for entry in self.entries},
            "steps": {entry.name: entry.step.state_dict() for entry in self.entries},
            "services": {
                name: service.state_dict()
                for name, service in self.services.items()
                if hasattr(service, "state_dict")
            },
            "log": self.log,
            "edits": self.edits,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        names = [entry.name for entry in self.entries]
        if sorted(state["fired"]) != sorted(names):
            raise UserError(
                f"the checkpoint's schedule has steps {sorted(state['fired'])}, this one "
                f"{sorted(names)}: resume with the same recipe or use a new --out directory"
            )
        new_edits = state.get("edits", [])[len(self.edits):]
        apply_edits(self.model, new_edits)  # a fresh model takes the edited shapes first
        self.edits.extend(new_edits)
        for entry in self.entries:
            entry.fired = list(state["fired"][entry.name])
            entry.step.load_state_dict(state["steps"].get(entry.name, {}))
        for name, service_state in state.get("services", {}).items():
            if name not in self.services:
                raise UserError(
                    f"the checkpoint's schedule has a '{name}' service this schedule lacks: "
                    "resume with the same recipe"
                )
            self.services[name].load_state_dict(service_state)
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
                    line = f"  {name}: lr {', '.join(f'{v:.6g}' for v in action['lr'])}"
                    if action.get("next_lr", action["lr"]) != action["lr"]:
                        line += f" (next epoch {', '.join(f'{v:.6g}' for v in action['next_lr'])})"
                    lines.append(line)
            for key, value in entry.get("loss_components", {}).items():
                lines.append(f"  {key}: loss term {value:.6g}")
        return "\n".join(lines)
