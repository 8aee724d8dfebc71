"""Sparsity-inducing loss terms, added by the compression scheduler before the backward pass.

Example::

    >>> import torch
    >>> from torchslim.pruning.regularizers import L1Regularizer
    >>> model = torch.nn.Linear(2, 1, bias=False)
    >>> with torch.no_grad():
    ...     _ = model.weight.copy_(torch.tensor([[1.0, -2.0]]))
    >>> L1Regularizer({"weight": 0.1}).penalty(model).item()
    0.30000001192092896
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .pruners import resolve_values


class L1Regularizer:
    """``sum(strength * |w|.sum())`` over the weights named (patterns as in
    :mod:`torchslim.core.names`; Distiller's ``L1Regularizer`` with ``reg_regims``)."""

    kind = "regularizer"

    def __init__(self, strengths: Mapping[str, float]) -> None:
        self.strengths = dict(strengths)

    def penalty(self, model: nn.Module) -> torch.Tensor:
        """The loss term for ``model``'s current weights."""
        params = dict(model.named_parameters())
        values = resolve_values(model, self.strengths)
        terms = [strength * params[name].abs().sum() for name, strength in values.items()]
        return torch.stack(terms).sum()

    def before_backward_pass(self, ctx: Any, loss: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return self.penalty(ctx.model)
