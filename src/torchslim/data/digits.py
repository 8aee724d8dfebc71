"""scikit-learn's 8x8 handwritten digits as a ready-made dataset (ships with scikit-learn).

Example::

    >>> from torchslim.data import load_digits
    >>> ds = load_digits("test")
    >>> len(ds), ds.image_shape, ds.classes[:3]
    (450, (1, 8, 8), ['0', '1', '2'])
"""

from __future__ import annotations

import numpy as np
import sklearn.datasets
import torch
from sklearn.model_selection import train_test_split

from ..core.errors import UserError, did_you_mean
from .datasets import ArrayDataset

#: The two splits: a fixed, stratified 75 % / 25 % partition of the 1,797 images.
DIGITS_SPLITS = ("train", "test")


def load_digits(split: str) -> ArrayDataset:
    """The ``"train"`` (1,347) or ``"test"`` (450) split of the digits, uint8 pixels 0..255.

    Their default augmentation is ``"none"``: a mirrored digit is another digit or none, and
    8x8 images have little room for crops (with crop and flip, the demo CNN reaches 58 % top-1
    after eight epochs instead of 99 %).

    The original values 0..16 become ``round(v * 255 / 16)``; the split is stratified by label
    with ``random_state=0`` so it never changes, and each split keeps the original sample order.

    Example::

        >>> ds = load_digits("train")
        >>> len(ds), ds.num_classes, ds.images.dtype
        (1347, 10, torch.uint8)
    """
    if split not in DIGITS_SPLITS:
        hint = did_you_mean(split, DIGITS_SPLITS)
        raise UserError(f"the digits data has no split {split!r}{hint}: use 'train' or 'test'")
    bunch = sklearn.datasets.load_digits()
    labels = bunch.target.astype(np.int64)
    train, test = train_test_split(
        np.arange(len(labels)), test_size=0.25, random_state=0, stratify=labels
    )
    index = np.sort(train if split == "train" else test)
    pixels = np.round(bunch.images[index] * (255 / 16)).astype(np.uint8)[..., None]
    return ArrayDataset(
        torch.from_numpy(pixels), torch.from_numpy(labels[index]), [str(d) for d in range(10)],
        augmentation="none",
    )
