"""Re-estimate BatchNorm running statistics after pruning, without training.

Removing channels or weights shifts the activations each BatchNorm normalises, while its running
mean and variance still describe the dense model; one-shot structured pruning often collapses
for that reason alone. :func:`recalibrate_batchnorm` resets the statistics and averages them
again over a few batches of training data, in train mode and without gradients; nothing else in
the model changes.

Example::

    >>> import torch
    >>> from torchslim.pruning.recalibration import recalibrate_batchnorm
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4)).eval()
    >>> batches = [(torch.randn(8, 1, 6, 6) * 3 + 1, None) for _ in range(4)]
    >>> recalibrate_batchnorm(model, batches)
    4
    >>> model.training, bool(model[1].running_var.mean() > 1.5)
    (False, True)
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import islice

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def recalibrate_batchnorm(model: nn.Module, batches: Iterable, num_batches: int = 50) -> int:
    """Recompute every BatchNorm's running statistics as the plain average over the first
    ``num_batches`` of ``batches`` (``(inputs, labels)`` pairs); return the batches used.
    The model's train/eval mode is restored."""
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    if not norms:
        return 0
    was_training = model.training
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the batches seen
    model.train()
    used = 0
    try:
        with torch.no_grad():
            for inputs, _ in islice(batches, num_batches):
                model(inputs)
                used += 1
    finally:
        for norm, momentum in zip(norms, momenta, strict=True):
            norm.momentum = momentum
        model.train(was_training)
    return used
