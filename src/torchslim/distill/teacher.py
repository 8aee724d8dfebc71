"""The teacher: a frozen model that only ever runs in eval mode and without gradients.

:class:`Teacher` wraps a model so nothing a training loop does changes it: its parameters stop
requiring gradients, ``train()`` on it is ignored, every call runs under ``torch.no_grad()``,
and it follows the student's inputs to their device (and channels-last layout). It is not a
submodule of anything, so the student's optimizer, ``state_dict`` and ONNX export never see it.
:func:`load_teacher` builds a zoo model and loads its weights (``weights_only``).

Example::

    >>> import torch
    >>> from torchslim.distill import Teacher
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.5))
    >>> teacher = Teacher(model)
    >>> teacher.train()  # ignored: a teacher stays in eval mode
    >>> x = torch.randn(2, 4)
    >>> bool(torch.equal(teacher(x), teacher(x))), model.training, teacher(x).requires_grad
    (True, False, False)
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from ..core.errors import UserError
from ..models import create_model, load_weights


class Teacher:
    """A frozen model in eval mode (see the module docstring)."""

    def __init__(self, model: nn.Module) -> None:
        if not isinstance(model, nn.Module):
            raise UserError(f"the teacher must be a torch model, got {type(model).__name__}")
        self.model = model.eval()
        for param in model.parameters():
            param.requires_grad_(False)
        self._layout: tuple[torch.device, bool] | None = None

    def train(self, mode: bool = True) -> None:
        """Ignored: the teacher's BatchNorm statistics and dropout stay as in eval mode."""

    def _follow(self, inputs: Any) -> None:
        if not isinstance(inputs, torch.Tensor):
            return
        channels_last = inputs.dim() == 4 and inputs.is_contiguous(
            memory_format=torch.channels_last) and not inputs.is_contiguous()
        layout = (inputs.device, channels_last)
        if layout != self._layout:
            self.model.to(inputs.device)
            if channels_last:
                self.model.to(memory_format=torch.channels_last)
            self._layout = layout

    def __call__(self, inputs: Any) -> Any:
        self._follow(inputs)
        self.model.eval()  # in case user code called .train() on the wrapped model
        with torch.no_grad():
            return self.model(inputs)


def load_teacher(
    name: str | nn.Module,
    weights: str | os.PathLike | None = None,
    num_classes: int | None = None,
) -> Teacher:
    """A :class:`Teacher` from a zoo name (or a model) and a checkpoint of its trained weights.

    A teacher without weights teaches nothing, so ``weights`` is required for a zoo name.
    """
    if isinstance(name, nn.Module):
        model = name
        if weights is not None:
            load_weights(model, weights, name="teacher")
        return Teacher(model)
    if weights is None:
        raise UserError(f"the teacher '{name}' needs its trained weights: give the checkpoint "
                        "(teacher_weights in a recipe, --teacher-weights on the command line)")
    model = create_model(name, num_classes=num_classes)
    load_weights(model, weights, name=f"teacher {name}")
    return Teacher(model)
