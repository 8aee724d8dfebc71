"""The recipe classes of the transfer package (section ``extensions``): ``Freeze`` (``layers``,
``exclude``, ``bn_eval``) and ``Unfreeze`` (``layers``, ``gradual``), acting on their
policies' first epoch (``Unfreeze`` with ``gradual``: one entry of ``layers`` per firing epoch).

A frozen backbone for five epochs, then everything (seed 004)::

    extensions:
      backbone: {class: Freeze, layers: ["*"], exclude: [linear]}
      release: {class: Unfreeze, layers: ["*"]}
    policies:
      - extension: backbone
        epochs: [0]
      - extension: release
        epochs: [5]

Example::

    >>> from torchslim.core.config import find_recipe_class
    >>> import torchslim.transfer.recipes
    >>> spec = find_recipe_class("extensions", "Unfreeze")
    >>> spec.build(spec.args(layers=["layer3", "layer2"], gradual=True), None).layers
    ['layer3', 'layer2']
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from ..core.config import Args, register_recipe_class
from .freeze import Freeze, Unfreeze

Names = Annotated[list[str], Field(min_length=1)]


class FreezeArgs(Args):
    layers: Names = ["*"]
    exclude: list[str] = []
    bn_eval: bool = True


class UnfreezeArgs(Args):
    layers: Names = ["*"]
    gradual: bool = False


register_recipe_class("extensions", ["Freeze"], FreezeArgs,
                      lambda a, model: Freeze(a.layers, exclude=a.exclude, bn_eval=a.bn_eval))
register_recipe_class("extensions", ["Unfreeze"], UnfreezeArgs,
                      lambda a, model: Unfreeze(a.layers, gradual=a.gradual))
