"""Sparsity-inducing loss terms; in a schedule, ``as_step()`` adds them before the backward pass.

Example::

    >>> import torch
    >>> from torchslim.pruning.regularizers import BNGammaL1Regularizer, L1Regularizer
    >>> model = torch.nn.Linear(2, 1, bias=False)
    >>> with torch.no_grad():
    ...     _ = model.weight.copy_(torch.tensor([[1.0, -2.0]]))
    >>> L1Regularizer({"weight": 0.1}).penalty(model).item()
    0.30000001192092896
    >>> bn = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1), torch.nn.BatchNorm2d(2))
    >>> BNGammaL1Regularizer(bn, 0.5).penalty().item()
    1.0
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..core.errors import UserError
from ..core.names import resolve_values
from .steps import RegularizerStep


class L1Regularizer:
    """``sum(strength * |w|.sum())`` over the weights named (patterns as in
    :mod:`torchslim.core.names`; Distiller's ``L1Regularizer`` with ``reg_regims``)."""

    def __init__(self, strengths: Mapping[str, float]) -> None:
        self.strengths = dict(strengths)

    def penalty(self, model: nn.Module) -> torch.Tensor:
        """The loss term for ``model``'s current weights."""
        params = dict(model.named_parameters())
        values = resolve_values(model, self.strengths)
        terms = [strength * params[name].abs().sum() for name, strength in values.items()]
        return torch.stack(terms).sum()

    def as_step(self) -> RegularizerStep:
        """The schedule step adding :meth:`penalty` to the loss."""
        return RegularizerStep(self.penalty)


def _gammas(model: nn.Module) -> list[torch.Tensor]:
    return [m.weight for m in model.modules() if isinstance(m, _BatchNorm) and m.weight is not None]


class BNGammaL1Regularizer:
    """Network slimming's sparsity penalty (Liu et al. 2017): ``strength * sum |gamma|`` over all
    BatchNorms. It reads the current gammas each call, so it keeps working after thinning."""

    def __init__(self, model: nn.Module, strength: float) -> None:
        if strength < 0:
            raise UserError(f"the BatchNorm L1 strength must be >= 0, got {strength}")
        if not _gammas(model):
            raise UserError("the model has no BatchNorm with a learnable scale to regularise")
        self.model = model
        self.strength = strength

    def penalty(self, model: nn.Module | None = None) -> torch.Tensor:
        """The loss term ``strength * sum |gamma|`` (of ``model``, by default the one given)."""
        gammas = _gammas(model if model is not None else self.model)
        return self.strength * sum(gamma.abs().sum() for gamma in gammas)

    def as_step(self) -> RegularizerStep:
        """The schedule step adding :meth:`penalty` to the loss."""
        return RegularizerStep(self.penalty)
