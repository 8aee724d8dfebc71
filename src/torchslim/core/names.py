"""Resolve the weight names a recipe gives: exact names, globs or regular expressions.

A name is tried in this order: as an exact parameter name; as a glob when it holds ``*``, ``?``
or ``[`` (``*`` also matches dots); as a regular expression that must match the whole name.
A ``module.`` prefix (from models saved under DataParallel, as in Distiller's schedules; also
inside a name, ``features.module.0.weight``) is ignored when the model's own names lack it.

Example::

    >>> import torch.nn as nn
    >>> from torchslim.core.names import match_parameters
    >>> model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 3))
    >>> match_parameters(model, ["*.weight"])
    ['0.weight', '2.weight']
    >>> match_parameters(model, [r"module\\.[0-9]\\.bias"])
    ['0.bias', '2.bias']
"""

from __future__ import annotations

import fnmatch
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import TypeVar

from torch import nn

from .errors import UserError, did_you_mean

_GLOB_CHARS = set("*?[")
V = TypeVar("V")
_PREFIX = "module."


def _strip_prefix(pattern: str, names: Sequence[str]) -> str:
    """``pattern`` without the ``module.`` parts DataParallel adds (at the start, or inside:
    Distiller wraps only VGG's ``features`` in it, giving ``features.module.0.weight``), when the
    model's own names have none."""
    if any(n.startswith(_PREFIX) or f".{_PREFIX}" in n for n in names):
        return pattern
    for prefix in (_PREFIX, re.escape(_PREFIX)):
        if pattern.startswith(prefix):
            pattern = pattern[len(prefix):]
        pattern = pattern.replace("." + prefix, ".")
    return pattern


def match_names(pattern: str, names: Sequence[str]) -> list[str]:
    """The entries of ``names`` that ``pattern`` selects (exact, glob, then regex), in order."""
    pattern = _strip_prefix(pattern, names)
    if pattern in names:
        return [pattern]
    if _GLOB_CHARS & set(pattern):
        hits = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        if hits:
            return hits
    try:
        with warnings.catch_warnings():  # "possible nested set" for patterns such as '[['
            warnings.simplefilter("ignore", FutureWarning)
            regex = re.compile(pattern)
    except (re.error, OverflowError, RecursionError):
        return []
    return [n for n in names if regex.fullmatch(n)]


def select_names(patterns: Iterable[str], names: Sequence[str], what: str,
                 hint: str = "") -> set[str]:
    """The entries of ``names`` that any of ``patterns`` selects (:func:`match_names`); for the
    first pattern that selects nothing, a UserError: ``what`` (with ``{pattern}`` filled in),
    the closest names, then ``hint``.

    >>> sorted(select_names(["layer1.*"], ["layer1.0", "layer1.1", "layer2.0"], "'{pattern}'"))
    ['layer1.0', 'layer1.1']
    """
    chosen: set[str] = set()
    for pattern in patterns:
        hits = match_names(pattern, names)
        if not hits:
            raise UserError(f"{what.format(pattern=pattern)}{did_you_mean(pattern, names)}{hint}")
        chosen.update(hits)
    return chosen


def match_parameters(model: nn.Module, patterns: Iterable[str]) -> list[str]:
    """Parameter names of ``model`` selected by any of ``patterns``, in the model's order.

    Raises :class:`UserError` naming the first pattern that selects nothing, with the closest
    parameter names.
    """
    names = [name for name, _ in model.named_parameters()]
    selected: set[str] = set()
    for pattern in patterns:
        hits = match_names(pattern, names)
        if not hits:
            raise UserError(
                f"weight name '{pattern}' matches no parameter of the model"
                f"{_suggest(model, _strip_prefix(pattern, names), names)}; names may be exact, "
                "globs (layer*.conv*.weight) or regular expressions"
            )
        selected.update(hits)
    return [name for name in names if name in selected]


#: Layer names that mean "the classifier" in other model zoos (Distiller's ``fc``, ...).
_HEADS = re.compile(r"(^|\.)(fc|classifier|linear|head|last_linear|logits)\d*$")


def _suggest(model: nn.Module, pattern: str, names: list[str]) -> str:
    """" (did you mean ...)": a classifier's parameter for another zoo's classifier name
    (``fc.weight`` on a model whose head is ``linear``), then the closest names."""
    layer, _, kind = pattern.rpartition(".")
    first = []
    if _HEADS.search(layer):
        heads = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n]
        if heads:
            head = f"{heads[-1]}.{kind}"
            first = [head] if head in names else []
    hint = did_you_mean(pattern, [n for n in names if n not in first])
    if not first:
        return hint
    others = hint[len(" (did you mean "):-len("?)")] if hint else ""
    shown = ", ".join([repr(first[0]), *([others] if others else [])])
    return f" (did you mean {shown}?)"


def _resolve(model: nn.Module, pattern: str) -> list[str]:
    if pattern == "*":
        return [n for n, p in model.named_parameters() if p.dim() > 1]
    return match_parameters(model, [pattern])


def resolve_patterns(model: nn.Module, patterns: Iterable[str]) -> list[str]:
    """The parameter names ``patterns`` select, in pattern order, each once. The pattern
    ``'*'`` alone stands for every weight with two or more dimensions (conv and linear weights,
    not biases or BatchNorm), as Distiller's default entry does.

    >>> import torch.nn as nn
    >>> resolve_patterns(nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)), ["*"])
    ['0.weight']
    """
    names: list[str] = []
    for pattern in patterns:
        names += [n for n in _resolve(model, pattern) if n not in names]
    return names


def resolve_values(model: nn.Module, values: Mapping[str, V]) -> dict[str, V]:
    """Per-parameter values from ``{pattern: value}``; an exact or later pattern wins over
    ``'*'``.

    >>> import torch.nn as nn
    >>> resolve_values(nn.Linear(2, 2), {"*": 0.5, "weight": 0.9})
    {'weight': 0.9}
    """
    resolved: dict[str, V] = {}
    for pattern in sorted(values, key=lambda p: p != "*"):
        for name in _resolve(model, pattern):
            resolved[name] = values[pattern]
    return resolved
