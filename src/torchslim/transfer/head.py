"""A new classifier head for a new task: :func:`replace_head` swaps the model's last Linear (or
the layer named) for a freshly initialised one with ``num_classes`` outputs, and returns the
``"head"`` edit record (:mod:`torchslim.core.edits`), so the fine-tuned model reloads into a
fresh instance of the original architecture.

Example::

    >>> import torch
    >>> from torchslim.models import create_model
    >>> from torchslim.transfer import replace_head
    >>> model = create_model("cifar_resnet20")
    >>> replace_head(model, 2)
    {'kind': 'head', 'version': 1, 'layer': 'linear', 'num_classes': 2}
    >>> model(torch.zeros(1, 3, 32, 32)).shape
    torch.Size([1, 2])
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from ..core.edits import register_edit
from ..core.errors import UserError, did_you_mean

RECORD_VERSION = 1


def _head_name(model: nn.Module, layer: str | None) -> str:
    modules = dict(model.named_modules())
    if layer is not None:
        if not layer or layer not in modules or not isinstance(modules[layer], nn.Linear):
            linears = [n for n, m in modules.items() if isinstance(m, nn.Linear)]
            raise UserError(f"head '{layer}' is not a Linear layer of the model"
                            f"{did_you_mean(layer, linears)}; Linear layers: "
                            f"{', '.join(linears) or 'none'}")
        return layer
    linears = [n for n, m in modules.items() if isinstance(m, nn.Linear) and n]
    if not linears:
        raise UserError("the model has no Linear layer inside it to serve as its head")
    return linears[-1]


def replace_head(model: nn.Module, num_classes: int, layer: str | None = None) -> dict[str, Any]:
    """Give ``model`` a new ``layer`` (default: its last Linear) with ``num_classes`` outputs;
    return the edit record."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise UserError(f"the new head needs a number of classes >= 1, got {num_classes!r}")
    name = _head_name(model, layer)
    old = model.get_submodule(name)
    new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
    new.to(device=old.weight.device, dtype=old.weight.dtype)
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)
    return {"kind": "head", "version": RECORD_VERSION, "layer": name, "num_classes": num_classes}


@register_edit("head")
def apply_head(model: nn.Module, record: Mapping[str, Any]) -> nn.Module:
    """Replay :func:`replace_head` on a fresh model (weights loaded afterwards)."""
    if record.get("version") != RECORD_VERSION:
        raise UserError(f"head record version {record.get('version')} is not supported")
    replace_head(model, int(record["num_classes"]), str(record["layer"]))
    return model
