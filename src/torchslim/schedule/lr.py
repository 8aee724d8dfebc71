"""Learning-rate schedules as steps: any ``torch.optim.lr_scheduler`` class by name, plus
Distiller's ``MultiStepMultiGammaLR``; ``ReduceLROnPlateau`` steps on the epoch's validation
loss (``metric`` picks another of the trainer's numbers, e.g. ``val_top1`` with ``mode: max``).

Example::

    >>> import torch
    >>> from torchslim.core.steps import StepContext
    >>> from torchslim.schedule import LRSchedule
    >>> model = torch.nn.Linear(2, 2)
    >>> ctx = StepContext(model, torch.optim.SGD(model.parameters(), lr=1.0))
    >>> step = LRSchedule("StepLR", step_size=1, gamma=0.5)
    >>> _ = step.on_epoch_begin(ctx)
    >>> ctx.optimizer.step()  # an epoch of training
    >>> step.on_epoch_end(ctx)  # the LR this epoch trained at, and the next epoch's
    {'lr': [1.0], 'next_lr': [0.5]}
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..core.errors import UserError
from ..core.steps import Step, StepContext
from ..train.trainer import align_lr_scheduler


class MultiStepMultiGammaLR(torch.optim.lr_scheduler.LRScheduler):
    """Distiller's schedule: at each of ``milestones`` the LR is multiplied by the matching
    entry of ``gammas`` (``MultiStepLR`` with one factor per milestone).

    >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    >>> sched = MultiStepMultiGammaLR(opt, milestones=[1, 3], gammas=[0.5, 0.1])
    >>> lrs = []
    >>> for _ in range(4):
    ...     opt.step(); sched.step(); lrs.append(round(opt.param_groups[0]["lr"], 4))
    >>> lrs
    [0.5, 0.5, 0.05, 0.05]
    """

    def __init__(self, optimizer: torch.optim.Optimizer, milestones: list[int],
                 gammas: list[float], last_epoch: int = -1) -> None:
        if len(milestones) != len(gammas):
            raise ValueError(f"milestones ({len(milestones)}) and gammas ({len(gammas)}) must "
                             "have the same length")
        if list(milestones) != sorted(milestones):
            raise ValueError(f"milestones must increase, got {list(milestones)}")
        self.milestones = list(milestones)
        self.gammas = list(gammas)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        factor = 1.0
        for milestone, gamma in zip(self.milestones, self.gammas, strict=True):
            if self.last_epoch >= milestone:
                factor *= gamma
        return [base * factor for base in self.base_lrs]


#: Schedulers a recipe may name beside ``torch.optim.lr_scheduler``'s.
EXTRA_SCHEDULERS: dict[str, type] = {"MultiStepMultiGammaLR": MultiStepMultiGammaLR}


def lr_scheduler_class(name: str) -> type | None:
    """The scheduler class named ``name`` (torch's or :data:`EXTRA_SCHEDULERS`), or None."""
    if name in EXTRA_SCHEDULERS:
        return EXTRA_SCHEDULERS[name]
    cls = getattr(torch.optim.lr_scheduler, name, None)
    return cls if isinstance(cls, type) else None


class LRSchedule(Step):
    """A ``torch.optim.lr_scheduler`` class (or its name) built on the training optimizer when
    first needed, and stepped at the end of every firing epoch.

    Its steps compose with the trainer's own (chainable) schedule.
    """

    kind = "lr_scheduler"

    def __init__(self, scheduler: str | Callable[..., Any], *, metric: str = "val_loss",
                 **kwargs: Any) -> None:
        if isinstance(scheduler, str):
            cls = lr_scheduler_class(scheduler)
            if cls is None:
                raise UserError(f"torch.optim.lr_scheduler has no class '{scheduler}'")
            scheduler = cls
        self.factory = scheduler
        self.metric = metric
        self.kwargs = kwargs
        self.scheduler: Any = None
        self._pending_state: dict[str, Any] | None = None

    @property
    def uses_metrics(self) -> bool:  # type: ignore[override]
        """``ReduceLROnPlateau`` steps on :attr:`metric`."""
        return isinstance(self.factory, type) and issubclass(
            self.factory, torch.optim.lr_scheduler.ReduceLROnPlateau)

    def _build(self, optimizer: torch.optim.Optimizer | None) -> Any:
        if optimizer is None:
            raise ValueError("an LR schedule needs the optimizer: pass optimizer= to the hooks")
        if self.scheduler is None:
            lrs = [group["lr"] for group in optimizer.param_groups]
            self.scheduler = self.factory(optimizer, **self.kwargs)
            if self._pending_state is not None:
                # Resumed: building the schedule set its first epoch's LR; the optimizer's
                # restored state had the LR the run reached (a closed-form schedule such as
                # MultiStepMultiGammaLR would otherwise train the epoch at its start value).
                self.scheduler.load_state_dict(self._pending_state)
                for group, lr in zip(optimizer.param_groups, lrs, strict=True):
                    group["lr"] = lr
        return self.scheduler

    #: on_epoch_begin leaves what it does in the model, masks, edits or state_dict
    resumes_mid_epoch = True

    def on_epoch_begin(self, ctx: StepContext) -> dict[str, Any]:
        self._build(ctx.optimizer)
        return {}

    def on_epoch_end(self, ctx: StepContext) -> dict[str, Any]:
        scheduler = self._build(ctx.optimizer)
        align_lr_scheduler(scheduler)
        used = [group["lr"] for group in ctx.optimizer.param_groups]  # what this epoch trained at
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            metrics = ctx.metrics or {}
            if self.metric not in metrics:
                raise UserError(
                    f"ReduceLROnPlateau steps on '{self.metric}', which this epoch did not "
                    f"measure (it has: {', '.join(sorted(metrics)) or 'nothing'}): give the "
                    "trainer evaluation data, or another metric"
                )
            scheduler.step(metrics[self.metric])
        else:
            scheduler.step()
        # "lr": the rate this epoch trained at (as metrics.csv has it); "next_lr": after the step
        return {"lr": used, "next_lr": [group["lr"] for group in ctx.optimizer.param_groups]}

    def state_dict(self) -> dict[str, Any]:
        if self.scheduler is not None:
            return {"scheduler": self.scheduler.state_dict()}
        return {"scheduler": self._pending_state} if self._pending_state else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._pending_state = state.get("scheduler")
        if self.scheduler is not None and self._pending_state is not None:
            self.scheduler.load_state_dict(self._pending_state)
