"""Recipe classes as data: the argument models a method package declares and the registry it
adds them to (torchao's "config is data, the transform is registered code").

A method package registers each YAML class next to the code that implements it, for example
in ``torchslim/pruning/recipes.py``::

    register_recipe_class("pruners", ["AutomatedGradualPruner", "AGPPruner"], AGPArgs, build_agp)

The argument model is a strict pydantic model (:class:`Args`): unknown keys, wrong types and
out-of-range values become precise recipe errors. ``build(args, model)`` turns validated
arguments into the object a schedule runs. :mod:`torchslim.recipe` reads the registry; it never
imports a method package, and adding a method touches only that method's package.

Example::

    >>> from torchslim.core.config import (RECIPE_CLASSES, Args, Sparsity, find_recipe_class,
    ...                                    register_recipe_class)
    >>> class HalveArgs(Args):
    ...     sparsity: Sparsity = 0.5
    >>> _ = register_recipe_class("pruners", ["HalvePruner"], HalveArgs, lambda a, m: a.sparsity)
    >>> spec = find_recipe_class("pruners", "HalvePruner")
    >>> spec.build(spec.args(sparsity=0.25), None)
    0.25
    >>> RECIPE_CLASSES["pruners"].unregister("HalvePruner")
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from .registry import Registry

#: The sections of a recipe that hold named instances of registered classes.
SECTIONS = ("pruners", "quantizers", "regularizers", "distillers", "extensions")


def _usable_pattern(pattern: str) -> str:
    """Reject weight patterns that would crash the regular-expression engine (not just fail)."""
    try:
        re.compile(pattern)
    except re.error:
        pass  # not a regex: still fine as an exact name or a glob
    except (OverflowError, RecursionError) as err:
        raise ValueError(f"not a usable weight name or pattern: {err}") from None
    return pattern


def yaml_float(value: Any) -> Any:
    """YAML 1.1 reads ``1e-3`` (no dot) as text: take such text as the number it means."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def list_to_tuple(value: Any) -> Any:
    """YAML has lists, not tuples: let a list validate as a fixed-length tuple."""
    return tuple(value) if isinstance(value, list) else value


#: A finite number; in strict models (see :class:`Args`) a boolean is not one.
Number = Annotated[float, BeforeValidator(yaml_float), Field(allow_inf_nan=False)]
Sparsity = Annotated[Number, Field(ge=0.0, lt=1.0)]
NonNegative = Annotated[Number, Field(ge=0.0)]
WeightName = Annotated[str, AfterValidator(_usable_pattern)]
def one_or_many(value: Any) -> Any:
    """Distiller's files sometimes give ``weights:`` one name instead of a list: take it as one."""
    return [value] if isinstance(value, str) else value


WeightList = Annotated[list[WeightName], BeforeValidator(one_or_many), Field(min_length=1)]
Seed = Annotated[int, Field(ge=0, lt=2**63)]


class Args(BaseModel):
    """Arguments of a recipe class: unknown keys are errors, and values are not coerced (a
    boolean is not a number, a number not a name)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    #: Fields whose values (lists) or keys (mappings) are weight-name patterns; the recipe
    #: checks each against the model before anything runs.
    weight_fields: ClassVar[tuple[str, ...]] = ()


class NoArgs(Args):
    """A class that takes no arguments of its own."""


@dataclass(frozen=True)
class ClassSpec:
    """One class a recipe section may name: its arguments and how to build it.

    ``unsupported`` (a reason) marks a known name whose algorithm is not built yet: a recipe
    naming it is rejected with that reason rather than silently ignored. ``ignored_keys`` are
    accepted for compatibility (e.g. Distiller's) and ignored with a note.
    """

    name: str
    section: str
    args: type[BaseModel] | None = None
    build: Callable[[Any, Any], Any] | None = None
    unsupported: str = ""
    ignored_keys: tuple[str, ...] = ()


RECIPE_CLASSES: dict[str, Registry[ClassSpec]] = {
    section: Registry(f"{section[:-1]} class", discover=True) for section in SECTIONS
}


def _section(section: str) -> Registry[ClassSpec]:
    if section not in RECIPE_CLASSES:
        raise ValueError(f"unknown recipe section '{section}': one of {', '.join(SECTIONS)}")
    return RECIPE_CLASSES[section]


def register_recipe_class(
    section: str,
    names: Sequence[str],
    args: type[BaseModel],
    build: Callable[[Any, Any], Any],
    *,
    ignored_keys: Sequence[str] = (),
) -> list[ClassSpec]:
    """Make ``names`` (aliases of one class, e.g. Distiller's name and torchslim's) valid in
    ``section``: arguments validated by ``args``, built by ``build(args, model)``. A name known
    only as not yet supported is replaced."""
    registry, specs = _section(section), []
    for name in names:
        spec = ClassSpec(name, section, args, build, ignored_keys=tuple(ignored_keys))
        known = registry._entries.get(name)
        registry.register(name, spec, replace=known is not None and bool(known.unsupported))
        specs.append(spec)
    return specs


def register_unsupported(section: str, names: Sequence[str], reason: str) -> None:
    """Names a recipe may use that torchslim does not implement yet: rejected with ``reason``.
    A real registration of the same name (in any import order) takes precedence."""
    registry = _section(section)
    for name in names:
        if name not in registry._entries:
            registry.register(name, ClassSpec(name, section, unsupported=reason))


def find_recipe_class(section: str, name: str) -> ClassSpec | None:
    """The :class:`ClassSpec` of ``name`` in ``section`` (None when unknown)."""
    return _section(section).find(name)


def recipe_class_names(section: str) -> list[str]:
    """Every class name registered in ``section``."""
    return _section(section).names()
