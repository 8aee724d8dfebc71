"""Named registries: the plug-in points method packages fill in, and how they are found.

A :class:`Registry` maps names to entries (recipe classes, model-edit kinds, graph handlers);
looking up a name it does not hold is a :class:`~torchslim.core.errors.UserError` that lists
close names. Method packages register their entries when they are imported. So that a lookup
from a lower layer (loading a thinned model in :mod:`torchslim.models`, reading a recipe) sees
every method without importing method packages by name, a registry made with ``discover=True``
first imports the *plug-in modules*: every ``torchslim/<package>/plugin.py`` and every module
named by the ``torchslim.plugins`` entry-point group (third-party methods), once per process.

Example::

    >>> from torchslim.core.registry import Registry
    >>> colours = Registry("colour")
    >>> @colours.register("red")
    ... def red():
    ...     return "#f00"
    >>> colours.get("red")()
    '#f00'
    >>> colours.get("rde")
    Traceback (most recent call last):
    ...
    torchslim.core.errors.UserError: unknown colour 'rde' (did you mean 'red'?)
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Iterator
from importlib import resources
from typing import Generic, TypeVar

from .errors import UserError, did_you_mean

T = TypeVar("T")

PLUGIN_ENTRY_POINTS = "torchslim.plugins"
_plugins_loaded = False


def load_plugins() -> list[str]:
    """Import every torchslim plug-in module once (see the module docstring); return their
    names. Safe to call again: later calls do nothing."""
    global _plugins_loaded
    if _plugins_loaded:
        return []
    _plugins_loaded = True
    loaded = []
    root = resources.files("torchslim")
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if entry.is_dir() and (entry / "plugin.py").is_file():
            name = f"torchslim.{entry.name}.plugin"
            importlib.import_module(name)
            loaded.append(name)
    for point in importlib.metadata.entry_points(group=PLUGIN_ENTRY_POINTS):
        importlib.import_module(point.value)
        loaded.append(point.value)
    return loaded


class Registry(Generic[T]):
    """Entries by name. ``what`` names an entry in error messages ("recipe class", ...)."""

    def __init__(self, what: str, *, discover: bool = False) -> None:
        self.what = what
        self.discover = discover
        self._entries: dict[str, T] = {}

    def _ready(self) -> None:
        if self.discover:
            load_plugins()

    def register(self, name: str, entry: T | None = None, *, replace: bool = False):
        """Add ``entry`` under ``name``; without ``entry``, a decorator that adds what it
        decorates. A second entry for a taken name is a ValueError unless ``replace``."""

        def add(value: T) -> T:
            if name in self._entries and not replace:
                raise ValueError(f"{self.what} '{name}' is already registered")
            self._entries[name] = value
            return value

        return add(entry) if entry is not None else add

    def find(self, name: str) -> T | None:
        """The entry called ``name``, or None."""
        if name not in self._entries:
            self._ready()
        return self._entries.get(name)

    def get(self, name: str) -> T:
        """The entry called ``name``, or a :class:`UserError` naming close ones."""
        found = self.find(name)
        if found is None:
            raise UserError(f"unknown {self.what} '{name}'{did_you_mean(name, self.names())}")
        return found

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        self._ready()
        return sorted(self._entries)

    def items(self) -> Iterator[tuple[str, T]]:
        """(name, entry) pairs, sorted by name."""
        for name in self.names():
            yield name, self._entries[name]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.find(name) is not None

    def unregister(self, name: str) -> None:
        """Remove ``name`` (tests and users replacing a built-in)."""
        self._entries.pop(name, None)

