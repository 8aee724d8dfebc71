"""Quantization as schedule steps (see :mod:`torchslim.core.steps`): quantization-aware training
and calibration inside a compression schedule, combinable with pruning (pruned weights stay
zero: the masks are re-applied after every optimizer step, and zero rounds to zero).

:class:`QuantizationStep` puts quantizers into the model in place on its policy's first epoch
(BatchNorms kept; the folded weight is quantized) and records a ``"quantization"`` edit, so a
resumed run and a saved model rebuild the quantized model. Then every step trains through the
quantizers (straight-through estimator); ranges follow the data until ``freeze_observers_epoch``,
BatchNorm statistics until ``freeze_bn_epoch``; learned quantizers (LSQ steps, PACT clipping
levels) join the optimizer. With ``calibration_batches`` the quantizers first only observe that
many minibatches (post-training calibration), then quantize.

Example::

    >>> import torch
    >>> from torchslim.models import create_model
    >>> from torchslim.quantization import QuantConfig, is_prepared
    >>> from torchslim.quantization.steps import QuantizationStep
    >>> from torchslim.schedule import CompressionScheduler, Policy
    >>> model = create_model("demo_cnn")
    >>> optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    >>> schedule = CompressionScheduler(model, example_input=torch.zeros(1, 1, 8, 8))
    >>> schedule.add(QuantizationStep(QuantConfig(method="lsq", fold_bn=False)), Policy(0), "q")
    >>> schedule.on_epoch_begin(0, optimizer=optimizer)
    >>> is_prepared(model), schedule.edits[0]["kind"], len(optimizer.param_groups)
    (True, 'quantization', 2)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..core.errors import UserError
from ..core.modules import sync_optimizer
from ..core.steps import Step, StepContext
from .config import QuantConfig
from .fake import Quantizer, pact_penalty
from .prepare import is_prepared, prepare
from .record import quantization_record


class QuantizationStep(Step):
    """Quantization-aware training, or calibration then quantization (see the module
    docstring)."""

    kind = "quantizer"

    def __init__(
        self,
        config: QuantConfig,
        *,
        freeze_observers_epoch: int | None = None,
        freeze_bn_epoch: int | None = None,
        pact_strength: float = 0.0,
        calibration_batches: int = 0,
    ) -> None:
        if pact_strength < 0:
            raise UserError(f"the PACT L2 strength must be >= 0, got {pact_strength}")
        if calibration_batches < 0:
            raise UserError(f"calibration_batches must be >= 0, got {calibration_batches}")
        self.config = config
        self.freeze_observers_epoch = freeze_observers_epoch
        self.freeze_bn_epoch = freeze_bn_epoch
        self.pact_strength = pact_strength
        self.calibration_batches = calibration_batches
        self.calibrated = calibration_batches == 0

    def _prepare(self, ctx: StepContext) -> None:
        if ctx.example_input is None:
            raise UserError("quantization traces the model: create the CompressionScheduler "
                            "with example_input= (one batch the model accepts)")
        before = {id(p) for p in ctx.model.parameters()}
        prepare(ctx.model, ctx.example_input.to(next(ctx.model.parameters()).device),
                self.config, inplace=True)
        ctx.edits.append(quantization_record(ctx.model))
        if ctx.optimizer is not None:
            # Folded weights replace the originals; learned steps (LSQ, PACT) get no decay.
            learned = [p for q in self._quantizers(ctx.model) for p in q.parameters()]
            sync_optimizer(ctx.optimizer, ctx.model, before, learned, {"weight_decay": 0.0})

    def _quantizers(self, model: nn.Module) -> list[Quantizer]:
        return [m for m in model.modules() if isinstance(m, Quantizer)]

    def _set_phase(self, ctx: StepContext) -> None:
        frozen = (self.freeze_observers_epoch is not None
                  and ctx.epoch >= self.freeze_observers_epoch)
        for quantizer in self._quantizers(ctx.model):
            quantizer.quantizing = self.calibrated
            quantizer.observing = not frozen and quantizer.observing_allowed()

    def on_epoch_begin(self, ctx: StepContext) -> dict[str, Any]:
        if not is_prepared(ctx.model):
            self._prepare(ctx)
        self._set_phase(ctx)
        return {"quantizers": len(self._quantizers(ctx.model)),
                "observing": any(q.observing for q in self._quantizers(ctx.model))}

    def on_epoch_resume(self, ctx: StepContext) -> None:
        if not is_prepared(ctx.model):
            self._prepare(ctx)
        self._set_phase(ctx)  # observing and quantizing are flags, not checkpointed state

    def on_minibatch_begin(
        self, ctx: StepContext, minibatch_id: int, minibatches_per_epoch: int
    ) -> None:
        if not self.calibrated and minibatch_id >= self.calibration_batches:
            self._end_calibration(ctx)
        if self.freeze_bn_epoch is not None and ctx.epoch >= self.freeze_bn_epoch:
            for module in ctx.model.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()

    def on_minibatch_end(
        self, ctx: StepContext, minibatch_id: int, minibatches_per_epoch: int
    ) -> None:
        # An epoch shorter than calibration_batches ends calibration with its last minibatch:
        # calibrating quantizers record in any mode, so the evaluation that follows the epoch
        # (the test split) would add to the ranges.
        if not self.calibrated and 0 < minibatches_per_epoch <= minibatch_id + 1:
            self._end_calibration(ctx)

    def _end_calibration(self, ctx: StepContext) -> None:
        self.calibrated = True
        for quantizer in self._quantizers(ctx.model):
            quantizer.freeze()
        self._set_phase(ctx)

    def before_backward_pass(
        self, ctx: StepContext, loss: torch.Tensor, **batch: Any
    ) -> torch.Tensor | None:
        if self.pact_strength > 0:
            return pact_penalty(ctx.model, self.pact_strength)
        return None

    def state_dict(self) -> dict[str, Any]:
        return {"calibrated": self.calibrated}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.calibrated = bool(state.get("calibrated", self.calibrated))
