"""Resolve the weight names a recipe gives: exact names, globs or regular expressions.

A name is tried in this order: as an exact parameter name; as a glob when it holds ``*``, ``?``
or ``[`` (``*`` also matches dots); as a regular expression that must match the whole name.
A ``module.`` prefix (from models saved under DataParallel, as in Distiller's schedules) is
ignored when the model's own names lack it.

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
from collections.abc import Iterable, Sequence

from torch import nn

from .errors import UserError, did_you_mean

_GLOB_CHARS = set("*?[")
_PREFIX = "module."


def _strip_prefix(pattern: str, names: Sequence[str]) -> str:
    has_prefix = any(n.startswith(_PREFIX) for n in names)
    if pattern.startswith(_PREFIX) and not has_prefix:
        return pattern[len(_PREFIX):]
    if pattern.startswith(re.escape(_PREFIX)) and not has_prefix:
        return pattern[len(re.escape(_PREFIX)):]
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
                f"{did_you_mean(_strip_prefix(pattern, names), names)}; names may be exact, "
                "globs (layer*.conv*.weight) or regular expressions"
            )
        selected.update(hits)
    return [name for name in names if name in selected]
