"""Compression schedules: policies (when) and the scheduler that runs steps from the hooks.

The step protocol itself lives in :mod:`torchslim.core.steps`; method packages provide the
steps (e.g. :class:`torchslim.pruning.PruneStep`).

Example::

    >>> from torchslim.schedule import Policy
    >>> Policy(epochs=[0, 5]).describe()
    'epochs [0, 5]'
"""

from ..core.steps import Step, StepContext
from .lr import LRSchedule
from .policy import Policy
from .scheduler import CompressionScheduler, LossWithComponents, ScheduledStep

__all__ = [
    "CompressionScheduler",
    "LRSchedule",
    "LossWithComponents",
    "Policy",
    "ScheduledStep",
    "Step",
    "StepContext",
]
