"""Example recipes shipped inside the package, so ``torchslim demo`` and ``--recipe NAME`` work
from any directory after ``pip install torchslim``.

Example::

    >>> from torchslim.recipes import recipe_names, recipe_path
    >>> recipe_names()
    ['demo_agp', 'demo_dorefa', 'demo_filters', 'demo_lowrank']
    >>> recipe_path("demo_agp").name
    'demo_agp.yaml'
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from ..core.errors import UserError, did_you_mean


def recipe_names() -> list[str]:
    """The names of the shipped recipes (file names without ``.yaml``)."""
    return sorted(
        entry.name[: -len(".yaml")]
        for entry in resources.files(__name__).iterdir()
        if entry.name.endswith(".yaml")
    )


def recipe_path(name: str) -> Path:
    """The file of the shipped recipe ``name`` (a :class:`UserError` lists the others)."""
    stem = name[: -len(".yaml")] if name.endswith(".yaml") else name
    if stem not in recipe_names():
        raise UserError(
            f"no recipe '{name}' ships with torchslim{did_you_mean(stem, recipe_names())}; "
            f"shipped: {', '.join(recipe_names())} (or give the path of a YAML file)"
        )
    return Path(str(resources.files(__name__) / f"{stem}.yaml"))
