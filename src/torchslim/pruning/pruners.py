"""Pruners: element-wise methods bound to weight names, ready for a schedule or a one-shot call.

A pruner names the weights it acts on (exact names, globs or regular expressions, see
:mod:`torchslim.core.names`) and sets their masks in a :class:`~torchslim.pruning.Masks`
object. ``prune(masks, progress)`` is all a schedule calls: ``progress`` runs from 0 at the
first epoch of the pruner's policy to 1 at its last, which only the gradual pruner uses.
The pattern ``'*'`` stands for every weight tensor with two or more dimensions (conv and
linear weights, not biases or BatchNorm), as Distiller's default entry does.

Example::

    >>> import torch
    >>> from torchslim.pruning import AGPPruner, Masks
    >>> model = torch.nn.Sequential(torch.nn.Linear(10, 10), torch.nn.Linear(10, 2))
    >>> masks = Masks(model)
    >>> agp = AGPPruner(["0.weight"], initial_sparsity=0.1, final_sparsity=0.8)
    >>> [round(agp.target(p), 3) for p in (0.0, 0.5, 1.0)]
    [0.1, 0.713, 0.8]
    >>> agp.prune(masks, progress=1.0)
    {'0.weight': 0.8}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ..core.names import match_parameters
from .masks import Masks
from .methods import (
    LevelMethod,
    RandomMethod,
    SensitivityMethod,
    ThresholdMethod,
    check_sparsity,
    global_magnitude_masks,
)


def _resolve(model: nn.Module, pattern: str) -> list[str]:
    if pattern == "*":
        return [n for n, p in model.named_parameters() if p.dim() > 1]
    return match_parameters(model, [pattern])


def resolve_values(model: nn.Module, values: Mapping[str, float]) -> dict[str, float]:
    """Per-parameter values from ``{pattern: value}``; an exact or later pattern wins over
    ``'*'``."""
    resolved: dict[str, float] = {}
    for pattern in sorted(values, key=lambda p: p != "*"):
        for name in _resolve(model, pattern):
            resolved[name] = values[pattern]
    return resolved


def _current(masks: Masks, name: str) -> torch.Tensor:
    """The weight as the model sees it, with earlier pruning applied."""
    param = masks.parameter(name).detach()
    return param * masks[name] if name in masks else param


class Pruner:
    """Base class: ``weights`` are the name patterns this pruner acts on."""

    def __init__(self, weights: Sequence[str]) -> None:
        if isinstance(weights, str):
            weights = [weights]
        self.weights = list(weights)

    def resolve(self, model: nn.Module) -> list[str]:
        """The parameter names of ``model`` this pruner acts on (a UserError if one matches
        nothing)."""
        names: list[str] = []
        for pattern in self.weights:
            names += [n for n in _resolve(model, pattern) if n not in names]
        return names

    def prune(self, masks: Masks, progress: float = 1.0) -> dict[str, float]:
        """Set the masks of this pruner's weights; return each one's sparsity."""
        raise NotImplementedError

    def _set_each(self, masks: Masks, method_for) -> dict[str, float]:
        done = {}
        for name in self.resolve(masks.model):
            masks.set(name, method_for(name).compute_mask(_current(masks, name)))
            done[name] = round(masks.sparsity(name), 6)
        return done


class LevelPruner(Pruner):
    """Prune each weight to its own sparsity level: ``LevelPruner({"conv*.weight": 0.5})``
    (Distiller's ``SparsityLevelParameterPruner`` / ``LevelParameterPruner``)."""

    def __init__(self, levels: Mapping[str, float]) -> None:
        super().__init__(list(levels))
        self.levels = {k: check_sparsity(v) for k, v in levels.items()}

    def prune(self, masks: Masks, progress: float = 1.0) -> dict[str, float]:
        levels = resolve_values(masks.model, self.levels)
        return self._set_each(masks, lambda name: LevelMethod(levels[name]))


class ThresholdPruner(Pruner):
    """Prune weights with ``|w| <= threshold`` per tensor (Distiller's
    ``MagnitudeParameterPruner``)."""

    def __init__(self, thresholds: Mapping[str, float]) -> None:
        super().__init__(list(thresholds))
        self.thresholds = dict(thresholds)

    def prune(self, masks: Masks, progress: float = 1.0) -> dict[str, float]:
        values = resolve_values(masks.model, self.thresholds)
        return self._set_each(masks, lambda name: ThresholdMethod(values[name]))


class SensitivityPruner(Pruner):
    """Prune weights below ``s * std(w)`` per tensor (Distiller's ``SensitivityPruner``)."""

    def __init__(self, sensitivities: Mapping[str, float]) -> None:
        super().__init__(list(sensitivities))
        self.sensitivities = dict(sensitivities)

    def prune(self, masks: Masks, progress: float = 1.0) -> dict[str, float]:
        values = resolve_values(masks.model, self.sensitivities)
        return self._set_each(masks, lambda name: SensitivityMethod(values[name]))


class RandomPruner(Pruner):
    """Prune a random ``sparsity`` fraction of each weight (a baseline), seeded."""

    def __init__(self, weights: Sequence[str], sparsity: float, seed: int = 0) -> None:
        super().__init__(weights)
        self.sparsity = check_sparsity(sparsity)
        self.seed = seed

    def prune(self, masks: Masks, progress: float = 1.0) -> dict[str, float]:
        generator = torch.Generator().manual_seed(self.seed)
        return self._set_each(masks, lambda name: RandomMethod(self.sparsity, generator))


class GlobalMagnitudePruner(Pruner):
    """Prune the ``sparsity`` fraction of smallest magnitudes over all the weights together."""

    def __init__(self, weights: Sequence[str], sparsity: float) -> None:
        super().__init__(weights)
        self.sparsity = check_sparsity(sparsity)

    def prune(self, masks: Masks, progress: float = 1.0) -> dict[str, float]:
        return _prune_globally(masks, self.resolve(masks.model), self.sparsity)


def _prune_globally(masks: Masks, names: list[str], sparsity: float) -> dict[str, float]:
    new = global_magnitude_masks({n: _current(masks, n) for n in names}, sparsity)
    for name, mask in new.items():
        masks.set(name, mask)
    return {name: round(masks.sparsity(name), 6) for name in names}


class AGPPruner(Pruner):
    """Automated Gradual Pruning (Zhu & Gupta 2017; Distiller's ``AutomatedGradualPruner``).

    The target sparsity rises from ``initial_sparsity`` at progress 0 to ``final_sparsity`` at
    progress 1 as ``s_f + (s_i - s_f) * (1 - progress) ** 3``; each call prunes by magnitude to
    the target, per tensor (``scope="layer"``) or ranking all the weights together
    (``scope="global"``).
    """

    def __init__(
        self,
        weights: Sequence[str],
        initial_sparsity: float,
        final_sparsity: float,
        scope: str = "layer",
    ) -> None:
        super().__init__(weights)
        self.initial_sparsity = check_sparsity(initial_sparsity)
        self.final_sparsity = check_sparsity(final_sparsity)
        if self.final_sparsity < self.initial_sparsity:
            raise ValueError(
                f"final_sparsity ({final_sparsity}) must be >= initial_sparsity "
                f"({initial_sparsity})"
            )
        if scope not in ("layer", "global"):
            raise ValueError(f"scope must be 'layer' or 'global', got {scope!r}")
        self.scope = scope

    def target(self, progress: float) -> float:
        """The sparsity at ``progress`` (0 = first policy epoch, 1 = last)."""
        progress = min(max(progress, 0.0), 1.0)
        span = self.initial_sparsity - self.final_sparsity
        return self.final_sparsity + span * (1.0 - progress) ** 3

    def prune(self, masks: Masks, progress: float = 1.0) -> dict[str, float]:
        sparsity = self.target(progress)
        if self.scope == "global":
            return _prune_globally(masks, self.resolve(masks.model), sparsity)
        return self._set_each(masks, lambda name: LevelMethod(sparsity))
