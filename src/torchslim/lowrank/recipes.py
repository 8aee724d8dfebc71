"""The recipe class of the low-rank package (section ``extensions``, policy kind
``extension``): ``Factorization`` (alias ``LowRankFactorization``), acting once on its policy's
first epoch.

==================  =============================================================================
``method``          ``svd`` (default), ``tucker2``, ``depthwise_separable`` or ``group``
``rank``            one rank for every layer (for ``tucker2`` also ``[r_in, r_out]``; for
                    ``group``, the number of groups)
``energy``          or: the fraction of each weight's energy to keep
``ratio``           or: each layer's factorized weights at most this fraction of its own
``layers``          names or patterns (default: every layer the method applies to)
``exclude``         names or patterns left as they are
``reinitialize``    fresh random weights for the new layers (a student trained from scratch)
==================  =============================================================================

Example::

    >>> from torchslim.core.config import find_recipe_class
    >>> import torchslim.lowrank.recipes
    >>> spec = find_recipe_class("extensions", "LowRankFactorization")
    >>> step = spec.build(spec.args(method="tucker2", ratio=0.5, exclude=["conv1"]), None)
    >>> step.method, step.options["ratio"]
    ('tucker2', 0.5)
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from ..core.config import Args, Number, register_recipe_class
from .factorize import METHODS
from .steps import FactorizationStep

Rank = Annotated[int, Field(ge=1)]


class FactorizationArgs(Args):
    method: Literal[METHODS] = "svd"  # type: ignore[valid-type]
    rank: Rank | tuple[Rank, Rank] | None = None
    energy: Annotated[Number, Field(gt=0.0, le=1.0)] | None = None
    ratio: Annotated[Number, Field(gt=0.0, lt=1.0)] | None = None
    layers: list[str] | None = None
    exclude: list[str] = []
    reinitialize: bool = False

    @model_validator(mode="before")
    @classmethod
    def _lists(cls, data):
        if isinstance(data, dict) and isinstance(data.get("rank"), list):
            data = {**data, "rank": tuple(data["rank"])}
        return data

    @model_validator(mode="after")
    def _one_target(self):
        given = [k for k in ("rank", "energy", "ratio") if getattr(self, k) is not None]
        if self.method in ("svd", "tucker2") and len(given) != 1:
            raise ValueError(f"'{self.method}' needs exactly one of rank, energy or ratio; "
                             f"given: {', '.join(given) or 'none'}")
        if self.method == "group" and not isinstance(self.rank, int):
            raise ValueError("'group' needs the number of groups as rank")
        if isinstance(self.rank, tuple) and self.method != "tucker2":
            raise ValueError("a pair of ranks [r_in, r_out] is for 'tucker2' only")
        return self


def _build(a: FactorizationArgs, model) -> FactorizationStep:
    return FactorizationStep(a.method, rank=a.rank, energy=a.energy, ratio=a.ratio,
                             layers=a.layers, exclude=a.exclude, reinitialize=a.reinitialize)


register_recipe_class("extensions", ["Factorization", "LowRankFactorization"],
                      FactorizationArgs, _build)
