"""Distillation losses: Hinton et al.'s soft-target loss, and the combined loss a plain training
loop uses as its criterion.

``kd_loss(s, t, T)`` is ``T^2 * KL(softmax(t / T) || softmax(s / T))`` averaged over the batch
(the ``T^2`` keeps its gradients on the scale of the cross entropy's as ``T`` grows; Distiller
leaves it out, ``t_squared=False``). :class:`DistillationLoss` is
``alpha * kd_loss + (1 - alpha) * CE(student, labels)``, with the teacher run on the same batch.

Example::

    >>> import torch
    >>> from torchslim.distill import kd_loss
    >>> logits = torch.tensor([[2.0, 0.0, -1.0]])
    >>> float(kd_loss(logits, logits, temperature=4.0))  # the same distribution: no loss
    0.0
    >>> round(float(kd_loss(torch.zeros(1, 2), torch.tensor([[0.0, 2.0]]), 1.0)), 4)  # KL by hand
    0.3278
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..core.errors import UserError
from .teacher import Teacher


def check_temperature(temperature: float) -> float:
    if not temperature > 0:
        raise UserError(f"the distillation temperature must be > 0, got {temperature}")
    return float(temperature)


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 4.0,
    *,
    t_squared: bool = True,
) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher / T) || softmax(student / T))``, mean over the batch (class
    scores in dimension 1; other dimensions, such as a sequence, count as more samples)."""
    if student_logits.shape != teacher_logits.shape:
        raise UserError(
            f"the teacher's outputs {tuple(teacher_logits.shape)} differ from the student's "
            f"{tuple(student_logits.shape)}: distill between models with the same outputs"
        )
    classes = student_logits.shape[1] if student_logits.dim() > 1 else student_logits.shape[0]
    s = student_logits.float().movedim(1, -1).reshape(-1, classes) / temperature
    t = teacher_logits.detach().float().movedim(1, -1).reshape(-1, classes) / temperature
    loss = F.kl_div(F.log_softmax(s, dim=1), F.log_softmax(t, dim=1), reduction="batchmean",
                    log_target=True)
    return loss * temperature**2 if t_squared else loss


class DistillationLoss:
    """A training criterion ``loss_fn(outputs, targets, batch)`` (the signature of
    :class:`~torchslim.train.Trainer`'s ``loss_fn``): ``alpha * kd_loss + (1 - alpha) * CE``.

    ``teacher`` is a :class:`Teacher` or a plain model (frozen and put in eval mode here).

    Example::

        >>> import torch
        >>> from torchslim.distill import DistillationLoss
        >>> teacher = torch.nn.Linear(4, 3)
        >>> criterion = DistillationLoss(teacher, temperature=2.0, alpha=0.5)
        >>> x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
        >>> loss = criterion(torch.nn.Linear(4, 3)(x), y, (x, y))
        >>> loss.dim(), teacher.weight.requires_grad
        (0, False)
    """

    def __init__(self, teacher: Any, temperature: float = 4.0, alpha: float = 0.9,
                 *, label_smoothing: float = 0.0) -> None:
        if not 0.0 <= alpha <= 1.0:
            raise UserError(f"alpha (the distillation loss's weight) must be in [0, 1], "
                            f"got {alpha}")
        self.teacher = teacher if isinstance(teacher, Teacher) else Teacher(teacher)
        self.temperature = check_temperature(temperature)
        self.alpha = float(alpha)
        self.label_smoothing = label_smoothing

    def __call__(self, outputs: torch.Tensor, targets: torch.Tensor, batch: tuple) -> torch.Tensor:
        teacher_logits = self.teacher(batch[0])
        soft = kd_loss(outputs, teacher_logits, self.temperature)
        hard = F.cross_entropy(outputs, targets, label_smoothing=self.label_smoothing)
        return self.alpha * soft + (1.0 - self.alpha) * hard
