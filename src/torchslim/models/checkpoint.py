"""Loading weights safely and with errors that say which keys do not fit.

Example::

    >>> import tempfile, torch
    >>> from torchslim.models import create_model, load_weights
    >>> path = tempfile.mktemp(suffix=".pt")
    >>> torch.save({"state_dict": create_model("demo_cnn").state_dict()}, path)
    >>> _ = load_weights(create_model("demo_cnn"), path)
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.edits import apply_edits
from ..core.errors import UserError, closest
from ..core.storage import decode_state_dict, is_compressed

_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "net")


def _is_state_dict(obj) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


def read_checkpoint(path: str | os.PathLike) -> dict:
    """``torch.load(path, weights_only=True)`` with clear errors for a missing or unsafe file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"weights file '{path}' not found: check the path")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else "unsupported content"
        raise UserError(
            f"'{path}' holds more than tensors and is not loaded (weights_only=True refused it: "
            f"{first}); save the model's state_dict instead"
        ) from None
    except Exception as err:  # any failure to parse the file is a bad input, not a bug
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"'{path}' is not a readable PyTorch checkpoint: {first}") from None


def extract_state_dict(checkpoint) -> dict[str, torch.Tensor]:
    """The state_dict in a checkpoint: bare or under ``state_dict``/``model``, minus ``module.``."""
    state = checkpoint
    if not _is_state_dict(state) and isinstance(state, dict):
        for key in _WRAPPER_KEYS:
            if _is_state_dict(state.get(key)):
                state = state[key]
                break
    if not _is_state_dict(state):
        keys = ", ".join(map(str, list(checkpoint)[:5])) if isinstance(checkpoint, dict) else ""
        raise UserError(
            "no state_dict found in the checkpoint (expected tensors, or a dict with a "
            f"'state_dict' or 'model' entry; top-level keys: {keys or type(checkpoint).__name__})"
        )
    prefix = "module."
    if all(k.startswith(prefix) for k in state):
        state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def describe_keys(keys: list[str], known: list[str], label: str) -> str:
    """``keys`` (the first three, each with the closest of ``known``) for a mismatch message."""
    shown = []
    for key in keys[:3]:
        hint = closest(key, known, n=1)
        shown.append(f"'{key}'" + (f" (closest: '{hint[0]}')" if hint else ""))
    more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
    return f"{len(keys)} {label}: {', '.join(shown)}{more}"


def edit_records(path: str | os.PathLike) -> list[dict]:
    """The architecture edits (:mod:`torchslim.core.edits`) a torchslim-written file carries in
    its ``meta`` (``[]`` if none)."""
    return _edits(read_checkpoint(path))


def checkpoint_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The ``meta`` a torchslim-written file carries (``{}`` for other files)."""
    return _meta(read_checkpoint(path))


def _meta(checkpoint) -> dict[str, Any]:
    meta = checkpoint.get("meta") if isinstance(checkpoint, dict) else None
    return meta if isinstance(meta, dict) else {}


def saved_classes(meta: dict[str, Any]) -> list[str] | None:
    """The class names a file's :func:`checkpoint_meta` records (None if none)."""
    classes = meta.get("classes")
    return [str(c) for c in classes] if isinstance(classes, list | tuple) else None


#: What torchslim's files written before the normalisation was recorded were trained with,
#: where the default has changed since (Distiller's zoo: ImageNet statistics, then Distiller's).
_BEFORE_RECORDED = {"distiller_cifar": "cifar", "mnist": "none"}


def saved_normalization(meta: dict[str, Any]) -> str | None:
    """The normalisation preset a file's :func:`checkpoint_meta` says it was trained with (None
    for other files, such as Distiller's or a plain state_dict: the model's own default
    applies)."""
    if "model" not in meta:
        return None
    if isinstance(meta.get("normalization"), str):
        return meta["normalization"]
    from .registry import get_model_spec  # a file from before the preset was recorded

    try:
        default = get_model_spec(str(meta["model"])).normalization
    except Exception:  # a model name this version does not know: its default applies
        return None
    return _BEFORE_RECORDED.get(default)


def _edits(checkpoint) -> list[dict]:
    meta = _meta(checkpoint)
    if meta.get("thinning"):  # written before edits had kinds
        raise UserError(
            "the file was thinned by torchslim before 0.2 and holds thinning records this "
            "version cannot replay: compress the model again"
        )
    return list(meta.get("edits") or [])


def load_weights(model: nn.Module, path: str | os.PathLike, name: str | None = None) -> nn.Module:
    """Load a checkpoint into ``model``; on a mismatch name the missing/unexpected keys.

    Files written by :func:`torchslim.core.storage.save_compressed` are decoded first, and a
    model whose architecture a compression step changed (thinning; ``meta["edits"]`` records in
    the file, see :mod:`torchslim.core.edits`) is reshaped to the saved shapes before loading:
    no model code is unpickled.
    """
    checkpoint = read_checkpoint(path)
    edits = _edits(checkpoint)
    if is_compressed(checkpoint):
        checkpoint = decode_state_dict(checkpoint["state"])
    state = extract_state_dict(checkpoint)
    model = apply_edits(model, edits)
    expected = model.state_dict()
    # Checkpoints from PyTorch < 0.4.1 lack BatchNorm's step counter; it does not affect inference.
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    label = f"model '{name}'" if name else "the model"
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(describe_keys(missing, list(state), "missing keys"))
        if unexpected:
            parts.append(describe_keys(unexpected, list(expected), "unexpected keys"))
        raise UserError(
            f"checkpoint '{path}' does not fit {label}: {'; '.join(parts)}; "
            "is it the checkpoint of another model?"
        )
    for key, tensor in state.items():
        # an empty tensor takes its shape on load (a quantizer's statistics before any data)
        if tensor.shape != expected[key].shape and expected[key].numel() > 0:
            raise UserError(
                f"checkpoint '{path}' does not fit {label}: '{key}' has shape "
                f"{tuple(tensor.shape)} in the file but {tuple(expected[key].shape)} in the model"
            )
    model.load_state_dict(state, strict=False)
    return model
