"""Compressed storage: a pruned model's file shrinks with its non-zeros, and loads back exactly.

A tensor whose zeros make it worth it is stored as a bitmask of its non-zero positions (one bit
per entry) plus the non-zero values; other tensors are stored as they are. At 90 % sparsity a
float32 weight takes 0.1 * 4 + 1/8 = 0.525 bytes per entry instead of 4. The file is an
ordinary ``torch.save`` archive of tensors, numbers and strings, so it loads with
``torch.load(..., weights_only=True)``: nothing in it is unpickled as code.

Example::

    >>> import tempfile, torch
    >>> from torchslim.core.storage import decode_state_dict, encode_state_dict
    >>> w = torch.zeros(100, 100); w[::10, ::10] = 1.0
    >>> encoded = encode_state_dict({"w": w})
    >>> encoded["w"]["encoding"], encoded["w"]["values"].numel()
    ('bitmask', 100)
    >>> torch.equal(decode_state_dict(encoded)["w"], w)
    True
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import torch

from .errors import UserError
from .fileio import atomic_torch_save

FORMAT = "torchslim.compressed/1"


def encode_tensor(tensor: torch.Tensor) -> dict[str, Any]:
    """The smaller of a dense and a bitmask encoding of ``tensor``."""
    tensor = tensor.detach().cpu().contiguous()
    nonzero = tensor != 0
    count = int(nonzero.sum())
    element = tensor.element_size()
    sparse_bytes = count * element + (tensor.numel() + 7) // 8
    worth_it = sparse_bytes < tensor.numel() * element and tensor.numel() >= 64
    if tensor.is_floating_point() and worth_it:
        bits = np.packbits(nonzero.flatten().numpy())
        return {
            "encoding": "bitmask",
            "shape": list(tensor.shape),
            "bitmask": torch.from_numpy(bits),
            "values": tensor[nonzero].clone(),
        }
    return {"encoding": "dense", "tensor": tensor.clone()}


def decode_tensor(entry: dict[str, Any]) -> torch.Tensor:
    """Invert :func:`encode_tensor`."""
    if entry["encoding"] == "dense":
        return entry["tensor"]
    shape = tuple(entry["shape"])
    numel = int(np.prod(shape)) if shape else 1
    bits = np.unpackbits(entry["bitmask"].numpy(), count=numel).astype(bool)
    out = torch.zeros(numel, dtype=entry["values"].dtype)
    out[torch.from_numpy(bits)] = entry["values"]
    return out.view(shape)


def encode_state_dict(state: dict[str, torch.Tensor]) -> dict[str, dict[str, Any]]:
    """Encode every tensor of ``state``."""
    return {name: encode_tensor(tensor) for name, tensor in state.items()}


def decode_state_dict(encoded: dict[str, dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Invert :func:`encode_state_dict`."""
    return {name: decode_tensor(entry) for name, entry in encoded.items()}


def save_compressed(
    model: torch.nn.Module, path: str | os.PathLike, meta: dict[str, Any] | None = None
) -> None:
    """Write ``model``'s weights in compressed form (atomically), with ``meta`` (model name,
    classes, a thinning record ...) beside them."""
    try:  # plain JSON types only, so that weights_only loading accepts the file
        plain_meta = json.loads(json.dumps(meta or {}))
    except TypeError as err:
        raise UserError(f"the meta of a compressed model must be JSON-like: {err}") from None
    payload = {
        "format": FORMAT,
        "state": encode_state_dict(model.state_dict()),
        "meta": plain_meta,
    }
    atomic_torch_save(payload, path)


def is_compressed(checkpoint: Any) -> bool:
    """Whether a loaded checkpoint object is in this module's format."""
    return isinstance(checkpoint, dict) and checkpoint.get("format") == FORMAT


def read_compressed(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The decoded state_dict and the meta of a file written by :func:`save_compressed`."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"compressed model '{path}' not found: check the path") from None
    if not is_compressed(checkpoint):
        raise UserError(f"'{path}' is not a torchslim compressed model (format {FORMAT})")
    return decode_state_dict(checkpoint["state"]), checkpoint["meta"]
