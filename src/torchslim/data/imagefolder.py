"""Load ``<split>/<class>/<image>`` data from a folder or a ``.tar.gz``, with an on-disk cache.

Class names, sorted, are the label indices; within a class, images are ordered by file name, so a
folder and an archive of it give identical arrays. Files whose names start with a dot and files at
other depths are ignored. A split is stored with one channel when every image in it is grayscale
(Pillow mode ``L`` or ``1``), otherwise as RGB (grayscale images are repeated over the three
channels, alpha is dropped). Archives are read once, as a stream, and every split in them is
decoded and cached in that one pass; a folder decodes only the split asked for.

Example::

    >>> import tempfile, pathlib
    >>> from PIL import Image
    >>> from torchslim.data import load_image_folder
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for name in ("dog", "cat"):
    ...     (root / "train" / name).mkdir(parents=True)
    ...     Image.new("RGB", (6, 4)).save(root / "train" / name / "0.png")
    >>> ds = load_image_folder(root, "train", cache_dir=root / "cache", progress=False)
    >>> ds.classes, len(ds), ds.image_shape, ds.augmentation
    (['cat', 'dog'], 2, (3, 4, 6), 'crop-flip')
"""

from __future__ import annotations

import os
import sys
import tarfile
import zlib
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from tqdm import tqdm

from ..core.errors import UserError, did_you_mean
from . import _decode
from ._cache import SplitCache, make_key
from .datasets import ArrayDataset

#: File name endings (lower case) read as images.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")
_LAYOUT = "<split>/<class>/<image>"

# class name -> [(file name, index into the decoded results)]
Classes = dict[str, list[tuple[str, int]]]


