"""Gradual threshold pruning of recurrent networks (Narang et al. 2017, "Exploring Sparsity in
Recurrent Neural Networks"; Distiller's ``BaiduRNNPruner``).

Every weight below a threshold ``eps`` is pruned, and ``eps`` grows along the policy: slowly
(slope ``start_slope``) for ``ramp_epoch_offset`` epochs, then ``ramp_slope_mult`` times faster.
With the policy's ``starting_epoch`` *s*, ``ending_epoch`` *e* and ``frequency`` *f*, the ramp
epoch *r = s + ramp_epoch_offset* and the paper's *q* (the weight at the 90th percentile of
``|w|`` in a trained model)::

    start_slope = 2 q f / (2 (r - s) + 3 (e - r)),   ramp_slope = start_slope * ramp_slope_mult
    eps(c) = start_slope (c - s + 1) / f                                      for c < r
    eps(c) = (start_slope (r - s + 1) + ramp_slope (c - r + 1)) / f           for c >= r

As in Distiller, the threshold moves per firing epoch rather than per training step (the paper
prunes every few steps), and a pruned weight stays pruned.

Example::

    >>> import torch
    >>> from torchslim.pruning.rnn import BaiduRNNStep
    >>> from torchslim.schedule import CompressionScheduler, Policy
    >>> model = torch.nn.LSTM(8, 16)
    >>> schedule = CompressionScheduler(model)
    >>> step = BaiduRNNStep({"weight_hh_l0": 0.2}, ramp_epoch_offset=3, ramp_slope_mult=2)
    >>> schedule.add(step, Policy(starting_epoch=0, ending_epoch=10, frequency=1), "rnn")
    >>> eps = step.threshold(9, Policy(starting_epoch=0, ending_epoch=10), q=0.2)
    >>> round(eps, 4)
    0.2667
    >>> schedule.on_epoch_begin(9)
    >>> bool(((model.weight_hh_l0 == 0) == (model.weight_hh_l0.abs() <= eps)).all())
    True
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..core.errors import UserError
from ..core.names import resolve_values
from ..core.steps import Step, StepContext
from .masks import masks_of
from .methods import ThresholdMethod
from .pruners import _current, _keep_pruned


class BaiduRNNStep(Step):
    """Prune the weights ``q`` names (patterns -> the paper's *q* of each) below the growing
    threshold of the module docstring. Needs a policy with an ``ending_epoch``."""

    kind = "pruner"

    def __init__(self, q: Mapping[str, float], ramp_epoch_offset: int,
                 ramp_slope_mult: float) -> None:
        if any(v <= 0 for v in q.values()):
            raise UserError(f"q must be > 0 for every weight, got {dict(q)}")
        if ramp_epoch_offset < 0:
            raise UserError(f"ramp_epoch_offset must be >= 0, got {ramp_epoch_offset}")
        if ramp_slope_mult < 0:
            raise UserError(f"ramp_slope_mult must be >= 0, got {ramp_slope_mult}")
        self.q = dict(q)
        self.ramp_epoch_offset = int(ramp_epoch_offset)
        self.ramp_slope_mult = float(ramp_slope_mult)

    def threshold(self, epoch: int, policy: Any, q: float = 1.0) -> float:
        """``eps`` at ``epoch`` under ``policy`` (starting_epoch, ending_epoch, frequency) for a
        weight with this ``q``."""
        if policy is None or getattr(policy, "ending_epoch", None) is None:
            raise UserError("BaiduRNNPruner grows its threshold towards the policy's end: give "
                            "its policy an ending_epoch")
        start, end, freq = policy.starting_epoch, policy.ending_epoch, policy.frequency
        ramp = start + self.ramp_epoch_offset
        if ramp > end:
            raise UserError(f"ramp_epoch_offset ({self.ramp_epoch_offset}) must end the slow "
                            f"start within the policy: at most ending_epoch - starting_epoch "
                            f"({end - start})")
        start_slope = 2 * q * freq / (2 * (ramp - start) + 3 * (end - ramp))
        if epoch < ramp:
            return start_slope * (epoch - start + 1) / freq
        ramp_slope = start_slope * self.ramp_slope_mult
        return (start_slope * (ramp - start + 1) + ramp_slope * (epoch - ramp + 1)) / freq

    def attach(self, ctx: StepContext) -> None:
        resolve_values(ctx.model, self.q)  # a pattern that matches nothing fails now
        self.threshold(ctx.policy.first if ctx.policy is not None else 0, ctx.policy)
        masks_of(ctx)

    #: on_epoch_begin leaves what it does in the model, masks, edits or state_dict
    resumes_mid_epoch = True

    def on_epoch_begin(self, ctx: StepContext) -> dict[str, Any]:
        masks = masks_of(ctx)
        sparsity, thresholds = {}, {}
        for name, q in resolve_values(ctx.model, self.q).items():
            eps = self.threshold(ctx.epoch, ctx.policy, q)
            _keep_pruned(masks, name, ThresholdMethod(eps).compute_mask(_current(masks, name)))
            sparsity[name] = round(masks.sparsity(name), 6)
            thresholds[name] = round(eps, 6)
        return {"sparsity": sparsity, "threshold": thresholds}
