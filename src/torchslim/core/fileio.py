"""Atomic writes: a file is either absent, the old version, or the complete new version.

Example::

    >>> import tempfile, pathlib
    >>> from torchslim.core.fileio import atomic_write_text
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "out.txt"
    >>> _ = atomic_write_text(path, "hello")
    >>> path.read_text()
    'hello'
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

from .errors import UserError


def make_folder(path: str | os.PathLike) -> Path:
    """Create the folder ``path`` and its parents (if missing); a :class:`UserError` when a
    file stands in the way or the folder cannot be written.

    >>> import tempfile, pathlib
    >>> blocker = pathlib.Path(tempfile.mkdtemp()) / "afile"
    >>> _ = blocker.write_text("")
    >>> make_folder(blocker / "out")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    torchslim.core.errors.UserError: cannot create the folder '.../afile/out' (...): ...
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        why = err.strerror or type(err).__name__
        blocker = next((p for p in [path, *path.parents] if p.exists() and not p.is_dir()),
                       None)
        if blocker is not None:
            why = f"'{blocker}' is a file"
        raise UserError(f"cannot create the folder '{path}' ({why}): choose another output "
                        "path") from None
    return path


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(fileobj)`` on a temp file beside ``path``, fsync it, rename it to ``path``."""
    path = Path(path)
    make_folder(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj, path)`` atomically: a crash never leaves a half-written checkpoint."""
    return atomic_write(path, lambda handle: torch.save(obj, handle))
