"""Model zoo, registry and checkpoint loading.

Example::

    >>> from torchslim.models import create_model
    >>> sum(p.numel() for p in create_model("cifar_resnet20").parameters())
    269722
"""

from .checkpoint import edit_records, extract_state_dict, load_weights, read_checkpoint
from .registry import ModelSpec, create_model, get_model_spec, list_models, register_model

__all__ = [
    "ModelSpec",
    "create_model",
    "extract_state_dict",
    "get_model_spec",
    "list_models",
    "load_weights",
    "read_checkpoint",
    "edit_records",
    "register_model",
]
