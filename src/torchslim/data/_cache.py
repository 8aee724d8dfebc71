"""On-disk cache of decoded splits: ``.npy`` arrays plus a small JSON, written atomically.

Layout: ``<cache_dir>/datasets/<source name>-<hash of its absolute path>/`` holds, per split,
``<key>.<split>.images.npy`` (uint8 NHWC), ``<key>.<split>.labels.npy`` (int64) and
``<key>.<split>.json`` (class names). ``key`` hashes what the content depends on (size and mtime of
an archive, the file listing of a folder, the requested image size), so a changed source misses
the cache, and the stale files of that split are removed when the new ones are written. The JSON
is written last: a split is cached only once all three files are complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from pathlib import Path

import numpy as np

from ..core.fileio import atomic_write, atomic_write_text

#: Raised whenever decoding changes (2: hidden archive folders skipped, 16-bit images scaled),
#: so that splits cached by an older version are decoded again.
FORMAT = 2
_SUFFIXES = (".images.npy", ".labels.npy", ".json")


def default_cache_dir() -> Path:
    """``$TORCHSLIM_CACHE``, or ``~/.cache/torchslim`` when it is unset."""
    return Path(os.environ.get("TORCHSLIM_CACHE") or Path.home() / ".cache" / "torchslim")


def make_key(*parts: object) -> str:
    """A short hex digest of ``parts`` (and the cache format version)."""
    text = json.dumps([FORMAT, *[str(part) for part in parts]])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class SplitCache:
    """The cache entries of one source (an archive or a folder) under ``cache_dir``."""

    def __init__(self, cache_dir: str | os.PathLike | None, source: Path):
        name = re.sub(r"[^A-Za-z0-9._-]", "_", source.name) or "data"
        digest = hashlib.sha256(str(source).encode("utf-8")).hexdigest()[:10]
        base = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        self.folder = base / "datasets" / f"{name}-{digest}"

    def _path(self, key: str, split: str, suffix: str) -> Path:
        return self.folder / f"{key}.{split}{suffix}"

    def load(self, key: str, split: str) -> tuple[np.ndarray, np.ndarray, list[str]] | None:
        """``(images, labels, classes)`` cached under ``key``, or None (a broken entry warns)."""
        meta_path = self._path(key, split, ".json")
        if not meta_path.is_file():
            return None
        try:
            classes = json.loads(meta_path.read_text(encoding="utf-8"))["classes"]
            images = np.load(self._path(key, split, ".images.npy"), allow_pickle=False)
            labels = np.load(self._path(key, split, ".labels.npy"), allow_pickle=False)
            if images.dtype != np.uint8 or images.ndim != 4 or labels.dtype != np.int64:
                raise ValueError("unexpected array types")
            if len(images) != len(labels) or (len(labels) and labels.max() >= len(classes)):
                raise ValueError("images, labels and classes do not match")
        except (OSError, ValueError, KeyError, TypeError, EOFError) as err:
            warnings.warn(f"ignoring broken cache entry {meta_path} ({err}): rebuilding it",
                          stacklevel=3)
            return None
        return images, labels, list(classes)

    def save(self, key: str, split: str, images: np.ndarray, labels: np.ndarray,
             classes: list[str]) -> None:
        """Store one split atomically and drop older entries of it; a failure only warns."""
        try:
            atomic_write(self._path(key, split, ".images.npy"), lambda f: np.save(f, images))
            atomic_write(self._path(key, split, ".labels.npy"), lambda f: np.save(f, labels))
            atomic_write_text(self._path(key, split, ".json"),
                              json.dumps({"format": FORMAT, "split": split, "classes": classes}))
            for path in self.folder.iterdir():
                stale_key, _, rest = path.name.partition(".")
                if stale_key != key and rest in {split + suffix for suffix in _SUFFIXES}:
                    path.unlink(missing_ok=True)
        except OSError as err:
            warnings.warn(f"could not write the data cache in {self.folder} ({err}): "
                          "the next run decodes the images again", stacklevel=3)
