"""A fast in-memory batch iterator over an :class:`ArrayDataset` (no worker processes).

Example::

    >>> import torch
    >>> from torchslim.data import ArrayDataset, BatchLoader
    >>> images = torch.zeros(10, 4, 4, 3, dtype=torch.uint8)
    >>> ds = ArrayDataset(images, torch.arange(10) % 2, ["a", "b"])
    >>> loader = BatchLoader(ds, 4, shuffle=True, normalization="cifar")
    >>> [tuple(x.shape) for x, _ in loader]
    [(4, 3, 4, 4), (4, 3, 4, 4), (2, 3, 4, 4)]
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from ..core.errors import UserError
from .datasets import ArrayDataset
from .transforms import Stats, augment, check_augmentation, get_normalization, normalize


class BatchLoader:
    """Yield ``(x, y)``: x float32 NCHW in [0, 1], augmented and normalised; y int64 labels.

    ``shuffle`` draws a new order per epoch and ``augment`` names the augmentation (see
    :data:`AUGMENTATIONS`): ``"none"``, ``"crop-flip"`` (:func:`augment_batch`), ``"auto"`` for
    the dataset's own (:attr:`ArrayDataset.augmentation`), or a bool (True = ``"crop-flip"``).
    Shuffling and augmentation are a pure function of ``(seed, epoch)``, so call
    :meth:`set_epoch` before each epoch (the
    :class:`~torchslim.train.Trainer` does) and a run resumed at an epoch boundary sees the same
    batches as one that never stopped. Without ``set_epoch`` every pass repeats epoch 0.
    ``normalization`` is a preset name (see :data:`NORMALIZATION`), a ``(mean, std)`` pair or None.

    Example::

        >>> ds = ArrayDataset(torch.zeros(5, 2, 2, 1, dtype=torch.uint8),
        ...                   torch.arange(5), ["0", "1", "2", "3", "4"])
        >>> loader = BatchLoader(ds, 2, shuffle=True, seed=1)
        >>> loader.set_epoch(3)
        >>> len(loader), sorted(torch.cat([y for _, y in loader]).tolist())
        (3, [0, 1, 2, 3, 4])
        >>> BatchLoader(ds, 2, augment="auto").augmentation  # the dataset's own
        'none'
    """

    def __init__(
        self,
        dataset: ArrayDataset,
        batch_size: int,
        *,
        shuffle: bool = False,
        augment: bool | str = False,
        normalization: str | tuple | None = None,
        seed: int = 0,
        drop_last: bool = False,
    ):
        if not isinstance(dataset, ArrayDataset):
            raise TypeError(f"BatchLoader needs an ArrayDataset, got {type(dataset).__name__}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise UserError(f"batch size must be a whole number >= 1, got {batch_size!r}")
        self._dataset = dataset
        self._batch_size = batch_size
        self.shuffle = shuffle
        self.augmentation = _resolve_augmentation(augment, dataset)
        self.seed = seed
        self.drop_last = drop_last
        self.epoch = 0
        self._stats = _resolve(normalization)
        if self._stats is not None:  # check the channel count now, not at the first batch
            normalize(torch.zeros(1, dataset.image_shape[0], 1, 1), *self._stats)

    @property
    def dataset(self) -> ArrayDataset:
        """The dataset batches are drawn from."""
        return self._dataset

    @property
    def batch_size(self) -> int:
        """Samples per batch (the last one may be smaller unless ``drop_last``)."""
        return self._batch_size

    def set_epoch(self, epoch: int) -> None:
        """Select the shuffle order and augmentation of ``epoch``."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        n = len(self._dataset)
        return n // self._batch_size if self.drop_last else -(-n // self._batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        state = np.random.SeedSequence([self.seed % 2**64, self.epoch % 2**64])
        generator = torch.Generator().manual_seed(int(state.generate_state(1, np.uint64)[0]))
        n = len(self._dataset)
        order = torch.randperm(n, generator=generator) if self.shuffle else torch.arange(n)
        images, labels = self._dataset.images, self._dataset.labels
        for start in range(0, len(self) * self._batch_size, self._batch_size):
            index = order[start:start + self._batch_size]
            x = images[index].permute(0, 3, 1, 2).contiguous().to(torch.float32).div_(255)
            if self.augmentation != "none":
                x = augment(self.augmentation, x, generator)
            if self._stats is not None:
                x = normalize(x, *self._stats)
            yield x, labels[index]


def _resolve_augmentation(value: bool | str, dataset: ArrayDataset) -> str:
    if value is True or value is False:
        return "crop-flip" if value else "none"
    if value == "auto":
        return dataset.augmentation
    if not isinstance(value, str):
        raise UserError(f"augment must be an augmentation name, 'auto' or a bool, got {value!r}")
    return check_augmentation(value)


def _resolve(normalization: str | tuple | None) -> Stats | None:
    if normalization is None:
        return None
    if isinstance(normalization, str):
        stats = get_normalization(normalization)
    else:
        try:
            mean, std = (tuple(float(v) for v in part) for part in normalization)
        except (TypeError, ValueError):
            raise UserError(f"normalization must be a preset name or a (mean, std) pair of "
                            f"sequences, got {normalization!r}") from None
        if not all(s > 0 for s in std):
            raise UserError(f"normalization std must be positive, got {std}")
        stats = (mean, std)
    return None if stats == get_normalization("none") else stats
