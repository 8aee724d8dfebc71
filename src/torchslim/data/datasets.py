"""The in-memory dataset every loader in :mod:`torchslim.data` returns.

Example::

    >>> import torch
    >>> from torchslim.data import ArrayDataset
    >>> images = torch.zeros(4, 8, 8, 3, dtype=torch.uint8)
    >>> ds = ArrayDataset(images, torch.tensor([0, 1, 1, 0]), ["cat", "dog"])
    >>> len(ds), ds.num_classes, ds.image_shape, ds.augmentation
    (4, 2, (3, 8, 8), 'none')
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from ..core.errors import UserError
from .transforms import check_augmentation


class ArrayDataset(Dataset):
    """Images (uint8 NHWC, C=1 for grayscale) with int64 labels and class names, all in memory.

    ``ds[i]`` is ``(float32 CHW tensor in [0, 1], int label)``; ``images``, ``labels`` and
    ``classes`` stay available as attributes for whole-array work (see :class:`BatchLoader`).
    ``augmentation`` names the training augmentation that suits the data (see
    :data:`~torchslim.data.AUGMENTATIONS`): what ``BatchLoader(augment="auto")`` and
    ``torchslim train`` apply unless told otherwise. Image folders say ``"crop-flip"``, the
    digits ``"none"``; datasets derived from this one (:meth:`subset`, resizing) keep it.

    Example::

        >>> import torch
        >>> ds = ArrayDataset(torch.full((2, 4, 4, 1), 255, dtype=torch.uint8),
        ...                   torch.tensor([1, 0]), ["a", "b"])
        >>> x, y = ds[0]
        >>> x.shape, x.max().item(), y
        (torch.Size([1, 4, 4]), 1.0, 1)
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        classes: list[str],
        augmentation: str = "none",
    ):
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
            raise UserError(
                f"images must be a uint8 tensor of shape (N, H, W, C), got {_describe(images)}"
            )
        if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or labels.is_floating_point():
            raise UserError(
                f"labels must be an integer tensor of shape (N,), got {_describe(labels)}"
            )
        if len(labels) != len(images):
            raise UserError(
                f"got {len(images)} images but {len(labels)} labels: give one label per image"
            )
        classes = [] if isinstance(classes, str) else list(classes)
        if not classes or not all(isinstance(name, str) for name in classes):
            raise UserError(f"classes must be a non-empty list of names, got {classes!r}")
        labels = labels.to(torch.int64)
        if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
            raise UserError(
                f"labels must lie in 0..{len(classes) - 1} (one per class name), "
                f"got {labels.min().item()}..{labels.max().item()}"
            )
        self.images = images
        self.labels = labels
        self.classes = classes
        self.augmentation = check_augmentation(augmentation)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index].permute(2, 0, 1).to(torch.float32).div_(255)
        return image, int(self.labels[index])

    @property
    def num_classes(self) -> int:
        """Number of class names (labels run from 0 to ``num_classes - 1``)."""
        return len(self.classes)

    def subset(self, count: int, seed: int = 0) -> ArrayDataset:
        """``count`` images drawn at random (seeded, in their original order): a fair sample
        even when the images are stored class by class, as image folders are."""
        if count >= len(self):
            return self
        generator = torch.Generator().manual_seed(seed)
        keep = torch.randperm(len(self), generator=generator)[:count].sort().values
        return ArrayDataset(self.images[keep], self.labels[keep], self.classes, self.augmentation)

    def hold_out(self, fraction: float, seed: int = 0) -> tuple[ArrayDataset, ArrayDataset]:
        """``(rest, held_out)``: ``fraction`` of every class's images drawn at random (seeded)
        and set aside, e.g. to validate on while training on the rest (Distiller's
        ``--validation-split``); both keep the original order.

        >>> ds = ArrayDataset(torch.zeros(8, 2, 2, 1, dtype=torch.uint8),
        ...                   torch.tensor([0, 0, 0, 0, 1, 1, 1, 1]), ["a", "b"])
        >>> rest, held = ds.hold_out(0.25)
        >>> len(rest), held.labels.tolist()
        (6, [0, 1])
        """
        if not 0 < fraction < 1:
            raise UserError(f"the held-out fraction must be in (0, 1), got {fraction}")
        generator = torch.Generator().manual_seed(seed)
        held = []
        for label in range(self.num_classes):
            members = torch.nonzero(self.labels == label).flatten()
            count = round(fraction * len(members))
            held.append(members[torch.randperm(len(members), generator=generator)[:count]])
        chosen = torch.cat(held).sort().values
        if len(chosen) == 0 or len(chosen) == len(self):
            raise UserError(f"holding out {fraction:g} of {len(self)} images leaves "
                            f"{'nothing to hold out' if len(chosen) == 0 else 'nothing to train'}"
                            ": choose another fraction")
        mask = torch.zeros(len(self), dtype=torch.bool)
        mask[chosen] = True
        return (ArrayDataset(self.images[~mask], self.labels[~mask], self.classes,
                             self.augmentation),
                ArrayDataset(self.images[mask], self.labels[mask], self.classes, self.augmentation))

    def first_per_class(self, count: int) -> ArrayDataset:
        """The first ``count`` images of every class, in file order (a balanced, repeatable
        calibration set; every image when ``count`` covers them all).

        >>> ds = ArrayDataset(torch.zeros(6, 2, 2, 1, dtype=torch.uint8),
        ...                   torch.tensor([0, 0, 0, 1, 1, 1]), ["a", "b"])
        >>> ds.first_per_class(2).labels.tolist()
        [0, 0, 1, 1]
        """
        if count < 1:
            raise UserError(f"images per class must be at least 1, got {count}")
        keep = torch.cat([
            torch.nonzero(self.labels == label).flatten()[:count]
            for label in range(self.num_classes)
        ]).sort().values
        return ArrayDataset(self.images[keep], self.labels[keep], self.classes, self.augmentation)

    def select_classes(self, names: list[str]) -> ArrayDataset:
        """Only the images of the classes ``names``, relabelled ``0..len(names) - 1`` in that
        order (a 2-class cat-vs-dog task from CIFAR-10, say).

        >>> ds = ArrayDataset(torch.zeros(4, 2, 2, 1, dtype=torch.uint8),
        ...                   torch.tensor([0, 1, 2, 1]), ["a", "b", "c"])
        >>> two = ds.select_classes(["c", "b"])
        >>> two.classes, two.labels.tolist()
        (['c', 'b'], [1, 0, 1])
        """
        unknown = [name for name in names if name not in self.classes]
        if unknown or not names or len(set(names)) != len(names):
            raise UserError(
                f"classes {names} must be distinct names of this data set's classes "
                f"({', '.join(self.classes)}); unknown: {', '.join(unknown) or 'none'}"
            )
        old = torch.tensor([self.classes.index(name) for name in names])
        keep = torch.nonzero(torch.isin(self.labels, old)).flatten()
        remap = torch.full((len(self.classes),), -1, dtype=torch.int64)
        remap[old] = torch.arange(len(names))
        return ArrayDataset(self.images[keep], remap[self.labels[keep]], list(names),
                            self.augmentation)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image as :meth:`__getitem__` returns it."""
        _, height, width, channels = self.images.shape
        return (channels, height, width)


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"{value.dtype} tensor of shape {tuple(value.shape)}"
    return type(value).__name__
