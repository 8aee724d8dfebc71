"""Normalisation presets and the training augmentations, on whole batches in torch.

Augmentations have names (see :data:`AUGMENTATIONS`): ``"none"`` and ``"crop-flip"`` (the CIFAR
recipe, :func:`augment_batch`). A data set names its own default in
:attr:`ArrayDataset.augmentation <torchslim.data.ArrayDataset>` (crop-flip for image folders,
none for the digits, whose mirror images are other digits or none).

Example::

    >>> import torch
    >>> from torchslim.data import augment_batch, get_normalization, normalize
    >>> x = torch.rand(8, 3, 32, 32)
    >>> y = augment_batch(x, torch.Generator().manual_seed(0))
    >>> normalize(y, *get_normalization("cifar")).shape
    torch.Size([8, 3, 32, 32])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from ..core.errors import UserError, did_you_mean

Stats = tuple[tuple[float, ...], tuple[float, ...]]

#: ``name -> (mean, std)`` per channel, for pixels in [0, 1]. "cifar" uses the ImageNet
#: statistics (that is what the pretrained CIFAR ResNets expect), "digits" the mean and std
#: of the 1,347 digits of the training split (test images never set them), and "none" is the
#: identity (mean 0, std 1). Models trained with Distiller saw its own: "distiller_cifar"
#: (0.5 mean and std per channel) and "mnist" (``distiller/apputils/data_loaders.py``).
NORMALIZATION: dict[str, Stats] = {
    "cifar": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "distiller_cifar": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "mnist": ((0.1307,), (0.3081,)),
    "digits": ((0.305,), (0.376,)),
    "none": ((0.0,), (1.0,)),
}


def get_normalization(name: str) -> Stats:
    """The ``(mean, std)`` preset called ``name`` (see :data:`NORMALIZATION`).

    Example::

        >>> get_normalization("digits")
        ((0.305,), (0.376,))
    """
    if name not in NORMALIZATION:
        raise UserError(f"unknown normalization {name!r}{did_you_mean(name, NORMALIZATION)}: "
                        f"choose one of {', '.join(NORMALIZATION)}")
    return NORMALIZATION[name]


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(x - mean) / std`` per channel for a float NCHW batch (one value applies to all channels).

    Example::

        >>> normalize(torch.ones(1, 2, 1, 1), (0.5,), (0.25,)).flatten().tolist()
        [2.0, 2.0]
    """
    channels = x.shape[1]
    if len(mean) != len(std) or len(mean) not in (1, channels):
        raise UserError(f"normalization with mean {tuple(mean)} and std {tuple(std)} does not fit "
                        f"images with {channels} channel(s): use a preset or statistics with "
                        f"{channels} value(s) each")
    mean_t = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    std_t = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - mean_t) / std_t


#: Augmentation name -> what it does (the names ``BatchLoader(augment=...)`` and
#: ``torchslim train --augment`` take, besides ``auto`` = the data set's own).
AUGMENTATIONS: dict[str, str] = {
    "none": "no augmentation",
    "crop-flip": "random crop after 4-pixel zero padding, then random horizontal flip",
}


def check_augmentation(name: str) -> str:
    """``name`` if it is one of :data:`AUGMENTATIONS`, else a :class:`UserError`.

    Example::

        >>> check_augmentation("crop-flip")
        'crop-flip'
    """
    if not isinstance(name, str) or name not in AUGMENTATIONS:
        hint = did_you_mean(name, AUGMENTATIONS) if isinstance(name, str) else ""
        raise UserError(f"unknown augmentation {name!r}{hint}: choose one of "
                        f"{', '.join(AUGMENTATIONS)}")
    return name


def augment(name: str, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Apply the augmentation called ``name`` to the float NCHW batch ``x``.

    Example::

        >>> x = torch.rand(2, 1, 8, 8)
        >>> augment("none", x, torch.Generator()).equal(x)
        True
    """
    function = _AUGMENT_FUNCTIONS[check_augmentation(name)]
    return function(x, generator) if function is not None else x


def augment_batch(
    x: torch.Tensor, generator: torch.Generator, padding: int = 4, flip: bool = True
) -> torch.Tensor:
    """Random crop after zero-padding by ``padding`` pixels, then random horizontal flip.

    Every image of the NCHW batch gets its own crop offset and flip, drawn from ``generator``
    (a CPU generator), so the result is a pure function of the batch and the generator state.

    Example::

        >>> x = torch.arange(16.0).view(1, 1, 4, 4)
        >>> augment_batch(x, torch.Generator().manual_seed(0), padding=0, flip=False).equal(x)
        True
    """
    if padding < 0:
        raise UserError(f"augmentation padding must be >= 0, got {padding}")
    n, _, height, width = x.shape
    offsets = torch.randint(0, 2 * padding + 1, (2, n), generator=generator)
    flips = torch.rand(n, generator=generator) < 0.5
    rows = offsets[0, :, None] + torch.arange(height)  # (N, H) rows of the padded image
    cols = offsets[1, :, None] + torch.arange(width)  # (N, W)
    if flip:
        cols = torch.where(flips[:, None], cols.flip(1), cols)
    padded = F.pad(x, (padding, padding, padding, padding)) if padding else x
    index = torch.arange(n)[:, None, None]
    rows, cols, index = (t.to(x.device) for t in (rows, cols, index))
    # Advanced indexing on (N, H, W) with channels last, then back to NCHW.
    out = padded.permute(0, 2, 3, 1)[index, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


_AUGMENT_FUNCTIONS: dict[str, Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None] = {
    "none": None,
    "crop-flip": augment_batch,
}
