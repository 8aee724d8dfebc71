"""On-disk size of a model: its dense ``state_dict`` as ``torch.save`` writes it, or a saved file.

Example::

    >>> import torch
    >>> from torchslim.analysis import file_size_bytes
    >>> file_size_bytes(torch.nn.Linear(1000, 100)) > 100_100 * 4
    True
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from ..core.errors import UserError


def file_size_bytes(model: nn.Module) -> int:
    """Bytes of ``torch.save(model.state_dict())`` in a temporary file (zeros stored densely).

    >>> file_size_bytes(torch.nn.Linear(10, 10)) > 0
    True
    """
    with tempfile.TemporaryDirectory(prefix="torchslim-size-") as folder:
        path = Path(folder) / "state_dict.pt"
        torch.save(model.state_dict(), path)
        return path.stat().st_size


def saved_file_size(path: str | os.PathLike) -> int:
    """Size in bytes of a file on disk, e.g. a checkpoint or an exported ONNX model.

    >>> saved_file_size("no/such/model.pt")
    Traceback (most recent call last):
    ...
    torchslim.core.errors.UserError: file 'no/such/model.pt' not found: check the path
    """
    path = Path(path)
    if path.is_dir():
        raise UserError(f"'{path}' is a folder, not a file: give the path of the saved model")
    if not path.is_file():
        raise UserError(f"file '{path}' not found: check the path")
    return os.path.getsize(path)
