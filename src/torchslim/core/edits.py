"""Architecture edits: what a compression step changed in a model's structure, as plain data.

Thinning removes channels, factorization replaces layers: after such an edit the model's
``state_dict`` no longer loads into a freshly created model. Every edit is therefore recorded as
an *edit record*, a dict of JSON types with a ``kind`` (``{"kind": "thinning", ...}``), kept
in the schedule's checkpoints and in the ``meta["edits"]`` list of saved models. The method
package that makes a kind of edit registers how to replay it on a fresh model
(:func:`register_edit`); :func:`apply_edits` replays a list of records in order, so
:func:`torchslim.models.load_weights` reshapes a fresh model before loading its weights, with no
pickled code.

Example::

    >>> import torch
    >>> from torchslim.core.edits import apply_edits, register_edit
    >>> @register_edit("double_bias")
    ... def double_bias(model, record):
    ...     model.bias = torch.nn.Parameter(torch.zeros(2 * model.out_features))
    >>> model = apply_edits(torch.nn.Linear(2, 3), [{"kind": "double_bias"}])
    >>> model.bias.shape
    torch.Size([6])
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from torch import nn

from .errors import UserError
from .registry import Registry

#: A function replaying one edit record on a model (in place).
EditFunction = Callable[[nn.Module, Mapping[str, Any]], Any]

EDITS: Registry[EditFunction] = Registry("model edit kind", discover=True)


def register_edit(kind: str, function: EditFunction | None = None):
    """Register how records of ``kind`` are replayed (usable as a decorator)."""
    return EDITS.register(kind, function)


def apply_edits(model: nn.Module, records: Iterable[Mapping[str, Any]]) -> nn.Module:
    """Replay ``records`` on ``model`` in the order they were made; return the model (an edit
    function changes it in place, or returns the module that replaces it)."""
    for record in records:
        if not isinstance(record, Mapping) or "kind" not in record:
            raise UserError(
                "the file holds an architecture edit without a 'kind' (written by torchslim "
                "before 0.2?): compress the model again with this version"
            )
        result = EDITS.get(str(record["kind"]))(model, record)
        model = result if isinstance(result, nn.Module) else model
    return model
