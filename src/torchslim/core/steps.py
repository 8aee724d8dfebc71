"""The one protocol for everything a compression schedule runs: pruning, regularization,
thinning, learning-rate changes, and later quantization, distillation and factorization.

A :class:`Step` is a small object with hooks; :class:`~torchslim.schedule.CompressionScheduler`
calls them from the training loop on the epochs the step's policy names, and knows nothing else
about it. Every hook gets a :class:`StepContext`. The hooks, in the order they run (this is the
one place they are documented, as in Distiller's ``policy.py``):

==========================  ======================================================================
``attach(ctx)``             once, when the step is scheduled: create the shared services it uses
``on_epoch_begin(ctx)``     before the first minibatch of a firing epoch; what it returns (a dict)
                            goes into the schedule log (e.g. the new sparsity of each layer)
``on_minibatch_begin``      ``(ctx, minibatch_id, minibatches_per_epoch)``: before the forward
                            pass; methods that act within an epoch (gradual pruning) act here
``before_backward_pass``    ``(ctx, loss, **batch)``: return a tensor to add to the loss (a
                            regularizer's penalty, a distillation term) or None; ``batch`` holds
                            ``inputs``, ``outputs`` and ``targets`` when the trainer has them
``on_minibatch_end``        ``(ctx, minibatch_id, minibatches_per_epoch)``: after the optimizer
                            step
``on_epoch_end(ctx)``       after the last minibatch; returns a dict for the log (an LR schedule
                            steps here)
``finish()``                once, when training is over: remove hooks the step put on models
``state_dict()``            what a checkpoint must hold to resume the step exactly
``extra_parameters()``      parameters the step trains outside the model (a distillation
                            adapter), by name; it adds them to ``ctx.optimizer`` itself, and a
                            resumed run finds them by these names
==========================  ======================================================================

*Services* are objects several steps share, kept in ``ctx.services`` under a name (the pruning
masks are one). Unlike steps, a service is not bound to a policy: the scheduler calls its
``on_minibatch_end()`` after every optimizer step and merges its ``epoch_log()`` into every
epoch's log, saves its ``state_dict()``, and calls its ``finish()`` when training is over.

*Edits* (:mod:`torchslim.core.edits`) that change the model's architecture are appended to
``ctx.edits``; a resumed schedule replays them on the fresh model before loading weights.

Example::

    >>> import torch
    >>> from torchslim.core.steps import Step, StepContext
    >>> class L2(Step):
    ...     kind = "regularizer"
    ...     def before_backward_pass(self, ctx, loss, **batch):
    ...         return 0.5 * sum(p.pow(2).sum() for p in ctx.model.parameters())
    >>> model = torch.nn.Linear(1, 1, bias=False)
    >>> _ = torch.nn.init.constant_(model.weight, 2.0)
    >>> L2().before_backward_pass(StepContext(model), torch.tensor(0.0)).item()
    2.0
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import torch
from torch import nn

S = TypeVar("S")


class Services(dict[str, Any]):
    """Objects shared by the steps of one schedule, by name."""

    def get_or_create(self, name: str, factory: Callable[[], S]) -> S:
        """The service ``name``, created with ``factory()`` the first time."""
        if name not in self:
            self[name] = factory()
        return self[name]


@dataclass
class StepContext:
    """What a step sees when it acts.

    ``progress`` runs from 0.0 on the first firing epoch of the step's policy to 1.0 on its last;
    ``next_progress`` is the progress at the next firing epoch (1.0 after the last), for steps
    that also act between epochs. ``example_input`` is one batch the model accepts (steps that
    trace the model need it). ``services`` and ``edits`` are the schedule's own, shared by all
    its steps. ``metrics`` are the epoch's numbers (``val_loss``, ``val_top1``, ...) in
    ``on_epoch_end`` when the training loop passes them. ``policy`` is the step's own policy
    (``starting_epoch``, ``ending_epoch``, ``frequency``), for rules written in epochs.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer | None = None
    epoch: int = 0
    progress: float = 1.0
    next_progress: float = 1.0
    example_input: torch.Tensor | None = None
    services: Services = field(default_factory=Services)
    edits: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] | None = None
    policy: Any = None