def load_image_folder(
    root: str | os.PathLike,
    split: str,
    *,
    image_size: tuple[int, int] | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> ArrayDataset:
    """Load ``split`` from a folder or ``.tar.gz``/``.tgz`` in ``<split>/<class>/<image>`` layout.

    ``image_size`` = (height, width) resizes every image bilinearly; without it all images of the
    split must have one size. Decoded splits are cached under ``cache_dir`` (default
    ``$TORCHSLIM_CACHE`` or ``~/.cache/torchslim``), so the next load only reads ``.npy`` files.
    Inside an archive the layout may sit under one top-level folder. The dataset's default
    training augmentation is ``"crop-flip"`` (random crop and horizontal flip, as for CIFAR).

    Example::

        >>> import tempfile, pathlib
        >>> from PIL import Image
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> (root / "test" / "a").mkdir(parents=True)
        >>> Image.new("L", (5, 5)).save(root / "test" / "a" / "x.bmp")
        >>> load_image_folder(root, "test", image_size=(3, 3), cache_dir=root / "c",
        ...                   progress=False).image_shape
        (1, 3, 3)
    """
    path = Path(root).expanduser()
    if not path.exists():
        raise UserError(f"data path '{root}' does not exist: check the path "
                        f"(a directory or .tar.gz in {_LAYOUT} layout)")
    size = _decode.check_image_size(image_size)
    if not split or split in (".", "..") or "/" in split or "\\" in split:
        raise UserError(f"split {split!r} is not a folder name: use e.g. 'train' or 'test'")
    source = path.resolve()
    if source.is_dir():
        images, labels, classes = _load_directory(source, split, size, cache_dir, progress)
    elif source.is_file() and source.name.lower().endswith(_ARCHIVE_SUFFIXES):
        images, labels, classes = _load_archive(source, split, size, cache_dir, progress)
    else:
        raise UserError(f"data path '{root}' is neither a directory nor a .tar.gz/.tgz archive: "
                        f"give one in {_LAYOUT} layout")
    return ArrayDataset(
        torch.from_numpy(images), torch.from_numpy(labels), classes, augmentation="crop-flip"
    )


def _is_image(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _subfolders(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def _missing_split(where: str, split: str, found) -> UserError:
    if not found:
        return UserError(f"no split folders found in {where}: expected {_LAYOUT} inside it")
    names = ", ".join(f"'{name}'" for name in sorted(found))
    return UserError(f"split '{split}' not found in {where}{did_you_mean(split, found)}: "
                     f"it has {names}")


def _load_directory(root: Path, split: str, size, cache_dir, progress):
    splits = _subfolders(root)
    if split not in splits:
        raise _missing_split(f"'{root}'", split, splits)
    classes: Classes = {}
    paths: list[Path] = []
    listing = []
    for name in _subfolders(root / split):
        files = sorted((e for e in os.scandir(root / split / name) if _is_image(e.name)),
                       key=lambda e: e.name)
        files = [(e, e.stat()) for e in files if e.is_file()]
        classes[name] = [(e.name, len(paths) + i) for i, (e, _) in enumerate(files)]
        paths.extend(Path(e.path) for e, _ in files)
        listing.extend((name, e.name, st.st_size, st.st_mtime_ns) for e, st in files)
    key = make_key("folder", size, listing)
    cache = SplitCache(cache_dir, root)
    cached = cache.load(key, split)
    if cached is not None:
        return cached

    def describe(*parts: str) -> str:
        return f"'{root.joinpath(split, *parts)}'"

    _check_classes(classes, split, describe)
    bar = tqdm(total=len(paths), unit="img", desc=f"decoding {root.name}/{split}",
               disable=not progress, leave=False, file=sys.stderr)
    with bar, _decode.Decoder(size) as decoder:
        for path in paths:
            try:
                decoder.add(path.read_bytes())
            except OSError as err:
                raise UserError(f"cannot read image '{path}': {err}") from err
            bar.update()
        results = decoder.finish()
    arrays = _assemble(classes, results, split, describe, size)
    cache.save(key, split, *arrays)
    return arrays


def _load_archive(archive: Path, split: str, size, cache_dir, progress):
    stat = archive.stat()
    key = make_key("archive", archive, stat.st_size, stat.st_mtime_ns, size)
    cache = SplitCache(cache_dir, archive)
    cached = cache.load(key, split)
    if cached is not None:
        return cached
    images, folders, results = _scan_archive(archive, size, progress)
    prefix, splits = _archive_layout(images, folders)
    if split not in splits:
        raise _missing_split(f"archive '{archive}'", split, list(splits))
    wanted = None
    for name in sorted(splits, key=lambda n: n == split):  # the requested split last
        def describe(*parts: str, _name=name) -> str:
            return f"'{'/'.join((*prefix, _name, *parts))}' in archive '{archive}'"

        try:
            _check_classes(splits[name], name, describe)
            arrays = _assemble(splits[name], results, name, describe, size)
        except UserError:
            if name == split:
                raise
            continue  # a broken split the caller did not ask for is simply not cached
        cache.save(key, name, *arrays)
        if name == split:
            wanted = arrays
    return wanted


def _scan_archive(archive: Path, size, progress):
    """Stream the archive once: image member paths, folder paths, decoded images."""
    images: list[tuple[str, ...]] = []
    folders: set[tuple[str, ...]] = set()
    bar = tqdm(total=archive.stat().st_size, unit="B", unit_scale=True, unit_divisor=1024,
               desc=f"decoding {archive.name}", disable=not progress, leave=False, file=sys.stderr)
    with open(archive, "rb") as raw, bar, _decode.Decoder(size) as decoder:
        try:
            with tarfile.open(fileobj=raw, mode="r|gz") as tar:
                for member in tar:
                    parts = tuple(p for p in PurePosixPath(member.name).parts if p != "/")
                    if not parts or any(p.startswith(".") for p in parts):
                        continue  # hidden, as folders read from disk skip them
                    folders.update(parts[:i] for i in range(1, len(parts)))
                    if member.isdir():
                        folders.add(parts)
                    elif member.isfile() and _is_image(parts[-1]):
                        decoder.add(tar.extractfile(member).read())
                        images.append(parts)
                    bar.update(raw.tell() - bar.n)
        except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
            raise UserError(f"cannot read archive '{archive}' ({err}): is it a complete "
                            ".tar.gz? Re-download or re-create it") from err
        results = decoder.finish()
    return images, folders, results


def _archive_layout(images, folders) -> tuple[tuple[str, ...], dict[str, Classes]]:
    """Find the top-level folder (if any) and group image indices by split and class."""
    prefix: tuple[str, ...] = ()
    if images and all(len(p) == 4 for p in images) and len({p[0] for p in images}) == 1:
        prefix = images[0][:1]
    cut = len(prefix)
    splits: dict[str, Classes] = {}
    for folder in sorted(folders):
        if folder[:cut] == prefix and len(folder) in (cut + 1, cut + 2):
            classes = splits.setdefault(folder[cut], {})
            if len(folder) == cut + 2:
                classes.setdefault(folder[cut + 1], [])
    for index, parts in enumerate(images):
        if parts[:cut] == prefix and len(parts) == cut + 3:
            split, name, file = parts[cut:]
            splits[split][name].append((file, index))
    return prefix, splits


def _check_classes(classes: Classes, split: str, describe: Callable[..., str]) -> None:
    if not classes:
        raise UserError(f"split folder {describe()} has no class folders: expected "
                        f"{split}/<class>/<image>, images ending in {', '.join(IMAGE_EXTENSIONS)}")
    for name in sorted(classes):
        if not classes[name]:
            raise UserError(f"class folder {describe(name)} has no images "
                            f"({', '.join(IMAGE_EXTENSIONS)}): add images or remove the folder")


def _assemble(classes: Classes, results, split: str, describe: Callable[..., str], size):
    """Stack one split's decoded images in (class, file name) order: images, labels, classes."""
    names = sorted(classes)
    arrays, labels, where = [], [], []
    for label, name in enumerate(names):
        for file, index in sorted(classes[name]):
            result = results[index]
            if isinstance(result, str):
                raise UserError(f"cannot decode image {describe(name, file)} ({result}): "
                                "replace or remove the file")
            arrays.append(result)
            labels.append(label)
            where.append((name, file))
    first = arrays[0].shape[:2]
    for array, (name, file) in zip(arrays, where, strict=True):
        if array.shape[:2] != first:
            raise UserError(
                f"images of split '{split}' differ in size: {describe(*where[0])} is "
                f"{first[0]}x{first[1]} but {describe(name, file)} is "
                f"{array.shape[0]}x{array.shape[1]} (height x width): pass "
                f"image_size=(height, width) to resize them all")
    return _decode.stack_images(arrays), np.asarray(labels, dtype=np.int64), names
