"""Pruning with splicing (dynamic network surgery, Guo et al. 2016; Distiller's
``SplicingPruner``): connections are cut when their magnitude falls below a low threshold and
spliced back when it rises above a high one, so a pruning mistake can be undone.

Every weight trains all along: the forward pass sees ``weight * mask`` while the gradient reaches
every entry (a straight-through parametrization), and at each firing epoch the mask is updated
by the surgery function of the paper's equation (3)::

    mask = 0      where |w| <  a
    mask = mask   where a <= |w| < b
    mask = 1      where b <= |w|

with ``a, b = (mean|w| + sensitivity * std|w|) * (low_thresh_mult, hi_thresh_mult)``, the
statistics taken once from the weight before pruning; ``sensitivity_multiplier`` grows the
sensitivity linearly with the epochs since the first firing. When training ends the masks are
baked into the weights (plain parameters again, the cut ones exactly zero).

Example::

    >>> import torch
    >>> from torchslim.pruning.splicing import SplicingStep
    >>> from torchslim.schedule import CompressionScheduler, Policy
    >>> model = torch.nn.Sequential(torch.nn.Linear(64, 64))
    >>> schedule = CompressionScheduler(model)
    >>> schedule.add(SplicingStep({"0.weight": 0.5}, 0.9, 1.1), Policy(0), "surgery")
    >>> schedule.on_epoch_begin(0)
    >>> schedule.finish()
    >>> 0.3 < float((model[0].weight == 0).float().mean()) < 0.7
    True
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..core.errors import UserError
from ..core.names import resolve_values
from ..core.steps import Step, StepContext


class _StraightThroughMask(nn.Module):
    """``w * mask`` forward, the full gradient backward (every weight keeps training)."""

    def __init__(self, shape: torch.Size, device: torch.device) -> None:
        super().__init__()
        self.register_buffer("mask", torch.ones(shape, device=device))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + (weight * self.mask - weight).detach()


class SplicingStep(Step):
    """Dynamic network surgery on the weights ``sensitivities`` names (patterns, ``'*'``
    included): see the module docstring."""

    kind = "pruner"

    def __init__(self, sensitivities: Mapping[str, float], low_thresh_mult: float,
                 hi_thresh_mult: float, sensitivity_multiplier: float = 0.0) -> None:
        if not 0 < low_thresh_mult <= hi_thresh_mult:
            raise UserError(f"need 0 < low_thresh_mult <= hi_thresh_mult, got "
                            f"{low_thresh_mult} and {hi_thresh_mult}")
        if sensitivity_multiplier < 0:
            raise UserError(f"sensitivity_multiplier must be >= 0, got {sensitivity_multiplier}")
        self.sensitivities = dict(sensitivities)
        self.low, self.high = float(low_thresh_mult), float(hi_thresh_mult)
        self.multiplier = float(sensitivity_multiplier)
        self.stats: dict[str, tuple[float, float]] = {}
        self.first_epoch: int | None = None
        self.targets: dict[str, tuple[nn.Module, float]] = {}

    def attach(self, ctx: StepContext) -> None:
        modules = dict(ctx.model.named_modules())
        for name, sensitivity in resolve_values(ctx.model, self.sensitivities).items():
            owner, _, attribute = name.rpartition(".")
            module = modules[owner]
            if attribute != "weight":
                raise UserError(f"splicing prunes weights; '{name}' is not a layer's weight")
            weight = module.weight
            self.stats[name] = (float(weight.detach().abs().mean()),
                                float(weight.detach().abs().std()))
            parametrize.register_parametrization(
                module, "weight", _StraightThroughMask(weight.shape, weight.device))
            self.targets[name] = (module, float(sensitivity))

    def _masks(self) -> dict[str, tuple[nn.Module, torch.Tensor]]:
        return {name: (module, module.parametrizations.weight[0].mask)
                for name, (module, _) in self.targets.items()
                if parametrize.is_parametrized(module, "weight")}

    #: on_epoch_begin leaves what it does in the model, masks, edits or state_dict
    resumes_mid_epoch = True

    def on_epoch_begin(self, ctx: StepContext) -> dict[str, Any]:
        if self.first_epoch is None:
            self.first_epoch = ctx.epoch
        growth = (ctx.epoch - self.first_epoch) * self.multiplier + 1.0
        sparsity = {}
        for name, (module, mask) in self._masks().items():
            mean, std = self.stats[name]
            level = (mean + std * self.targets[name][1] * growth)
            weight = module.parametrizations.weight.original.detach().abs()
            with torch.no_grad():
                mask.copy_(torch.where(weight < level * self.low, torch.zeros_like(mask), mask))
                mask.copy_(torch.where(weight >= level * self.high, torch.ones_like(mask), mask))
            sparsity[name] = round(1.0 - float(mask.mean()), 6)
        return {"sparsity": sparsity}

    def finish(self) -> None:
        for module, _ in self._masks().values():
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)

    def state_dict(self) -> dict[str, Any]:
        return {"stats": {k: list(v) for k, v in self.stats.items()},
                "first_epoch": self.first_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stats.update({k: (float(v[0]), float(v[1])) for k, v in state["stats"].items()})
        self.first_epoch = state.get("first_epoch")
