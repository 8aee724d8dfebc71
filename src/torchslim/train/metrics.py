"""Evaluation metrics the :class:`~torchslim.train.Trainer` runs after every epoch.

A metric does one job, like a ``torch.ao`` observer: :meth:`Metric.reset` clears it,
:meth:`Metric.update` sees the model's outputs and the targets of one batch, and
:meth:`Metric.compute` returns named numbers. The trainer writes each number into the epoch's
history row as ``val_<name>``, so a task that is not classification only needs other metrics,
never trainer edits. Built in: :class:`TopK` (accuracy), :class:`MeanLoss` and :class:`PSNR`
(image restoration).

Example::

    >>> import torch
    >>> from torchslim.train import MeanLoss, TopK
    >>> logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 2.0]])
    >>> labels = torch.tensor([0, 1])
    >>> metrics = [MeanLoss(), TopK(ks=(1, 2))]
    >>> for metric in metrics:
    ...     metric.reset(); metric.update(logits, labels)
    >>> {k: round(v, 3) for m in metrics for k, v in m.compute().items()}
    {'loss': 0.908, 'top1': 50.0, 'top2': 100.0}
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from ..core.errors import UserError

#: ``loss(outputs, targets)`` -> the mean loss over the batch, a scalar tensor.
MetricLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class Metric(ABC):
    """One evaluation number (or a few related ones) accumulated over batches.

    Subclasses implement :meth:`reset`, :meth:`update` and :meth:`compute`; the names in
    :meth:`compute`'s result must not clash with another metric's in the same run.

    Example::

        >>> import torch
        >>> class MaxAbsError(Metric):
        ...     def reset(self):
        ...         self.worst = 0.0
        ...     def update(self, outputs, targets):
        ...         self.worst = max(self.worst, (outputs - targets).abs().max().item())
        ...     def compute(self):
        ...         return {"max_abs_error": self.worst}
        >>> metric = MaxAbsError()
        >>> metric.reset(); metric.update(torch.ones(2, 3), torch.zeros(2, 3))
        >>> metric.compute()
        {'max_abs_error': 1.0}
    """

    @abstractmethod
    def reset(self) -> None:
        """Forget every batch seen so far (called before each evaluation)."""

    @abstractmethod
    def update(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        """Take in the model's ``outputs`` for one batch and that batch's ``targets``."""

    @abstractmethod
    def compute(self) -> dict[str, float]:
        """The numbers over every batch since :meth:`reset`, by name."""


class TopK(Metric):
    """Top-k accuracy in percent for class scores ``(N, C)`` and integer labels ``(N,)``.

    Reports ``top<k>`` for each k in ``ks``; a k larger than the number of classes counts as that
    number (top-5 of a 3-class problem is top-3, so 100 %). With ``num_classes``, outputs with
    another number of columns are a :class:`UserError` (a model head that does not fit the data).

    Example::

        >>> import torch
        >>> metric = TopK(ks=(1, 5))
        >>> metric.reset()
        >>> metric.update(torch.tensor([[0.1, 0.9], [0.8, 0.2]]), torch.tensor([1, 1]))
        >>> metric.compute()
        {'top1': 50.0, 'top5': 100.0}
    """

    def __init__(self, ks: Sequence[int] = (1, 5), num_classes: int | None = None) -> None:
        ks = tuple(ks)
        if not ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ks):
            raise UserError(f"TopK needs whole numbers k >= 1, got ks={ks!r}")
        if len(set(ks)) != len(ks):
            raise UserError(f"TopK got the same k twice in ks={ks!r}: list each k once")
        self.ks = ks
        self.num_classes = num_classes
        self.reset()

    def reset(self) -> None:
        self._hits: list[torch.Tensor | int] = [0] * len(self.ks)
        self._seen = 0

    def update(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        if (outputs.dim() != 2 or targets.dim() != 1 or targets.is_floating_point()
                or len(outputs) != len(targets)):
            raise UserError(
                f"top-k accuracy needs class scores of shape (N, classes) and integer labels of "
                f"shape (N,), got outputs {tuple(outputs.shape)} and {targets.dtype} targets "
                f"{tuple(targets.shape)}: give the Trainer metrics that fit the task, "
                f"e.g. metrics=[MeanLoss(F.mse_loss), PSNR()]"
            )
        classes = outputs.shape[1]
        if self.num_classes is not None and classes != self.num_classes:
            raise UserError(
                f"the model outputs {classes} class scores but the data has {self.num_classes} "
                f"classes: create the model with num_classes={self.num_classes}"
            )
        top = outputs.topk(min(max(self.ks), classes), dim=1).indices
        correct = top == targets[:, None]
        for i, k in enumerate(self.ks):
            self._hits[i] = self._hits[i] + correct[:, :k].any(1).sum()
        self._seen += len(targets)

    def compute(self) -> dict[str, float]:
        if self._seen == 0:
            raise ValueError("TopK.compute() before any update()")
        return {f"top{k}": 100.0 * float(h) / self._seen
                for k, h in zip(self.ks, self._hits, strict=True)}


class MeanLoss(Metric):
    """The mean of ``loss_fn(outputs, targets)`` over every sample, reported as ``name``.

    ``loss_fn`` returns the mean over its batch (as ``torch.nn.functional`` losses do by
    default); batches are weighted by their size. Default: cross entropy, reported as ``loss``.

    Example::

        >>> import torch, torch.nn.functional as F
        >>> metric = MeanLoss(F.mse_loss, name="mse")
        >>> metric.reset()
        >>> metric.update(torch.zeros(1, 4), torch.ones(1, 4))
        >>> metric.update(torch.zeros(3, 4), torch.zeros(3, 4))
        >>> metric.compute()
        {'mse': 0.25}
    """

    def __init__(self, loss_fn: MetricLoss | None = None, name: str = "loss") -> None:
        self.loss_fn = loss_fn if loss_fn is not None else F.cross_entropy
        self.name = name
        self.reset()

    def reset(self) -> None:
        self._sum: torch.Tensor | float = 0.0
        self._seen = 0

    def update(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        loss = self.loss_fn(_as_float(outputs), targets)
        if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
            raise UserError(
                f"the loss of metric '{self.name}' must return a scalar tensor (the batch mean), "
                f"got {_describe(loss)}"
            )
        self._sum = self._sum + loss.detach().double() * len(outputs)
        self._seen += len(outputs)

    def compute(self) -> dict[str, float]:
        if self._seen == 0:
            raise ValueError("MeanLoss.compute() before any update()")
        return {self.name: float(self._sum) / self._seen}


class PSNR(Metric):
    """Peak signal-to-noise ratio in dB of image outputs against target images: the mean over
    images of ``10 * log10(max_value**2 / mse)``, with each image's MSE over all its values.

    ``max_value`` is the largest possible pixel value (1.0 for images in [0, 1]). An exact match
    counts as 100 dB above that range (its MSE is taken as ``1e-10 * max_value**2``), so the
    mean stays finite.

    Example::

        >>> import torch
        >>> metric = PSNR(max_value=1.0)
        >>> metric.reset()
        >>> metric.update(torch.full((2, 1, 4, 4), 0.1), torch.zeros(2, 1, 4, 4))
        >>> round(metric.compute()["psnr"], 3)
        20.0
    """

    def __init__(self, max_value: float = 1.0) -> None:
        if not max_value > 0:
            raise UserError(f"PSNR needs max_value > 0 (the largest pixel value), got {max_value}")
        self.max_value = float(max_value)
        self.reset()

    def reset(self) -> None:
        self._sum: torch.Tensor | float = 0.0
        self._seen = 0

    def update(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        if outputs.shape != targets.shape or outputs.dim() < 2:
            raise UserError(
                f"PSNR compares output images with target images of the same shape (N, ...), "
                f"got outputs {tuple(outputs.shape)} and targets {tuple(targets.shape)}"
            )
        error = (_as_float(outputs).double() - targets.double()).pow(2)
        mse = error.flatten(1).mean(1).clamp(min=1e-10 * self.max_value**2)
        self._sum = self._sum + (10.0 * torch.log10(self.max_value**2 / mse)).sum()
        self._seen += len(outputs)

    def compute(self) -> dict[str, float]:
        if self._seen == 0:
            raise ValueError("PSNR.compute() before any update()")
        return {"psnr": float(self._sum) / self._seen}


def _as_float(outputs: torch.Tensor) -> torch.Tensor:
    """Mixed-precision outputs (float16) as float32, so sums do not overflow."""
    return outputs.float() if outputs.is_floating_point() else outputs


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    return type(value).__name__
