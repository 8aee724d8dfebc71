"""Sparsity-inducing loss terms; in a schedule, ``as_step()`` adds them before the backward pass.

:class:`GroupLassoRegularizer` is structured sparsity learning (Wen et al. 2016, Distiller's
SSL examples): ``strength * sum_g ||w_g||_2`` over groups of each weight (``2D`` kernels,
``3D``/``Filters``, ``Channels``, ``4D`` whole layers, ``Rows``/``Cols`` of a matrix, and the
combinations ``Rows+Cols``, ``Channels+4D``). With ``threshold_criteria`` (``Mean_Abs`` or
``Max``) each firing epoch ends by zeroing, through the pruning masks, the groups whose mean
absolute (or largest) value is at or below the strength, so thinning can remove them.
:class:`GroupVarianceRegularizer` (Torfi et al. 2018) pushes the input channels' L2 norms
apart: ``strength / var(norms)``.

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
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..core.errors import UserError
from ..core.names import resolve_values
from ..core.steps import Step, StepContext
from .masks import masks_of
from .steps import RegularizerStep

#: Distiller's group types for group lasso.
GROUPINGS = ("2D", "3D", "Filters", "4D", "Channels", "Rows", "Cols", "Rows+Cols", "Cols+Rows",
             "Channels+4D", "4D+Channels")
_EPSILON = 1e-8


def _groups(weight: torch.Tensor, grouping: str) -> torch.Tensor:
    """``weight`` as a matrix with one group per row."""
    if grouping in ("3D", "Filters") and weight.dim() == 3:
        return weight.reshape(weight.shape[0], -1)  # a Conv1d's filters
    if grouping in ("2D", "3D", "Filters", "Channels") and weight.dim() != 4:
        if grouping == "Channels" and weight.dim() == 2:
            return weight.t()  # a Linear's input columns (an extension of Distiller's)
        raise UserError(f"'{grouping}' groups need a 4-D (convolution) weight, got "
                        f"{weight.dim()}-D")
    if grouping in ("Rows", "Cols") and weight.dim() != 2:
        raise UserError(f"'{grouping}' groups need a 2-D (Linear) weight, got {weight.dim()}-D")
    if grouping == "2D":
        return weight.reshape(-1, weight.shape[2] * weight.shape[3])
    if grouping in ("3D", "Filters", "Rows"):
        return weight.reshape(weight.shape[0], -1)
    if grouping == "Channels":
        return weight.transpose(0, 1).reshape(weight.shape[1], -1)
    if grouping == "Cols":
        return weight.t()
    if grouping == "4D":
        return weight.reshape(1, -1)
    raise UserError(f"unknown group type '{grouping}': one of {', '.join(GROUPINGS)}")


def _expand(weight: torch.Tensor, grouping: str, keep: torch.Tensor) -> torch.Tensor:
    """A mask of ``weight``'s shape from one keep flag per group of ``_groups``."""
    if grouping == "2D":
        return keep.view(weight.shape[0], weight.shape[1], 1, 1).expand_as(weight)
    if grouping in ("3D", "Filters", "Rows"):
        return keep.view(-1, *([1] * (weight.dim() - 1))).expand_as(weight)
    if grouping in ("Channels", "Cols"):
        return keep.view(1, -1, *([1] * (weight.dim() - 2))).expand_as(weight)
    return keep.view(*([1] * weight.dim())).expand_as(weight)


def threshold_groups(weights, masks, criterion: str) -> dict[str, int]:
    """Zero, through ``masks``, every group of each ``(name, weight, threshold, group type)``
    whose mean absolute value (``criterion="Mean_Abs"``) or largest magnitude (``"Max"``) is at
    or below its threshold; return how many groups of each weight are zero."""
    zeroed = {}
    for name, weight, threshold, grouping in weights:
        part = grouping.split("+")[0]
        if part == "4D":
            continue
        groups = _groups(weight.detach(), part).abs()
        values = groups.mean(1) if criterion == "Mean_Abs" else groups.amax(1)
        keep = (values > threshold).to(weight.dtype)
        mask = _expand(weight, part, keep)
        if name in masks:
            mask = mask * masks[name]
        masks.set(name, mask.contiguous())
        zeroed[name] = int((keep == 0).sum())
    return zeroed


