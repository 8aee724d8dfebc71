"""Learning-rate schedules as steps: any ``torch.optim.lr_scheduler`` class by name.

Example::

    >>> import torch
    >>> from torchslim.core.steps import StepContext
    >>> from torchslim.schedule import LRSchedule
    >>> model = torch.nn.Linear(2, 2)
    >>> ctx = StepContext(model, torch.optim.SGD(model.parameters(), lr=1.0))
    >>> step = LRSchedule("StepLR", step_size=1, gamma=0.5)
    >>> _ = step.on_epoch_begin(ctx)
    >>> ctx.optimizer.step()  # an epoch of training
    >>> step.on_epoch_end(ctx)
    {'lr': [0.5]}
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..core.errors import UserError
from ..core.steps import Step, StepContext


class LRSchedule(Step):
    """A ``torch.optim.lr_scheduler`` class (or its name) built on the training optimizer when
    first needed, and stepped at the end of every firing epoch.

    Its steps compose with the trainer's own (chainable) schedule.
    """

    kind = "lr_scheduler"

    def __init__(self, scheduler: str | Callable[..., Any], **kwargs: Any) -> None:
        if isinstance(scheduler, str):
            if not hasattr(torch.optim.lr_scheduler, scheduler):
                raise UserError(f"torch.optim.lr_scheduler has no class '{scheduler}'")
            scheduler = getattr(torch.optim.lr_scheduler, scheduler)
        self.factory = scheduler
        self.kwargs = kwargs
        self.scheduler: Any = None
        self._pending_state: dict[str, Any] | None = None

    def _build(self, optimizer: torch.optim.Optimizer | None) -> Any:
        if optimizer is None:
            raise ValueError("an LR schedule needs the optimizer: pass optimizer= to the hooks")
        if self.scheduler is None:
            self.scheduler = self.factory(optimizer, **self.kwargs)
            if self._pending_state is not None:
                self.scheduler.load_state_dict(self._pending_state)
        return self.scheduler

    def on_epoch_begin(self, ctx: StepContext) -> dict[str, Any]:
        self._build(ctx.optimizer)
        return {}

    def on_epoch_end(self, ctx: StepContext) -> dict[str, Any]:
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
