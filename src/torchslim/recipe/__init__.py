"""Recipes: YAML compression schedules (Distiller's format works), validated before anything runs.

:func:`load_recipe` reads and validates a file (errors say ``file:line key.path: problem``);
:func:`build_scheduler` binds it to a model as a
:class:`~torchslim.schedule.CompressionScheduler`.

Example::

    >>> from torchslim.recipe import parse_recipe
    >>> recipe = parse_recipe('''
    ... lr_schedulers:
    ...   lr: {class: MultiStepLR, milestones: [5, 8], gamma: 0.5}
    ... policies:
    ...   - lr_scheduler: {instance_name: lr}
    ...     starting_epoch: 0
    ...     ending_epoch: 10
    ... ''')
    >>> [(p.kind, p.instance) for p in recipe.policies]
    [('lr_scheduler', 'lr')]
"""

from ..core.names import match_names, match_parameters
from .build import build_scheduler
from .schema import Recipe, load_recipe, parse_recipe
from .source import RecipeError, RecipeSource

__all__ = [
    "Recipe",
    "RecipeError",
    "RecipeSource",
    "build_scheduler",
    "load_recipe",
    "match_names",
    "match_parameters",
    "parse_recipe",
]
