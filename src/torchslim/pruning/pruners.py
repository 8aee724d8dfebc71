"""Element-wise pruners: methods bound to weight names, for a schedule or a one-shot call.

A pruner names the weights it acts on (exact names, globs or regular expressions, see
:mod:`torchslim.core.names`; ``'*'`` alone means every conv and linear weight) and sets their
masks in a :class:`~torchslim.pruning.Masks` object. ``prune(masks, progress)`` is all a
schedule calls; where a pruner takes a sparsity it also takes a
:mod:`~torchslim.pruning.schedules` strategy, evaluated at ``progress`` (0 at the first epoch of
the pruner's policy, 1 at its last). ``as_step()`` makes the schedule step that runs it.

Example::

    >>> import torch
    >>> from torchslim.pruning import AGPPruner, Masks, MagnitudePruner
    >>> from torchslim.pruning.schedules import Linear
    >>> model = torch.nn.Sequential(torch.nn.Linear(10, 10), torch.nn.Linear(10, 2))
    >>> masks = Masks(model)
    >>> agp = AGPPruner(["0.weight"], initial_sparsity=0.1, final_sparsity=0.8)
    >>> [round(agp.target(p), 3) for p in (0.0, 0.5, 1.0)]
    [0.1, 0.713, 0.8]
    >>> agp.prune(masks, progress=1.0)
    {'0.weight': 0.8}
    >>> MagnitudePruner(["1.weight"], Linear(0.0, 0.5)).prune(masks, progress=0.5)
    {'1.weight': 0.25}
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from ..core.errors import UserError
from ..core.names import resolve_patterns, resolve_values
from .masks import Masks
from .methods import (
    LevelMethod,
    RandomMethod,
    SensitivityMethod,
    ThresholdMethod,
    global_magnitude_masks,
)
from .schedules import AGP, SparsitySchedule, as_schedule


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
        self._resolved: tuple[int, list[str]] | None = None

    def resolve(self, model: nn.Module, masks: Masks | None = None) -> list[str]:
        """The parameter names of ``model`` this pruner acts on (a UserError if one matches
        nothing), looked up again each time (a step may have removed blocks or factorized
        layers). Where a step wrapped the layers since (quantization renames
        ``conv.weight`` to ``conv.layer.weight``), the names are those of ``masks``, which
        finds the parameters by the names they had when scheduled."""
        try:
            names = resolve_patterns(model, self.weights)
        except UserError:
            if self._resolved is None or self._resolved[0] != id(model):
                raise
            names = list(self._resolved[1])  # exact names that a wrapping step renamed
        if masks is not None:
            names = list(dict.fromkeys(masks.scheduled_name(n) for n in names))
        self._resolved = (id(model), names)
        return names

    def prune(self, masks: Masks, progress: float = 1.0) -> dict[str, float]:
        """Set the masks of this pruner's weights; return each one's sparsity."""
        raise NotImplementedError

    def as_step(self, steps_per_epoch: int = 1):
        """The schedule step that runs this pruner (see :class:`~torchslim.pruning.PruneStep`)."""
        from .steps import PruneStep

        return PruneStep(self, steps_per_epoch=steps_per_epoch)

    def _set_each(self, masks: Masks, method_for: Callable[[str], object]) -> dict[str, float]:
        done = {}
        for name in self.resolve(masks.model, masks):
            _keep_pruned(masks, name, method_for(name).compute_mask(_current(masks, name)))
            done[name] = round(masks.sparsity(name), 6)
        return done


def _keep_pruned(masks: Masks, name: str, mask: torch.Tensor) -> None:
    """Set ``mask``, keeping what another pruner of the schedule removed (structured pruning
    zeroes a consumer's input slices; a magnitude pruner on that layer must not bring them
    back, or thinning could no longer remove the channels)."""
    if name in masks:
        mask = mask.to(torch.bool) & masks[name]
    masks.set(name, mask)


class MagnitudePruner(Pruner):
    """Prune the smallest magnitudes to ``sparsity`` (a number or a schedule), per tensor
    (``scope="layer"``) or ranking all the weights together (``scope="global"``)."""

    def __init__(
        self,
        weights: Sequence[str],
        sparsity: float | SparsitySchedule,
        scope: str = "layer",
    ) -> None:
        super().__init__(weights)
        self.schedule = as_schedule(sparsity)
        if scope not in ("layer", "global"):
            raise UserError(f"scope must be 'layer' or 'global', got {scope!r}")
        self.scope = scope

    def target(self, progress: float) -> float:
        """The sparsity at ``progress`` (0 = first policy epoch, 1 = last)."""
        return self.schedule(progress)

    def prune(self, masks: Masks, progress: float = 1.0) -> dict[str, float]:
        sparsity = self.target(progress)
        if self.scope == "global":
            return _prune_globally(masks, self.resolve(masks.model, masks), sparsity)
        return self._set_each(masks, lambda name: LevelMethod(sparsity))


class AGPPruner(MagnitudePruner):
    """Automated Gradual Pruning (Zhu & Gupta 2017; Distiller's ``AutomatedGradualPruner``): a
    :class:`MagnitudePruner` on the :class:`~torchslim.pruning.schedules.AGP` schedule, whose
    sparsity rises from ``initial_sparsity`` at progress 0 to ``final_sparsity`` at progress 1
    as ``s_f + (s_i - s_f) * (1 - progress) ** 3``."""

    def __init__(
        self,
        weights: Sequence[str],
        initial_sparsity: float,
        final_sparsity: float,
        scope: str = "layer",
    ) -> None:
        super().__init__(weights, AGP(initial_sparsity, final_sparsity), scope)
        self.initial_sparsity, self.final_sparsity = initial_sparsity, final_sparsity


class GlobalMagnitudePruner(MagnitudePruner):
    """Prune the ``sparsity`` fraction of smallest magnitudes over all the weights together."""

    def __init__(self, weights: Sequence[str], sparsity: float | SparsitySchedule) -> None:
        super().__init__(weights, sparsity, scope="global")

    @property
    def sparsity(self) -> float:
        return self.schedule.final


class LevelPruner(Pruner):
    """Prune each weight to its own level: ``LevelPruner({"conv*.weight": 0.5})`` (Distiller's
    ``SparsityLevelParameterPruner`` / ``LevelParameterPruner``); a level may be a schedule."""

    def __init__(self, levels: Mapping[str, float | SparsitySchedule]) -> None:
        super().__init__(list(levels))
        self.levels = {k: as_schedule(v) for k, v in levels.items()}

    def prune(self, masks: Masks, progress: float = 1.0) -> dict[str, float]:
        levels = resolve_values(masks.model, self.levels)
        return self._set_each(masks, lambda name: LevelMethod(levels[name](progress)))


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
    """Prune a random ``sparsity`` fraction (a number or a schedule) of each weight (a
    baseline), seeded."""

    def __init__(
        self, weights: Sequence[str], sparsity: float | SparsitySchedule, seed: int = 0
    ) -> None:
        super().__init__(weights)
        self.schedule = as_schedule(sparsity)
        self.seed = seed

    @property
    def sparsity(self) -> float:
        return self.schedule.final

    def prune(self, masks: Masks, progress: float = 1.0) -> dict[str, float]:
        generator = torch.Generator().manual_seed(self.seed)
        level = self.schedule(progress)
        return self._set_each(masks, lambda name: RandomMethod(level, generator))


def _prune_globally(masks: Masks, names: list[str], sparsity: float) -> dict[str, float]:
    new = global_magnitude_masks({n: _current(masks, n) for n in names}, sparsity)
    for name, mask in new.items():
        _keep_pruned(masks, name, mask)
    return {name: round(masks.sparsity(name), 6) for name in names}
