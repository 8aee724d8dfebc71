"""Element-wise (fine-grained) pruning methods: each small class has one job, ``compute_mask``.

A method looks at one weight tensor and returns a boolean keep-mask of the same shape
(``True`` = kept). Weights already at zero count as the smallest, so pruning again at a higher
level never revives them. :func:`global_magnitude_masks` ranks several tensors together.

Example::

    >>> import torch
    >>> from torchslim.pruning.methods import LevelMethod, ThresholdMethod
    >>> w = torch.tensor([[0.1, -0.5], [0.3, -0.05]])
    >>> LevelMethod(0.5).compute_mask(w)
    tensor([[False,  True],
            [ True, False]])
    >>> ThresholdMethod(0.2).compute_mask(w).sum().item()
    2
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..core.errors import UserError
from .schedules import check_sparsity


def _prune_smallest(scores: torch.Tensor, count: int) -> torch.Tensor:
    """Keep-mask that drops the ``count`` smallest scores (ties broken by position)."""
    mask = torch.ones(scores.numel(), dtype=torch.bool, device=scores.device)
    if count > 0:
        order = torch.argsort(scores.flatten(), stable=True)
        mask[order[:count]] = False
    return mask.view(scores.shape)


def pruned_count(numel: int, sparsity: float) -> int:
    """How many of ``numel`` entries a level of ``sparsity`` prunes (rounded to nearest)."""
    return min(numel, int(round(check_sparsity(sparsity) * numel)))


class LevelMethod:
    """Prune the ``sparsity`` fraction of smallest-magnitude weights of the tensor.

    This is Distiller's sparsity-level pruner and the per-layer percentile method of the course
    labs (``|w| < percentile(|w|, 100 * sparsity)``), with an exact count instead of a cut value.
    """

    def __init__(self, sparsity: float) -> None:
        self.sparsity = check_sparsity(sparsity)

    def compute_mask(self, weight: torch.Tensor) -> torch.Tensor:
        return _prune_smallest(weight.detach().abs(), pruned_count(weight.numel(), self.sparsity))


class ThresholdMethod:
    """Prune every weight with ``|w| <= threshold`` (Distiller's magnitude pruner)."""

    def __init__(self, threshold: float) -> None:
        if threshold < 0:
            raise UserError(f"threshold must be >= 0, got {threshold}")
        self.threshold = float(threshold)

    def compute_mask(self, weight: torch.Tensor) -> torch.Tensor:
        return weight.detach().abs() > self.threshold


class SensitivityMethod:
    """Prune weights below ``sensitivity`` standard deviations of the tensor (Han et al. 2015,
    Distiller's ``SensitivityPruner``: threshold = s * std(w))."""

    def __init__(self, sensitivity: float) -> None:
        if sensitivity < 0:
            raise UserError(f"sensitivity must be >= 0, got {sensitivity}")
        self.sensitivity = float(sensitivity)

    def compute_mask(self, weight: torch.Tensor) -> torch.Tensor:
        threshold = self.sensitivity * weight.detach().std().item()
        return ThresholdMethod(threshold).compute_mask(weight)


class RandomMethod:
    """Prune a random ``sparsity`` fraction of the weights (already-zero weights go first)."""

    def __init__(self, sparsity: float, generator: torch.Generator | None = None) -> None:
        self.sparsity = check_sparsity(sparsity)
        self.generator = generator

    def compute_mask(self, weight: torch.Tensor) -> torch.Tensor:
        # drawn on the CPU (the same draws on any device), then beside the weight
        noise = (torch.rand(weight.shape, generator=self.generator) + 1.0).to(weight.device)
        scores = torch.where(weight.detach() == 0, torch.zeros_like(noise), noise)
        return _prune_smallest(scores, pruned_count(weight.numel(), self.sparsity))


def global_magnitude_masks(
    weights: Mapping[str, torch.Tensor], sparsity: float
) -> dict[str, torch.Tensor]:
    """Keep-masks pruning the ``sparsity`` fraction of smallest magnitudes over all ``weights``
    ranked together (global L1 pruning): layers with small weights lose more."""
    names = list(weights)
    flat = torch.cat([weights[n].detach().abs().flatten() for n in names])
    keep = _prune_smallest(flat, pruned_count(flat.numel(), sparsity))
    masks, start = {}, 0
    for name in names:
        size = weights[name].numel()
        masks[name] = keep[start : start + size].view(weights[name].shape)
        start += size
    return masks
