"""The teacher options shared by ``torchslim distill`` and ``torchslim compress`` (where
``--teacher`` adds a distillation step to the recipe's schedule, like Distiller's ``--kd-*``
options), and the step they build."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ..core.errors import UserError
from ..core.modules import eval_mode
from ..distill import Hint, KnowledgeDistillation, load_teacher
from ..models import get_model_spec
from ..schedule import CompressionScheduler, Policy


def _hint(text: str) -> Hint:
    parts = text.split(":")
    if len(parts) not in (2, 3) or not all(parts[:2]):
        raise argparse.ArgumentTypeError(
            f"'{text}' is not STUDENT_LAYER:TEACHER_LAYER[:WEIGHT], e.g. layer2:layer2:0.5")
    try:
        weight = float(parts[2]) if len(parts) == 3 else 1.0
        return Hint(parts[0], parts[1], weight)
    except (ValueError, UserError) as err:
        raise argparse.ArgumentTypeError(f"hint '{text}': {err}") from None


def add_distill_args(parser: argparse.ArgumentParser, required: bool) -> None:
    """The teacher options of ``distill`` (required) and ``compress`` (optional: with
    ``--teacher``, the schedule gains a distillation step, like Distiller's ``--kd-*``)."""
    group = parser.add_argument_group("knowledge distillation")
    group.add_argument("--teacher", required=required,
                       help="the teacher's zoo name (or package.module:function)"
                       + ("" if required else "; adds distillation to the schedule (Distiller's "
                          "--kd-teacher)"))
    group.add_argument("--teacher-weights", required=False,
                       help="the teacher's trained checkpoint (Distiller's --kd-resume)")
    group.add_argument("--temperature", type=float, default=4.0,
                       help="softmax temperature T (default: 4.0)")
    group.add_argument("--alpha", type=float, default=0.9,
                       help="weight of the distillation term; the cross entropy gets 1 - alpha "
                       "(default: 0.9)")
    group.add_argument("--hint", type=_hint, action="append", default=[], metavar="S:T[:W]",
                       help="feature distillation from teacher layer T into student layer S "
                       "through a learned 1x1 adapter, weight W (default 1); repeatable")
    group.add_argument("--distill-from-epoch", type=int, default=0, metavar="N",
                       help="distil from epoch N (0-based) on (default: 0)")


def check_distill_args(args: argparse.Namespace) -> None:
    """One-line errors for the teacher options, before any data loads."""
    if not 0.0 <= args.alpha <= 1.0:
        raise UserError(f"--alpha must be in [0, 1], got {args.alpha}")
    if not args.temperature > 0:
        raise UserError(f"--temperature must be > 0, got {args.temperature}")
    if args.distill_from_epoch < 0:
        raise UserError(f"--distill-from-epoch must be >= 0, got {args.distill_from_epoch}")
    get_model_spec(args.teacher)
    if not args.teacher_weights:
        raise UserError("give the teacher's trained checkpoint with --teacher-weights")
    if not Path(args.teacher_weights).is_file():
        raise UserError(f"teacher checkpoint '{args.teacher_weights}' does not exist: give the "
                        "trained teacher's file with --teacher-weights")


def add_distillation(schedule: CompressionScheduler, args: argparse.Namespace) -> None:
    """Schedule knowledge distillation from ``--teacher`` on ``schedule``'s model (the teacher
    built for the student's number of classes)."""
    model, example_input = schedule.model, schedule.example_input
    with torch.no_grad(), eval_mode(model):
        classes = model(example_input).shape[-1]
    teacher = load_teacher(args.teacher, args.teacher_weights, num_classes=classes)
    step = KnowledgeDistillation(teacher, temperature=args.temperature,
                                 distill_weight=args.alpha, hints=args.hint)
    taken = {entry.name for entry in schedule.entries}
    name = next(n for n in ("distillation", *(f"distillation#{i}" for i in range(2, 99)))
                if n not in taken)
    schedule.add(step, Policy(starting_epoch=args.distill_from_epoch), name=name)
