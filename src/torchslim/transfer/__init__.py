"""Transfer learning: freeze and unfreeze layers by name pattern (functions and schedule steps,
gradual unfreezing included) and a new classifier head for a new number of classes, recorded so
the adapted model reloads into a fresh instance.

Example (seed 004: a new 2-class head on a frozen backbone)::

    >>> import torch
    >>> from torchslim.models import create_model
    >>> from torchslim.transfer import freeze, frozen, replace_head
    >>> model = create_model("cifar_resnet20")
    >>> _ = replace_head(model, 2)
    >>> _ = freeze(model, ["*"], exclude=["linear"])
    >>> [n for n, p in model.named_parameters() if p.requires_grad]
    ['linear.weight', 'linear.bias']
"""

from .freeze import Freeze, Unfreeze, freeze, frozen, unfreeze
from .head import apply_head, replace_head

__all__ = ["Freeze", "Unfreeze", "apply_head", "freeze", "frozen", "replace_head", "unfreeze"]