class Step:
    """Base class of scheduled steps: every hook does nothing; override the ones you need."""

    #: The kind shown in schedule logs ("pruner", "regularizer", "extension", ...).
    kind: ClassVar[str] = "step"

    #: Whether the step acts on ``ctx.metrics`` (the epoch's validation numbers): training
    #: front ends then refuse to feed it numbers measured on the test split.
    uses_metrics: bool = False

    def attach(self, ctx: StepContext) -> None:
        """Once, when scheduled: create the services this step shares with others."""

    def on_epoch_begin(self, ctx: StepContext) -> dict[str, Any] | None:
        """Before the first minibatch of a firing epoch; a dict for the schedule log."""
        return None

    def on_minibatch_begin(
        self, ctx: StepContext, minibatch_id: int, minibatches_per_epoch: int
    ) -> None:
        """Before the forward pass of a minibatch of a firing epoch."""

    def before_backward_pass(
        self, ctx: StepContext, loss: torch.Tensor, **batch: Any
    ) -> torch.Tensor | None:
        """A term to add to ``loss`` before the backward pass, or None."""
        return None

    def on_minibatch_end(
        self, ctx: StepContext, minibatch_id: int, minibatches_per_epoch: int
    ) -> None:
        """After the optimizer step of a minibatch of a firing epoch."""

    def on_epoch_end(self, ctx: StepContext) -> dict[str, Any] | None:
        """After the last minibatch of a firing epoch; a dict for the schedule log."""
        return None

    def on_epoch_resume(self, ctx: StepContext) -> None:
        """Instead of :meth:`on_epoch_begin` when training resumes within a firing epoch: set
        up again what ``on_epoch_begin`` set up that neither the model nor :meth:`state_dict`
        holds (hooks, flags)."""

    #: Whether the step resumes from a checkpoint written within a firing epoch; None: only
    #: if it does not override :meth:`on_epoch_begin`, or also overrides
    #: :meth:`on_epoch_resume`. Steps whose ``on_epoch_begin`` leaves all it does in the model,
    #: the masks, the edits or :meth:`state_dict` say True.
    resumes_mid_epoch: ClassVar[bool | None] = None

    def mid_epoch_checkpoint_ok(self) -> bool:
        """Whether a checkpoint written now, within an epoch, resumes correctly (see
        :attr:`resumes_mid_epoch`)."""
        return resumes_mid_epoch(self, Step)

    def finish(self) -> None:
        """Training is over: remove what the step hooked into models."""

    def extra_parameters(self) -> dict[str, nn.Parameter]:
        """Parameters trained outside the model (see the module docstring), by name."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint holds to resume this step (tensors, numbers, strings, lists)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


def resumes_mid_epoch(obj: Any, base: type) -> bool:
    """``obj.resumes_mid_epoch`` if set, else whether ``obj`` (an instance of a subclass of
    ``base``) leaves ``on_epoch_begin`` alone or sets itself up again in ``on_epoch_resume``."""
    declared = getattr(obj, "resumes_mid_epoch", None)
    if declared is not None:
        return bool(declared)
    cls = type(obj)
    return (cls.on_epoch_begin is base.on_epoch_begin
            or cls.on_epoch_resume is not base.on_epoch_resume)


def as_step(method: Any) -> Step:
    """``method`` itself when it is a :class:`Step`, else what its ``as_step()`` returns (plain
    method objects, such as pruners, say how they are scheduled that way)."""
    if isinstance(method, Step):
        return method
    convert = getattr(method, "as_step", None)
    if convert is None:
        raise TypeError(
            f"{type(method).__name__} cannot be scheduled: give a Step, or an object with an "
            "as_step() method"
        )
    step = convert()
    if not isinstance(step, Step):
        raise TypeError(f"{type(method).__name__}.as_step() returned {type(step).__name__}")
    return step
