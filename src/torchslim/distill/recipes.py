"""The recipe classes of the distillation package (section ``distillers``, policy kind
``distiller``), and Distiller's ``--kd-*`` options as keys of a top-level ``distillation``
mapping.

========================================  =======================================================
``KnowledgeDistillation``                 torchslim's: ``teacher`` (zoo name),
                                          ``teacher_weights``, ``teacher_num_classes``
                                          (default: the student's), ``temperature``,
                                          ``distill_weight`` (alpha), ``student_weight``
                                          (default ``1 - alpha``), ``hints``; Hinton's ``T^2``
``KnowledgeDistillationPolicy``           Distiller's class with its command-line options:
                                          ``kd_teacher``, ``kd_resume`` (the teacher's
                                          checkpoint), ``kd_temp``, ``kd_distill_wt``,
                                          ``kd_student_wt``, ``kd_teacher_wt`` (only 0: the
                                          teacher is frozen); Distiller's loss, without ``T^2``
========================================  =======================================================

The top-level form, as Distiller's command line would give it::

    distillation:
      kd_teacher: cifar_resnet56
      kd_resume: runs/resnet56/model.pt
      kd_temp: 4.0
      kd_distill_wt: 0.7
      kd_student_wt: 0.3
      kd_start_epoch: 0

Example::

    >>> from torchslim.core.config import find_recipe_class
    >>> import torchslim.distill.recipes
    >>> spec = find_recipe_class("distillers", "KnowledgeDistillation")
    >>> spec.args(teacher="cifar_resnet56", teacher_weights="t.pt", temperature=4).distill_weight
    0.9
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field
from torch import nn

from ..core.config import Args, NonNegative, Number, register_recipe_class
from .hints import Hint
from .steps import KnowledgeDistillation
from .teacher import load_teacher

Temperature = Annotated[Number, Field(gt=0.0)]
Alpha = Annotated[Number, Field(ge=0.0, le=1.0)]


def _frozen_teacher(weight: float) -> float:
    if weight != 0:
        raise ValueError(f"must be 0, got {weight:g}: the teacher is frozen (eval mode, no "
                         "gradients), so a loss on its own outputs would not train anything")
    return weight


class HintArgs(Args):
    student: str
    teacher: str
    weight: Annotated[Number, Field(gt=0.0)] = 1.0


class KDArgs(Args):
    teacher: str
    teacher_weights: str | None = None
    teacher_num_classes: Annotated[int, Field(ge=1)] | None = None
    temperature: Temperature = 4.0
    distill_weight: Alpha = 0.9
    student_weight: NonNegative | None = None
    hints: list[HintArgs] = []


class DistillerKDArgs(Args):
    kd_teacher: str
    kd_resume: str | None = None
    kd_pretrained: Literal[False] = False
    kd_temp: Temperature = 1.0
    kd_distill_wt: NonNegative = 0.5
    kd_student_wt: NonNegative = 0.5
    kd_teacher_wt: Annotated[NonNegative, AfterValidator(_frozen_teacher)] = 0.0


def _student_classes(model) -> int | None:
    """The output width of the student's last Linear (its classes), if it has one."""
    heads = [m for m in model.modules() if isinstance(m, nn.Linear)] if model is not None else []
    return heads[-1].out_features if heads else None


def _kd(a: KDArgs, model) -> KnowledgeDistillation:
    teacher = load_teacher(a.teacher, a.teacher_weights,
                           a.teacher_num_classes or _student_classes(model))
    return KnowledgeDistillation(
        teacher, temperature=a.temperature, distill_weight=a.distill_weight,
        student_weight=a.student_weight,
        hints=[Hint(h.student, h.teacher, h.weight) for h in a.hints],
    )


def _distiller_kd(a: DistillerKDArgs, model) -> KnowledgeDistillation:
    teacher = load_teacher(a.kd_teacher, a.kd_resume, _student_classes(model))
    return KnowledgeDistillation(teacher, temperature=a.kd_temp, distill_weight=a.kd_distill_wt,
                                 student_weight=a.kd_student_wt, t_squared=False)


register_recipe_class("distillers", ["KnowledgeDistillation"], KDArgs, _kd)
register_recipe_class("distillers", ["KnowledgeDistillationPolicy"], DistillerKDArgs,
                      _distiller_kd)
