"""Feature (hint) distillation, FitNets-style (Romero et al. 2015): the output of a named
student layer, through a learned adapter, regresses the output of a named teacher layer.

A :class:`Hint` names the two layers and the term's weight. :class:`HintLoss` finds the layers
(a name that matches nothing is one clear error, with the closest names), records their outputs
with forward hooks, and builds one adapter per hint from a probe on an example input: a 1x1
convolution for feature maps ``(N, C, H, W)`` (which must have the same height and width in
both), a linear layer on the last dimension otherwise. Its value is
``sum(weight * mse(adapter(student feature), teacher feature))``. The adapters are trained
with the student (the distillation step adds them to the optimizer) and are not part of it.

Example::

    >>> import torch
    >>> from torchslim.distill import Hint, HintLoss, Teacher
    >>> student = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU())
    >>> teacher = Teacher(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1),
    ...                                       torch.nn.ReLU()))
    >>> hints = HintLoss(student, teacher, [Hint("0", "0")], torch.zeros(1, 3, 8, 8))
    >>> hints.adapters["0"]
    Conv2d(4, 8, kernel_size=(1, 1), stride=(1, 1), bias=False)
    >>> x = torch.randn(2, 3, 8, 8)
    >>> _ = student(x); _ = teacher(x)
    >>> hints.loss().dim()
    0
    >>> hints.remove()
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import UserError, did_you_mean
from ..core.modules import eval_mode
from .teacher import Teacher


@dataclass(frozen=True)
class Hint:
    """Distil the output of teacher layer ``teacher`` into student layer ``student``."""

    student: str
    teacher: str
    weight: float = 1.0

    def __post_init__(self) -> None:
        if not self.weight > 0:
            raise UserError(f"the weight of hint {self.student} -> {self.teacher} must be > 0, "
                            f"got {self.weight}")


def _layer(model: nn.Module, name: str, whose: str) -> nn.Module:
    modules = dict(model.named_modules())
    if not name or name not in modules:
        names = [n for n in modules if n]
        raise UserError(
            f"hint layer '{name}' matches no layer of the {whose}{did_you_mean(name, names)}; "
            f"its layers are named like {', '.join(names[:4])}, ..."
        )
    return modules[name]


def _first_tensor(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, tuple | list) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    return None


def _recorder(store: dict[str, torch.Tensor | None], key: str):
    # A plain closure (not a bound method): deep copies of the student do not copy the teacher.
    def hook(module: nn.Module, inputs: Any, output: Any) -> None:
        store[key] = _first_tensor(output)
    return hook


def _adapter(student: torch.Tensor, teacher: torch.Tensor, hint: Hint) -> nn.Module:
    where = f"hint {hint.student} -> {hint.teacher}"
    if student.dim() != teacher.dim():
        raise UserError(f"{where}: the student's output has shape {tuple(student.shape[1:])} "
                        f"and the teacher's {tuple(teacher.shape[1:])}: hint layers of the same "
                        "kind (both feature maps, or both vectors)")
    if student.dim() == 4:
        if student.shape[2:] != teacher.shape[2:]:
            raise UserError(f"{where}: feature maps of {tuple(student.shape[2:])} and "
                            f"{tuple(teacher.shape[2:])} pixels: hint layers of the same "
                            "resolution")
        return nn.Conv2d(student.shape[1], teacher.shape[1], 1, bias=False)
    if student.shape[1:-1] != teacher.shape[1:-1]:
        raise UserError(f"{where}: outputs of shapes {tuple(student.shape[1:])} and "
                        f"{tuple(teacher.shape[1:])} differ beyond their last dimension")
    return nn.Linear(student.shape[-1], teacher.shape[-1], bias=False)


class HintLoss(nn.Module):
    """The hint terms of a student and its teacher (see the module docstring). Call
    :meth:`remove` when training is over to drop the hooks."""

    def __init__(self, student: nn.Module, teacher: Teacher, hints: Sequence[Hint],
                 example_input: torch.Tensor) -> None:
        super().__init__()
        if not hints:
            raise UserError("give at least one hint (student layer, teacher layer)")
        self.hints = list(hints)
        self.features: dict[str, torch.Tensor | None] = {}
        self._handles: dict[str, Any] = {}
        self._hooked: dict[str, nn.Module] = {}
        for index, hint in enumerate(self.hints):
            for whose, model, name in (("student", student, hint.student),
                                       ("teacher", teacher.model, hint.teacher)):
                self._hook(f"{whose}{index}", _layer(model, name, whose))
        example = example_input.to(next(iter(student.parameters()), example_input).device)
        with torch.no_grad(), eval_mode(student):
            student(example)
        teacher(example)
        adapters = {}
        for index, hint in enumerate(self.hints):
            s, t = self._pair(index, hint)
            adapters[self.key(index)] = _adapter(s, t, hint).to(s.device)
        self.adapters = nn.ModuleDict(adapters)

    def _hook(self, key: str, layer: nn.Module) -> None:
        if key in self._handles:
            self._handles.pop(key).remove()
        self._handles[key] = layer.register_forward_hook(_recorder(self.features, key))
        self._hooked[key] = layer

    def follow(self, student: nn.Module) -> None:
        """Hook the student's hint layers again where a step replaced them (a factorization
        puts a new module under the same name; its output is the one to match)."""
        for index, hint in enumerate(self.hints):
            key = f"student{index}"
            layer = _layer(student, hint.student, "student")
            if self._hooked.get(key) is not layer:
                self._hook(key, layer)

    def key(self, index: int) -> str:
        """The adapter's name for hint ``index``: the student layer's name (dots as '_')."""
        name = self.hints[index].student.replace(".", "_")
        return name if sum(h.student == self.hints[index].student
                           for h in self.hints) == 1 else f"{name}_{index}"

    def _pair(self, index: int, hint: Hint) -> tuple[torch.Tensor, torch.Tensor]:
        s, t = self.features.get(f"student{index}"), self.features.get(f"teacher{index}")
        for value, whose, name in ((s, "student", hint.student), (t, "teacher", hint.teacher)):
            if value is None:
                raise UserError(
                    f"hint layer '{name}' of the {whose} did not run in the forward pass (a "
                    "layer quantization traced away, one a factorization step replaced, or one "
                    "the model skips): hint a layer that runs and stays, such as an "
                    "activation or a BatchNorm"
                )
        return s, t

    def loss(self) -> torch.Tensor:
        """The weighted sum of the hint terms for the last forward passes of both models."""
        total = None
        for index, hint in enumerate(self.hints):
            s, t = self._pair(index, hint)
            adapter = self.adapters[self.key(index)]
            expected = adapter.in_channels if isinstance(adapter, nn.Conv2d) else \
                adapter.in_features
            channels = s.shape[1] if s.dim() == 4 else s.shape[-1]
            if channels != expected:
                raise UserError(
                    f"hint layer '{hint.student}' now has {channels} channels, {expected} when "
                    "the adapter was built (the layer was thinned?): hint a layer pruning "
                    "leaves whole"
                )
            s = s.float().contiguous()
            if adapter.weight.device != s.device:  # the student moved (to the GPU, say)
                adapter.to(s.device)
            term = hint.weight * F.mse_loss(adapter(s), t.detach().float())
            total = term if total is None else total + term
        self.features.clear()
        assert total is not None
        return total

    def remove(self) -> None:
        """Drop the forward hooks from both models."""
        for handle in self._handles.values():
            handle.remove()
        self._handles.clear()
        self._hooked.clear()
