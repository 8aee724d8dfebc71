"""Sparsity schedules: how the target sparsity moves with the progress of a pruner's policy.

A schedule is a strategy any pruner accepts in place of a fixed sparsity, element-wise or
structured: ``progress`` is 0.0 on the first epoch the policy fires and 1.0 on its last (see
:class:`~torchslim.schedule.Policy`), and ``schedule(progress)`` is the sparsity to prune to then.

============================  ===================================================================
:class:`Constant`             the same sparsity throughout (one-shot pruning)
:class:`Linear`               from ``initial`` to ``final`` in a straight line
:class:`AGP`                  Automated Gradual Pruning (Zhu & Gupta 2017): fast at first, slow
                              at the end: ``final + (initial - final) * (1 - progress) ** 3``
============================  ===================================================================

Example::

    >>> from torchslim.pruning.schedules import AGP, Linear, as_schedule
    >>> [round(AGP(0.1, 0.8)(p), 3) for p in (0.0, 0.5, 1.0)]
    [0.1, 0.713, 0.8]
    >>> Linear(0.0, 0.5)(0.5), as_schedule(0.3)(0.7)
    (0.25, 0.3)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.errors import UserError


def check_sparsity(sparsity: float) -> float:
    """``sparsity`` as a float in [0, 1), or a UserError."""
    value = float(sparsity)
    if not 0.0 <= value < 1.0:
        raise UserError(f"sparsity must be in [0, 1) (a fraction), got {sparsity}")
    return value


class SparsitySchedule:
    """Base class: ``schedule(progress)`` is the target sparsity at ``progress`` in [0, 1]."""

    def __call__(self, progress: float) -> float:
        return self.target(min(max(float(progress), 0.0), 1.0))

    def target(self, progress: float) -> float:
        """The sparsity at ``progress`` (already clipped to [0, 1])."""
        raise NotImplementedError

    @property
    def final(self) -> float:
        """The sparsity reached at the end."""
        return self(1.0)


@dataclass(frozen=True)
class Constant(SparsitySchedule):
    """Always ``sparsity``."""

    sparsity: float

    def __post_init__(self) -> None:
        check_sparsity(self.sparsity)

    def target(self, progress: float) -> float:
        return self.sparsity


@dataclass(frozen=True)
class Polynomial(SparsitySchedule):
    """``final + (initial - final) * (1 - progress) ** exponent``."""

    initial: float
    final_sparsity: float
    exponent: float = 3.0

    def __post_init__(self) -> None:
        check_sparsity(self.initial)
        check_sparsity(self.final_sparsity)
        if self.final_sparsity < self.initial:
            raise UserError(
                f"the final sparsity ({self.final_sparsity}) must be >= the initial one "
                f"({self.initial})"
            )
        if self.exponent <= 0:
            raise UserError(f"the schedule's exponent must be > 0, got {self.exponent}")

    def target(self, progress: float) -> float:
        span = self.initial - self.final_sparsity
        return self.final_sparsity + span * (1.0 - progress) ** self.exponent


class Linear(Polynomial):
    """From ``initial`` to ``final`` in a straight line."""

    def __init__(self, initial: float, final: float) -> None:
        super().__init__(initial, final, 1.0)


class AGP(Polynomial):
    """Automated Gradual Pruning's cubic schedule (Zhu & Gupta 2017)."""

    def __init__(self, initial: float, final: float) -> None:
        super().__init__(initial, final, 3.0)


class RandomLevel(SparsitySchedule):
    """A sparsity drawn uniformly from ``[low, high]`` each time it is asked (Distiller's
    ``RandomLevelStructureParameterPruner``, a DropFilter-like regularizer); seeded.

    >>> level = RandomLevel(0.1, 0.2, seed=0)
    >>> all(0.1 <= level(0.5) <= 0.2 for _ in range(5)), level.final
    (True, 0.2)
    """

    def __init__(self, low: float, high: float, seed: int = 0) -> None:
        check_sparsity(low)
        check_sparsity(high)
        if high < low:
            raise UserError(f"the sparsity range [{low}, {high}] must not be empty")
        self.low, self.high = float(low), float(high)
        self.seed = seed
        self.draws = 0

    def target(self, progress: float) -> float:
        # The n-th draw depends on (seed, n) only, so a resumed run draws what an
        # uninterrupted one would.
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.draws)
        self.draws += 1
        return self.low + (self.high - self.low) * float(torch.rand((), generator=generator))

    def state_dict(self) -> dict:
        return {"draws": self.draws}

    def load_state_dict(self, state: dict) -> None:
        self.draws = int(state.get("draws", 0))

    @property
    def final(self) -> float:
        return self.high


def as_schedule(sparsity: float | SparsitySchedule) -> SparsitySchedule:
    """A schedule from a number (constant) or a schedule (unchanged)."""
    if isinstance(sparsity, SparsitySchedule):
        return sparsity
    return Constant(check_sparsity(sparsity))