class StructureThresholdStep(Step):
    """Distiller's ``StructureParameterPruner``: on each firing epoch, zero the groups of the
    weights ``regimes`` names (``{pattern: (threshold, group type)}``, Distiller's ``reg_regims``)
    whose mean absolute value or largest magnitude (``threshold_criteria``) is at or below the
    threshold. Like Distiller's, it zeroes those weights only. Thinning then removes input
    channels zeroed in their readers, with the filters producing them (nothing reads them);
    a filter zeroed alone keeps its BatchNorm shift, which the next layer still reads, so
    thinning keeps it where Distiller's thinner drops the shift."""

    kind = "pruner"

    def __init__(self, regimes: Mapping[str, tuple[float, str]],
                 threshold_criteria: str = "Mean_Abs") -> None:
        for pattern, (threshold, grouping) in regimes.items():
            if threshold < 0:
                raise UserError(f"the threshold of '{pattern}' must be >= 0, got {threshold}")
            if grouping not in ("2D", "3D", "Filters", "Channels", "Rows", "Cols"):
                raise UserError(f"group type '{grouping}' of '{pattern}': one of 2D, 3D, "
                                "Filters, Channels, Rows, Cols")
        if threshold_criteria not in ("Mean_Abs", "Max"):
            raise UserError(f"threshold_criteria must be Mean_Abs or Max, got "
                            f"{threshold_criteria!r}")
        self.regimes = dict(regimes)
        self.criterion = threshold_criteria

    def attach(self, ctx: StepContext) -> None:
        masks_of(ctx)

    #: on_epoch_begin leaves what it does in the model, masks, edits or state_dict
    resumes_mid_epoch = True

    def on_epoch_begin(self, ctx: StepContext) -> dict[str, Any]:
        params = dict(ctx.model.named_parameters())
        weights = [(name, params[name], threshold, grouping)
                   for pattern, (threshold, grouping) in self.regimes.items()
                   for name in resolve_values(ctx.model, {pattern: 0.0})]
        return {"zero_groups": threshold_groups(weights, masks_of(ctx), self.criterion)}


class GroupLassoRegularizer:
    """Group lasso over the weights ``regimes`` names: ``{pattern: (strength, group type)}``
    (Distiller's ``reg_regims``); see the module docstring."""

    def __init__(self, regimes: Mapping[str, tuple[float, str]],
                 threshold_criteria: str | None = None) -> None:
        for pattern, (strength, grouping) in regimes.items():
            if strength < 0:
                raise UserError(f"the group-lasso strength of '{pattern}' must be >= 0")
            for part in grouping.split("+"):
                if part not in GROUPINGS:
                    raise UserError(f"unknown group type '{grouping}' for '{pattern}': one of "
                                    f"{', '.join(GROUPINGS)}")
        if threshold_criteria not in (None, "Mean_Abs", "Max"):
            raise UserError(f"threshold_criteria must be Mean_Abs or Max, got "
                            f"{threshold_criteria!r}")
        self.regimes = dict(regimes)
        self.threshold_criteria = threshold_criteria

    def _resolved(self, model: nn.Module) -> list[tuple[str, nn.Parameter, float, str]]:
        params = dict(model.named_parameters())
        out = []
        for pattern, (strength, grouping) in self.regimes.items():
            for name in resolve_values(model, {pattern: 0.0}):
                out.append((name, params[name], strength, grouping))
        return out

    def penalty(self, model: nn.Module) -> torch.Tensor:
        """``sum strength * sum_g ||w_g||_2`` over every weight and group type."""
        terms = []
        for _, weight, strength, grouping in self._resolved(model):
            for part in grouping.split("+"):
                groups = _groups(weight, part)
                norms = groups.pow(2).sum(1).add(_EPSILON).sqrt()
                terms.append(strength * norms.sum())
        return torch.stack(terms).sum()

    def threshold(self, model: nn.Module, masks) -> dict[str, int]:
        """Zero, through ``masks``, the groups at or below their strength by the criterion;
        return how many groups of each weight are zero."""
        return threshold_groups(self._resolved(model), masks, self.threshold_criteria)

    def as_step(self) -> RegularizerStep:
        """The schedule step adding :meth:`penalty` to the loss (and thresholding at the end
        of each firing epoch when ``threshold_criteria`` is set)."""
        return _GroupLassoStep(self)


class _GroupLassoStep(RegularizerStep):
    def __init__(self, regularizer: GroupLassoRegularizer) -> None:
        super().__init__(regularizer.penalty)
        self.regularizer = regularizer

    def attach(self, ctx):
        if self.regularizer.threshold_criteria is not None:
            masks_of(ctx)

    def on_epoch_end(self, ctx):
        if self.regularizer.threshold_criteria is None:
            return None
        return {"zero_groups": self.regularizer.threshold(ctx.model, masks_of(ctx))}


class GroupVarianceRegularizer:
    """``strength / var(input-channel L2 norms)`` per weight (``Channels`` groups only; Torfi
    et al. 2018): it drives some channels to zero and keeps others."""

    def __init__(self, regimes: Mapping[str, tuple[float, str]]) -> None:
        for pattern, (_, grouping) in regimes.items():
            if grouping != "Channels":
                raise UserError(f"group variance works on 'Channels' groups, got '{grouping}' "
                                f"for '{pattern}'")
        self.lasso = GroupLassoRegularizer(regimes)

    def penalty(self, model: nn.Module) -> torch.Tensor:
        terms = []
        for _, weight, strength, grouping in self.lasso._resolved(model):
            norms = _groups(weight, grouping).pow(2).sum(1).add(_EPSILON).sqrt()
            terms.append(strength / norms.var())
        return torch.stack(terms).sum()

    def as_step(self) -> RegularizerStep:
        return RegularizerStep(self.penalty)


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
