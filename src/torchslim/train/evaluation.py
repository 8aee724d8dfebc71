"""Classification metrics: top-1, top-5, per-class accuracy and the confusion matrix.

Example::

    >>> import torch
    >>> from torchslim.train import evaluate
    >>> model = torch.nn.Linear(2, 2)
    >>> with torch.no_grad():
    ...     _ = model.weight.copy_(torch.eye(2)); _ = model.bias.zero_()
    >>> batches = [(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0]))]
    >>> result = evaluate(model, batches, num_classes=2)
    >>> result.top1, result.confusion
    (50.0, [[1, 1], [0, 0]])
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..core.errors import UserError


@dataclass
class EvalResult:
    """Accuracy in percent; ``confusion[true][predicted]`` counts images."""

    top1: float
    top5: float
    loss: float
    n: int
    per_class: list[float]
    confusion: list[list[int]]
    classes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-ready dict with the stable keys ``top1``, ``top5``, ``loss``, ``n``, ..."""
        return {
            "top1": round(self.top1, 4),
            "top5": round(self.top5, 4),
            "loss": round(self.loss, 6),
            "n": self.n,
            "per_class": {
                c: round(a, 4) for c, a in zip(self.class_names, self.per_class, strict=True)
            },
            "confusion": self.confusion,
        }

    @property
    def class_names(self) -> list[str]:
        return self.classes or [str(i) for i in range(len(self.per_class))]

    def format_report(self) -> str:
        """Per-class accuracy and the confusion matrix as text."""
        names = self.class_names
        width = max(6, *(len(n) for n in names))
        lines = [f"top-1 {self.top1:.2f} %  top-5 {self.top5:.2f} %  loss {self.loss:.4f}  "
                 f"({self.n} images)", "", "per-class accuracy:"]
        lines += [f"  {n:<{width}} {a:6.2f} %" for n, a in zip(names, self.per_class, strict=True)]
        lines += ["", "confusion matrix (rows: true class, columns: predicted):"]
        lines.append(" " * (width + 2) + " ".join(f"{i:>6}" for i in range(len(names))))
        for index, (name, row) in enumerate(zip(names, self.confusion, strict=True)):
            cells = " ".join(f"{c:>6}" for c in row)
            lines.append(f"  {name:<{width}}{cells}  [{index}]")
        return "\n".join(lines)


def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    num_classes: int,
    classes: Sequence[str] = (),
    progress: bool = False,
) -> EvalResult:
    """Run ``model`` in eval mode over ``batches`` of (inputs, labels) and score it."""
    was_training = model.training
    model.eval()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    top5_hits, loss_sum, n = 0, 0.0, 0
    k = min(5, num_classes)
    try:
        with torch.inference_mode():
            for inputs, targets in tqdm(batches, desc="eval", disable=not progress, leave=False):
                logits = model(inputs)
                if logits.dim() != 2 or logits.shape[1] != num_classes:
                    raise UserError(f"the model gives scores of shape {tuple(logits.shape[1:])} "
                                    f"per image, the data has {num_classes} classes: evaluate "
                                    "it on the data it was trained for")
                loss_sum += F.cross_entropy(logits, targets, reduction="sum").item()
                predicted = logits.argmax(1)
                confusion += torch.bincount(
                    targets * num_classes + predicted, minlength=num_classes**2
                ).view(num_classes, num_classes)
                top5_hits += (logits.topk(k, 1).indices == targets[:, None]).any(1).sum().item()
                n += targets.numel()
    finally:
        model.train(was_training)
    if n == 0:
        raise ValueError("evaluate() got no batches")
    per_class_total = confusion.sum(1).clamp(min=1)
    return EvalResult(
        top1=100.0 * confusion.diag().sum().item() / n,
        top5=100.0 * top5_hits / n,
        loss=loss_sum / n,
        n=n,
        per_class=(100.0 * confusion.diag() / per_class_total).tolist(),
        confusion=confusion.tolist(),
        classes=list(classes),
    )
