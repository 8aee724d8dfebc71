"""Pruning: masks, element-wise methods and pruners (structured pruning and thinning alongside).

Example::

    >>> import torch
    >>> from torchslim.pruning import LevelPruner, Masks
    >>> model = torch.nn.Linear(8, 8)
    >>> masks = Masks(model)
    >>> LevelPruner({"weight": 0.75}).prune(masks)
    {'weight': 0.75}
"""

from .masks import Masks
from .methods import (
    LevelMethod,
    RandomMethod,
    SensitivityMethod,
    ThresholdMethod,
    global_magnitude_masks,
)
from .pruners import (
    AGPPruner,
    GlobalMagnitudePruner,
    LevelPruner,
    Pruner,
    RandomPruner,
    SensitivityPruner,
    ThresholdPruner,
)
from .recalibration import recalibrate_batchnorm

__all__ = [
    "AGPPruner",
    "GlobalMagnitudePruner",
    "LevelMethod",
    "LevelPruner",
    "Masks",
    "Pruner",
    "RandomMethod",
    "RandomPruner",
    "SensitivityMethod",
    "SensitivityPruner",
    "ThresholdMethod",
    "ThresholdPruner",
    "global_magnitude_masks",
    "recalibrate_batchnorm",
]
