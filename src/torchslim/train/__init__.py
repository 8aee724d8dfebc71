"""Training, evaluation and the callback protocol compression methods hook into.

Example::

    >>> from torchslim.train import TrainConfig
    >>> TrainConfig(epochs=3, schedule="multistep", milestones=[1, 2], device="cpu").validate()
"""

from .callbacks import Callback
from .evaluation import EvalResult, evaluate
from .metrics import PSNR, MeanLoss, Metric, TopK
from .trainer import (
    CHECKPOINT_NAME,
    DEVICES,
    FINAL_MODEL_NAME,
    HOOKS,
    LossFn,
    TrainConfig,
    Trainer,
    make_lr_scheduler,
    make_optimizer,
    resolve_device,
    seed_everything,
)

__all__ = [
    "CHECKPOINT_NAME",
    "DEVICES",
    "Callback",
    "EvalResult",
    "FINAL_MODEL_NAME",
    "HOOKS",
    "LossFn",
    "MeanLoss",
    "Metric",
    "PSNR",
    "TopK",
    "TrainConfig",
    "Trainer",
    "evaluate",
    "make_lr_scheduler",
    "make_optimizer",
    "resolve_device",
    "seed_everything",
]
