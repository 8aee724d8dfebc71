"""Turn a validated recipe into a :class:`~torchslim.schedule.CompressionScheduler` for a model.

This is the one step that needs the model: every weight name in the recipe must select at
least one parameter, or the error names the file, line and key of the pattern.

Example::

    >>> from torchslim.models import create_model
    >>> from torchslim.recipe import build_scheduler, parse_recipe
    >>> recipe = parse_recipe('''
    ... pruners:
    ...   p: {class: LevelParameterPruner, levels: {"features.*.0.weight": 0.5}}
    ... policies:
    ...   - pruner: {instance_name: p}
    ...     epochs: [0]
    ... ''')
    >>> scheduler = build_scheduler(recipe, create_model("demo_cnn"))
    >>> [entry.name for entry in scheduler.entries]
    ['p']
"""

from __future__ import annotations

import torch
from torch import nn

from ..core.errors import UserError
from ..core.names import resolve_values
from ..schedule import CompressionScheduler, LRSchedule
from .schema import POLICY_KINDS, Instance, Recipe


def check_weight_names(recipe: Recipe, instance: Instance, model: nn.Module) -> None:
    """Raise a located RecipeError for the first weight pattern that matches nothing."""
    for field_name in getattr(instance.args, "weight_fields", ()):
        value = getattr(instance.args, field_name)
        if value is None:  # optional: the method's own default (e.g. every layer)
            continue
        patterns = list(value) if isinstance(value, dict) else value
        for index, pattern in enumerate(patterns):
            key = pattern if isinstance(value, dict) else index
            try:
                resolve_values(model, {pattern: 0.0})
            except UserError as err:
                raise recipe.source.error(instance.path + (field_name, key), str(err)) from None


def build_method(recipe: Recipe, instance: Instance, model: nn.Module):
    """The Python object for one recipe instance."""
    if instance.section == "lr_schedulers":
        return LRSchedule(instance.spec.name, **instance.args)
    check_weight_names(recipe, instance, model)
    try:
        return instance.spec.build(instance.args, model)
    except UserError as err:  # e.g. a file the instance names
        raise recipe.source.error(instance.path, str(err)) from None


def build_scheduler(
    recipe: Recipe, model: nn.Module, example_input: torch.Tensor | None = None
) -> CompressionScheduler:
    """A scheduler running every policy of ``recipe`` on ``model``, in the recipe's order.

    ``example_input`` (one batch the model accepts) is needed by structured pruning and thinning,
    which trace the model.
    """
    scheduler = CompressionScheduler(model, example_input=example_input)
    built = {}
    for entry in recipe.policies:
        key = (POLICY_KINDS[entry.kind], entry.instance)
        if key not in built:
            built[key] = build_method(recipe, recipe.instances[key], model)
        name = entry.instance
        suffix = 1
        while name in [e.name for e in scheduler.entries]:
            suffix += 1
            name = f"{entry.instance}#{suffix}"
        try:  # steps that probe the model when scheduled (a teacher's outputs, hint layers)
            scheduler.add(built[key], entry.policy, name=name)
        except UserError as err:
            raise recipe.source.error(recipe.instances[key].path, str(err)) from None
    return scheduler
