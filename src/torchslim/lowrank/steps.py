"""Factorization as a schedule step (see :mod:`torchslim.core.steps`): on its policy's first
epoch the step replaces the selected layers in place (:func:`~torchslim.lowrank.factorize`),
records the edit (a resumed run and a saved model rebuild the factorized structure), and moves
the optimizer onto the new weights; the remaining epochs fine-tune them. In one schedule with
a :class:`~torchslim.distill.KnowledgeDistillation` step, the factorized model learns from the
dense one.

Example::

    >>> import torch
    >>> from torchslim.lowrank.steps import FactorizationStep
    >>> from torchslim.models import create_model
    >>> from torchslim.schedule import CompressionScheduler, Policy
    >>> model = create_model("demo_cnn")
    >>> optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    >>> schedule = CompressionScheduler(model)
    >>> schedule.add(FactorizationStep("tucker2", ratio=0.5, exclude=["features.0.0"]),
    ...              Policy(epochs=[0]), "lowrank")
    >>> schedule.on_epoch_begin(0, optimizer=optimizer)
    >>> schedule.edits[0]["layers"]["features.1.0"]
    {'method': 'tucker2', 'ranks': [18, 36]}
    >>> any(p is model.features[1][0][1].weight for p in optimizer.param_groups[0]["params"])
    True
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ..core.modules import sync_optimizer
from ..core.steps import Step, StepContext
from .factorize import factorize, plan_factorization


class FactorizationStep(Step):
    """Factorize the scheduled model once, on the policy's first epoch (arguments as
    :func:`~torchslim.lowrank.factorize`)."""

    kind = "factorizer"

    def __init__(
        self,
        method: str = "svd",
        *,
        rank: int | tuple[int, int] | None = None,
        energy: float | None = None,
        ratio: float | None = None,
        layers: Sequence[str] | None = None,
        exclude: Iterable[str] = (),
        reinitialize: bool = False,
    ) -> None:
        self.options = {"rank": rank, "energy": energy, "ratio": ratio, "layers": layers,
                        "exclude": list(exclude), "reinitialize": reinitialize}
        self.method = method
        self.done = False

    def attach(self, ctx: StepContext) -> None:
        # Impossible ranks and unknown layer names fail when the step is scheduled, before
        # any data loads (a recipe error then names the file and line).
        options = {k: v for k, v in self.options.items() if k != "reinitialize"}
        plan_factorization(ctx.model, self.method, **options)

    #: on_epoch_begin leaves what it does in the model, masks, edits or state_dict
    resumes_mid_epoch = True

    def on_epoch_begin(self, ctx: StepContext) -> dict[str, Any] | None:
        if self.done:
            return None
        before = {id(p) for p in ctx.model.parameters()}
        params = sum(p.numel() for p in ctx.model.parameters())
        record = factorize(ctx.model, self.method, **self.options)
        ctx.edits.append(record)
        if ctx.optimizer is not None:
            sync_optimizer(ctx.optimizer, ctx.model, before)
        self.done = True
        return {"factorized": len(record["layers"]), "params_before": params,
                "params_after": sum(p.numel() for p in ctx.model.parameters())}

    def state_dict(self) -> dict[str, Any]:
        return {"done": self.done}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.done = bool(state.get("done", self.done))
