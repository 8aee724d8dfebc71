"""One entry point for every data source: a built-in name or a path.

Example::

    >>> from torchslim.data import load_dataset
    >>> load_dataset("digits", "train", image_size=(16, 16)).image_shape
    (1, 16, 16)
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..core.errors import UserError, did_you_mean
from ._decode import check_image_size, resize
from .datasets import ArrayDataset
from .digits import load_digits
from .imagefolder import load_image_folder

#: Names :func:`load_dataset` knows besides paths.
BUILTIN_DATASETS = ("digits",)


def load_dataset(
    spec: str,
    split: str,
    *,
    image_size: tuple[int, int] | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> ArrayDataset:
    """``"digits"`` (see :func:`load_digits`) or a path (see :func:`load_image_folder`).

    ``image_size`` = (height, width) resizes the images bilinearly, for the digits too.

    Example::

        >>> ds = load_dataset("digits", "test")
        >>> len(ds), ds.classes[-1]
        (450, '9')
    """
    if spec == "digits":
        dataset = load_digits(split)
        size = check_image_size(image_size)
        return dataset if size is None else _resized(dataset, size)
    if not Path(spec).expanduser().exists():
        raise UserError(f"data '{spec}' not found{did_you_mean(spec, BUILTIN_DATASETS)}: give a "
                        f"directory or .tar.gz in <split>/<class>/ layout, or 'digits'")
    return load_image_folder(
        spec, split, image_size=image_size, cache_dir=cache_dir, progress=progress
    )


def _resized(dataset: ArrayDataset, size: tuple[int, int]) -> ArrayDataset:
    images = dataset.images.numpy()
    mode = "L" if images.shape[3] == 1 else "RGB"
    out = np.stack([
        np.asarray(resize(Image.fromarray(image.squeeze(2) if mode == "L" else image, mode), size))
        for image in images
    ])
    out = out[..., None] if mode == "L" else out
    return ArrayDataset(torch.from_numpy(out), dataset.labels, dataset.classes,
                        dataset.augmentation)
