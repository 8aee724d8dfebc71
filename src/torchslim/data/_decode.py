"""Decoding image bytes with Pillow, in worker processes when there is enough work.

Grayscale images (Pillow mode ``L`` or ``1``) decode to ``(H, W)`` arrays, everything else to
``(H, W, 3)`` RGB (alpha is dropped, palettes are expanded); :func:`stack_images` then decides the
channel count of a whole split. A file Pillow cannot read becomes an error string, so the caller
can name it.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import sys
from concurrent.futures import Future, ProcessPoolExecutor

import numpy as np
from PIL import Image

from ..core.errors import UserError

#: Images per task; a source with fewer is decoded in this process without starting workers.
BATCH = 1024
_MAX_WORKERS = 8


def check_image_size(image_size) -> tuple[int, int] | None:
    """``image_size`` as (height, width) ints, or None; anything else is a UserError."""
    if image_size is None:
        return None
    try:
        height, width = (int(v) for v in image_size)
        ok = height >= 1 and width >= 1 and tuple(image_size) == (height, width)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise UserError(f"image_size must be two positive integers (height, width), "
                        f"got {image_size!r}")
    return height, width


def resize(image: Image.Image, size: tuple[int, int] | None) -> Image.Image:
    """``image`` resized bilinearly to ``size`` = (height, width); unchanged if None or equal."""
    if size is None or image.size == (size[1], size[0]):
        return image
    return image.resize((size[1], size[0]), Image.Resampling.BILINEAR)


def decode_one(blob: bytes, size: tuple[int, int] | None) -> np.ndarray | str:
    """One encoded image as a uint8 ``(H, W)`` or ``(H, W, 3)`` array, or why it failed."""
    try:
        with Image.open(io.BytesIO(blob)) as image:
            if image.mode.startswith("I"):  # 16- or 32-bit greyscale: scaled to 8 bits
                wide = np.asarray(image, dtype=np.float64)
                peak = float(wide.max()) if wide.size else 0.0
                # a 16-bit file spans 0..65535; a 32-bit container holding 8- or 16-bit values
                # (as some writers store them) keeps their range
                top = (65535.0 if image.mode.startswith("I;16") or 255 < peak <= 65535
                       else 255.0 if peak <= 255 else float(np.iinfo(np.int32).max))
                image = Image.fromarray(np.round(wide * (255.0 / top)).astype(np.uint8), "L")
            gray = image.mode in ("L", "1")
            return np.asarray(resize(image.convert("L" if gray else "RGB"), size))
    except Exception as err:  # Pillow raises many exception types for broken files
        return f"{type(err).__name__}: {err}"


def decode_batch(blobs: list[bytes], size: tuple[int, int] | None) -> list[np.ndarray | str]:
    """:func:`decode_one` over a list (the unit of work sent to a worker process)."""
    return [decode_one(blob, size) for blob in blobs]


def _worker_count() -> int:
    # Workers are forked, which is cheap and needs no import of the caller's script; on other
    # platforms (spawn) a script without a __main__ guard would break, so decode in-process there.
    if sys.platform != "linux":
        return 1
    return max(1, min(_MAX_WORKERS, len(os.sched_getaffinity(0))))


class Decoder:
    """Takes encoded images with :meth:`add`; :meth:`finish` returns them decoded, in order.

    Once a full :data:`BATCH` has arrived and more than one CPU is available, batches go to a
    pool of forked worker processes while the caller keeps reading the next ones.
    """

    def __init__(self, size: tuple[int, int] | None):
        self._size = size
        self._pending: list[bytes] = []
        self._parts: list[Future | list[np.ndarray | str]] = []
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> Decoder:
        return self

    def __exit__(self, *exc_info) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def add(self, blob: bytes) -> None:
        """Queue one encoded image."""
        self._pending.append(blob)
        if len(self._pending) >= BATCH:
            self._flush()

    def finish(self) -> list[np.ndarray | str]:
        """Every queued image decoded (array or error string), in the order they were added."""
        self._flush()
        out: list[np.ndarray | str] = []
        for part in self._parts:
            out.extend(part.result() if isinstance(part, Future) else part)
        self._parts = []
        return out

    def _flush(self) -> None:
        if not self._pending:
            return
        blobs, self._pending = self._pending, []
        if self._pool is None and len(blobs) >= BATCH and _worker_count() > 1:
            self._pool = ProcessPoolExecutor(
                _worker_count(), mp_context=multiprocessing.get_context("fork")
            )
        if self._pool is not None:
            self._parts.append(self._pool.submit(decode_batch, blobs, self._size))
        else:
            self._parts.append(decode_batch(blobs, self._size))


def stack_images(arrays: list[np.ndarray]) -> np.ndarray:
    """Decoded images of one size as uint8 NHWC: C=1 if every image is grayscale, else RGB."""
    if all(array.ndim == 2 for array in arrays):
        return np.stack(arrays)[..., None]
    return np.stack([a if a.ndim == 3 else np.repeat(a[..., None], 3, axis=2) for a in arrays])
