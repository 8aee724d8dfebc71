"""Knowledge distillation: a frozen teacher, Hinton et al.'s soft-target loss, FitNets-style
hints between named layers with learned adapters, and a schedule step that combines them with
pruning or quantization-aware training in one recipe.

Example (a student learns from a teacher in a plain loop)::

    >>> import torch
    >>> from torchslim.distill import DistillationLoss
    >>> _ = torch.manual_seed(0)
    >>> teacher = torch.nn.Linear(4, 3)
    >>> student = torch.nn.Linear(4, 3)
    >>> criterion = DistillationLoss(teacher, temperature=4.0, alpha=0.9)
    >>> optimizer = torch.optim.SGD(student.parameters(), lr=0.1)
    >>> x, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
    >>> for _ in range(300):
    ...     optimizer.zero_grad()
    ...     criterion(student(x), y, (x, y)).backward()
    ...     optimizer.step()
    >>> agree = (student(x).argmax(1) == teacher(x).argmax(1)).float().mean().item()
    >>> agree > 0.9
    True
"""

from .hints import Hint, HintLoss
from .losses import DistillationLoss, kd_loss
from .steps import KnowledgeDistillation
from .teacher import Teacher, load_teacher

__all__ = [
    "DistillationLoss",
    "Hint",
    "HintLoss",
    "KnowledgeDistillation",
    "Teacher",
    "kd_loss",
    "load_teacher",
]
