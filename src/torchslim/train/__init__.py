"""Training, evaluation and the callback protocol compression methods hook into.

Example::

    >>> from torchslim.train import TrainConfig
    >>> TrainConfig(epochs=3, schedule="multistep", milestones=[1, 2]).validate()
"""

from .callbacks import Callback
from .evaluation import EvalResult, evaluate
from .trainer import (
    CHECKPOINT_NAME,
    FINAL_MODEL_NAME,
    HOOKS,
    TrainConfig,
    Trainer,
    make_lr_scheduler,
    make_optimizer,
    seed_everything,
)

__all__ = [
    "CHECKPOINT_NAME",
    "Callback",
    "EvalResult",
    "FINAL_MODEL_NAME",
    "HOOKS",
    "TrainConfig",
    "Trainer",
    "evaluate",
    "make_lr_scheduler",
    "make_optimizer",
    "seed_everything",
]
