"""The hook points a compression schedule plugs into, called by :class:`~torchslim.train.Trainer`.

The trainer calls them in this order for every epoch::

    on_epoch_begin(epoch)
    for each minibatch:
        on_minibatch_begin(epoch, minibatch_id, minibatches_per_epoch)
        loss = forward + criterion
        loss = before_backward_pass(epoch, minibatch_id, minibatches_per_epoch, loss) or loss
        loss.backward(); optimizer.step()
        on_minibatch_end(epoch, minibatch_id, minibatches_per_epoch)
    on_epoch_end(epoch, metrics=...)

Users with their own training loop call the same methods at the same places. Example::

    >>> import torch
    >>> from torchslim.train import Callback
    >>> class ZeroFirstWeight(Callback):
    ...     def __init__(self, model):
    ...         self.model = model
    ...     def on_minibatch_end(self, epoch, minibatch_id, minibatches_per_epoch, **kw):
    ...         with torch.no_grad():
    ...             self.model.weight[0] = 0
    >>> model = torch.nn.Linear(3, 2)
    >>> hook = ZeroFirstWeight(model)
    >>> optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> for epoch in range(2):
    ...     hook.on_epoch_begin(epoch, optimizer=optimizer)
    ...     for i, (x, y) in enumerate([(torch.randn(4, 3), torch.tensor([0, 1, 0, 1]))]):
    ...         hook.on_minibatch_begin(epoch, i, 1, optimizer=optimizer)
    ...         loss = torch.nn.functional.cross_entropy(model(x), y)
    ...         loss = hook.before_backward_pass(epoch, i, 1, loss, optimizer=optimizer) or loss
    ...         optimizer.zero_grad(); loss.backward(); optimizer.step()
    ...         hook.on_minibatch_end(epoch, i, 1, optimizer=optimizer)
    ...     hook.on_epoch_end(epoch, optimizer=optimizer)
    >>> bool((model.weight[0] == 0).all())
    True
"""

from __future__ import annotations

from typing import Any

import torch

from ..core.steps import resumes_mid_epoch


class Callback:
    """Base class with no-op hooks; override the ones you need. Extra keywords are always passed
    (``optimizer``, and for ``before_backward_pass`` also ``inputs``, ``outputs``, ``targets``), so
    accept ``**kwargs``."""

    def on_epoch_begin(self, epoch: int, **kwargs: Any) -> None:
        """Before the first minibatch of ``epoch``."""

    def on_minibatch_begin(
        self, epoch: int, minibatch_id: int, minibatches_per_epoch: int, **kwargs: Any
    ) -> None:
        """Before the forward pass of a minibatch."""

    def before_backward_pass(
        self,
        epoch: int,
        minibatch_id: int,
        minibatches_per_epoch: int,
        loss: torch.Tensor,
        **kwargs: Any,
    ) -> torch.Tensor | None:
        """After the loss is computed; return an adjusted loss, or None to keep it."""
        return None

    def on_minibatch_end(
        self, epoch: int, minibatch_id: int, minibatches_per_epoch: int, **kwargs: Any
    ) -> None:
        """After the optimizer step."""

    def on_epoch_end(self, epoch: int, **kwargs: Any) -> None:
        """After the last minibatch (and evaluation, whose numbers come as ``metrics``)."""

    def on_epoch_resume(self, epoch: int, **kwargs: Any) -> None:
        """Instead of :meth:`on_epoch_begin` when training resumes from a checkpoint written
        within ``epoch``: set up again what ``on_epoch_begin`` set up and :meth:`state_dict`
        does not hold (hooks, flags)."""

    #: Whether the callback resumes from a checkpoint written within an epoch; None: only if
    #: it does not override :meth:`on_epoch_begin`, or also overrides :meth:`on_epoch_resume`.
    resumes_mid_epoch: bool | None = None

    def mid_epoch_checkpoint_ok(self) -> bool:
        """Whether a checkpoint written now, within an epoch, resumes correctly (see
        :attr:`resumes_mid_epoch`; override to say no while the callback holds state that
        :meth:`state_dict` does not save)."""
        return resumes_mid_epoch(self, Callback)

    def extra_parameters(self) -> dict[str, torch.nn.Parameter]:
        """Parameters this callback trains outside the model (a distillation adapter, say),
        by name. The trainer names the optimizer's parameters with these in its checkpoints, so
        a resumed run rebuilds the optimizer's parameter groups exactly."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """State saved in every training checkpoint (tensors, numbers, strings, lists, dicts)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned, when training resumes."""
