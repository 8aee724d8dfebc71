"""Knowledge distillation as a schedule step (see :mod:`torchslim.core.steps`): on the epochs its
policy names, the loss becomes

    ``student_weight * loss + distill_weight * kd_loss(student, teacher, T) + hint terms``

where ``loss`` is the training loss (cross entropy) and ``kd_loss`` carries the ``T^2`` factor
of Hinton et al. (``t_squared=False`` gives Distiller's form without it). With the defaults
(``distill_weight=0.9``, ``student_weight=1 - distill_weight``) that is
``alpha * T^2 * KL + (1 - alpha) * CE``. The teacher runs on the same (augmented) minibatch as
the student, frozen, in eval mode, without gradients. Combined in one schedule with pruning or
quantization-aware training, it is distillation-aided recovery: the pruned or quantized student
learns from the dense teacher.

Example::

    >>> import torch
    >>> from torchslim.distill import KnowledgeDistillation
    >>> from torchslim.schedule import CompressionScheduler, Policy
    >>> student, teacher = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    >>> schedule = CompressionScheduler(student, example_input=torch.zeros(1, 4))
    >>> schedule.add(KnowledgeDistillation(teacher, temperature=4.0), Policy(0), "kd")
    >>> x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    >>> outputs = student(x)
    >>> ce = torch.nn.functional.cross_entropy(outputs, y)
    >>> loss = schedule.before_backward_pass(0, 0, 1, ce, inputs=x, outputs=outputs, targets=y)
    >>> bool(loss != ce), teacher.weight.grad is None
    (True, True)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..core.errors import UserError
from ..core.modules import eval_mode
from ..core.steps import Step, StepContext
from .hints import Hint, HintLoss
from .losses import check_temperature, kd_loss
from .teacher import Teacher


def _check_outputs(student: nn.Module, teacher: Teacher, example: torch.Tensor) -> None:
    device = next(iter(student.parameters()), example).device
    example = example.to(device)
    with torch.no_grad(), eval_mode(student):
        s = student(example)
    try:
        t = teacher(example)
    except (RuntimeError, ValueError, TypeError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(
            f"the teacher cannot run on the student's inputs of shape "
            f"{tuple(example.shape[1:])} ({first}): distill from a teacher trained on the same "
            "data"
        ) from None
    s_shape = tuple(getattr(s, "shape", ()))
    t_shape = tuple(getattr(t, "shape", ()))
    if s_shape != t_shape:
        raise UserError(
            f"the teacher's output shape {t_shape} differs from the student's {s_shape}: the "
            "teacher must predict the same classes (build it with the student's number of "
            "classes, or load a teacher trained on the same data)"
        )


class KnowledgeDistillation(Step):
    """Distil ``teacher`` into the scheduled model (see the module docstring).

    ``teacher`` is a :class:`~torchslim.distill.Teacher` or a plain model; ``hints`` are
    :class:`~torchslim.distill.Hint` s (their adapters are built when the step is scheduled,
    which needs the scheduler's ``example_input``).
    """

    kind = "distiller"

    def __init__(
        self,
        teacher: Teacher | nn.Module,
        *,
        temperature: float = 4.0,
        distill_weight: float = 0.9,
        student_weight: float | None = None,
        t_squared: bool = True,
        hints: Sequence[Hint] = (),
    ) -> None:
        self.teacher = teacher if isinstance(teacher, Teacher) else Teacher(teacher)
        self.temperature = check_temperature(temperature)
        if distill_weight < 0:
            raise UserError(f"distill_weight must be >= 0, got {distill_weight}")
        if student_weight is None:
            if distill_weight > 1:
                raise UserError(f"distill_weight (alpha) must be at most 1 when student_weight "
                                f"is not given, got {distill_weight}")
            student_weight = 1.0 - distill_weight
        if student_weight < 0:
            raise UserError(f"student_weight must be >= 0, got {student_weight}")
        self.distill_weight = float(distill_weight)
        self.student_weight = float(student_weight)
        self.t_squared = t_squared
        self.hint_specs = list(hints)
        self.hints: HintLoss | None = None
        self._pending_state: dict[str, Any] | None = None

    def attach(self, ctx: StepContext) -> None:
        if self.hints is not None:  # one instance scheduled by two policies
            return
        if ctx.example_input is None:
            if self.hint_specs:
                raise UserError("hint distillation probes the layers' shapes: create the "
                                "CompressionScheduler with example_input= (one batch)")
            return
        _check_outputs(ctx.model, self.teacher, ctx.example_input)
        if self.hint_specs:
            self.hints = HintLoss(ctx.model, self.teacher, self.hint_specs, ctx.example_input)
            if self._pending_state is not None:
                self.hints.load_state_dict(self._pending_state)

    def extra_parameters(self) -> dict[str, nn.Parameter]:
        return dict(self.hints.named_parameters()) if self.hints is not None else {}

    def on_minibatch_begin(self, ctx: StepContext, minibatch_id: int,
                           minibatches_per_epoch: int) -> None:
        if self.hints is not None:  # a step may have replaced a hint layer (factorization)
            self.hints.follow(ctx.model)

    #: on_epoch_begin leaves what it does in the model, masks, edits or state_dict
    resumes_mid_epoch = True

    def on_epoch_begin(self, ctx: StepContext) -> dict[str, Any]:
        optimizer = ctx.optimizer
        if self.hints is not None and optimizer is not None:
            known = {id(p) for group in optimizer.param_groups for p in group["params"]}
            new = [p for p in self.hints.parameters() if id(p) not in known]
            if new:
                optimizer.add_param_group({"params": new})
        return {"temperature": self.temperature, "distill_weight": self.distill_weight,
                "student_weight": self.student_weight}

    def before_backward_pass(
        self, ctx: StepContext, loss: torch.Tensor, **batch: Any
    ) -> torch.Tensor | None:
        inputs, outputs = batch.get("inputs"), batch.get("outputs")
        if inputs is None or outputs is None:
            raise UserError("knowledge distillation needs the minibatch: call "
                            "before_backward_pass(..., inputs=x, outputs=model(x), targets=y)")
        teacher_outputs = self.teacher(inputs)
        term = self.distill_weight * kd_loss(outputs, teacher_outputs, self.temperature,
                                             t_squared=self.t_squared)
        if self.student_weight != 1.0:
            term = term + (self.student_weight - 1.0) * loss
        if self.hints is not None:
            term = term + self.hints.loss()
        return term

    def finish(self) -> None:
        if self.hints is not None:
            self.hints.remove()

    def state_dict(self) -> dict[str, Any]:
        return {"hints": self.hints.state_dict()} if self.hints is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "hints" not in state:
            return
        if self.hints is None:
            self._pending_state = state["hints"]
        else:
            self.hints.load_state_dict(state["hints"])
