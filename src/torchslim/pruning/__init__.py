"""Pruning: masks, element-wise pruners, sparsity schedules, structured pruning and thinning,
and the steps that run them in a compression schedule.

Example::

    >>> import torch
    >>> from torchslim.pruning import LevelPruner, Masks
    >>> model = torch.nn.Linear(8, 8)
    >>> masks = Masks(model)
    >>> LevelPruner({"weight": 0.75}).prune(masks)
    {'weight': 0.75}
"""

from .masks import Masks, masks_of
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
    MagnitudePruner,
    Pruner,
    RandomPruner,
    SensitivityPruner,
    ThresholdPruner,
)
from .recalibration import recalibrate_batchnorm
from .regularizers import BNGammaL1Regularizer, L1Regularizer
from .schedules import AGP, Constant, Linear, Polynomial, SparsitySchedule
from .steps import PlannedPruneStep, PruneStep, RegularizerStep, StructuredPruneStep, ThinningStep

__all__ = [
    "AGP",
    "AGPPruner",
    "BNGammaL1Regularizer",
    "Constant",
    "GlobalMagnitudePruner",
    "L1Regularizer",
    "LevelMethod",
    "LevelPruner",
    "Linear",
    "MagnitudePruner",
    "Masks",
    "PlannedPruneStep",
    "Polynomial",
    "PruneStep",
    "Pruner",
    "RandomMethod",
    "RandomPruner",
    "RegularizerStep",
    "SensitivityMethod",
    "SensitivityPruner",
    "SparsitySchedule",
    "StructuredPruneStep",
    "ThinningStep",
    "ThresholdMethod",
    "ThresholdPruner",
    "global_magnitude_masks",
    "masks_of",
    "recalibrate_batchnorm",
]
