"""Compression schedules: policies (when) and the scheduler that runs methods from the hooks.

Example::

    >>> from torchslim.schedule import Policy
    >>> Policy(epochs=[0, 5]).describe()
    'epochs [0, 5]'
"""

from .policy import Policy
from .scheduler import CompressionScheduler, LossWithComponents, ScheduleContext
from .steps import LRSchedule, PlannedPruneStep, PruneStep, StructuredPruneStep, ThinningStep

__all__ = [
    "CompressionScheduler",
    "LRSchedule",
    "LossWithComponents",
    "PlannedPruneStep",
    "Policy",
    "PruneStep",
    "ScheduleContext",
    "StructuredPruneStep",
    "ThinningStep",
]
