"""The classes a recipe may name, per section: those the method packages register
(:mod:`torchslim.core.config`), ``torch.optim.lr_scheduler`` classes under ``lr_schedulers``,
and Distiller's names torchslim does not implement yet, rejected with a reason rather than
ignored.

Example::

    >>> from torchslim.recipe.classes import find_class, section_of
    >>> find_class("pruners", "AutomatedGradualPruner").args.__name__
    'AGPArgs'
    >>> find_class("regularizers", "DropFilterRegularizer").unsupported[:24]
    'dropping random filters '
    >>> section_of("MultiStepLR")
    'lr_schedulers'
"""

from __future__ import annotations

import inspect

import torch

from ..core.config import (
    SECTIONS as CLASS_SECTIONS,
)
from ..core.config import (
    ClassSpec,
    find_recipe_class,
    recipe_class_names,
    register_unsupported,
)
from ..schedule.lr import EXTRA_SCHEDULERS

register_unsupported(
    "regularizers", ["DropFilterRegularizer"], "dropping random filters while training "
    "(DropFilter) is not implemented yet",
)

_LR_EXCLUDED = {"LRScheduler", "_LRScheduler", "LambdaLR",
                "MultiplicativeLR", "SequentialLR", "ChainedScheduler"}


def lr_scheduler_names() -> list[str]:
    """The ``torch.optim.lr_scheduler`` classes a recipe may name, and Distiller's
    ``MultiStepMultiGammaLR``."""
    module = torch.optim.lr_scheduler
    torch_names = [
        name for name, obj in vars(module).items()
        if inspect.isclass(obj)
        and (issubclass(obj, module.LRScheduler) or obj is module.ReduceLROnPlateau)
        and name not in _LR_EXCLUDED and not name.startswith("_")
    ]
    return sorted({*torch_names, *EXTRA_SCHEDULERS})


def class_names(section: str) -> list[str]:
    """Every class name valid in ``section``."""
    if section == "lr_schedulers":
        return lr_scheduler_names()
    return recipe_class_names(section) if section in CLASS_SECTIONS else []


def find_class(section: str, name: str) -> ClassSpec | None:
    """The :class:`ClassSpec` of ``name`` in ``section`` (None when unknown)."""
    if section == "lr_schedulers":
        return ClassSpec(name, section) if name in lr_scheduler_names() else None
    return find_recipe_class(section, name) if section in CLASS_SECTIONS else None


def section_of(name: str) -> str | None:
    """The section a class name belongs to, for "this is a quantizer" hints."""
    for section in (*CLASS_SECTIONS, "lr_schedulers"):
        if name in class_names(section):
            return section
    return None
