"""The one exception type for mistakes a user can fix.

Anything raised as :class:`UserError` reaches the command line as one line on stderr and exit
code 2; every other exception is a bug in torchslim and keeps its traceback.

Example::

    >>> from torchslim.core.errors import UserError
    >>> try:
    ...     raise UserError("weights file 'x.th' not found: check the path given to --weights")
    ... except UserError as err:
    ...     print(err)
    weights file 'x.th' not found: check the path given to --weights
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """A mistake in the user's input (path, name, value); the message says how to fix it."""


def closest(name: str, known: Iterable[str], n: int = 3) -> list[str]:
    """Up to ``n`` names from ``known`` that look like ``name`` (for "did you mean" hints)."""
    return difflib.get_close_matches(name, list(known), n=n, cutoff=0.5)


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """A " (did you mean 'a', 'b'?)" suffix, or "" when nothing is close."""
    hits = closest(name, known)
    return f" (did you mean {', '.join(repr(h) for h in hits)}?)" if hits else ""
