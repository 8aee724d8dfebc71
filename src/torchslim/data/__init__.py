"""Datasets, loaders and batch transforms: everything between image files and a model.

Sources: :func:`load_image_folder` (a folder or ``.tar.gz`` in ``<split>/<class>/<image>`` layout,
decoded once then cached as ``.npy``), :func:`load_digits` (bundled with scikit-learn), and
:func:`load_dataset` that picks between them. All return an :class:`ArrayDataset`; a
:class:`BatchLoader` turns one into normalised, optionally shuffled and augmented batches.

Example::

    >>> from torchslim.data import BatchLoader, load_dataset
    >>> loader = BatchLoader(load_dataset("digits", "train"), 64, normalization="digits")
    >>> x, y = next(iter(loader))
    >>> x.shape, y.dtype
    (torch.Size([64, 1, 8, 8]), torch.int64)
"""

from .datasets import ArrayDataset
from .digits import load_digits
from .imagefolder import load_image_folder
from .load import load_dataset
from .loader import BatchLoader
from .transforms import (
    AUGMENTATIONS,
    NORMALIZATION,
    augment,
    augment_batch,
    check_augmentation,
    get_normalization,
    normalize,
)

__all__ = [
    "AUGMENTATIONS",
    "NORMALIZATION",
    "ArrayDataset",
    "BatchLoader",
    "augment",
    "augment_batch",
    "check_augmentation",
    "get_normalization",
    "load_dataset",
    "load_digits",
    "load_image_folder",
    "normalize",
]
