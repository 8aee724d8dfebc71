"""``torchslim distill``: train a student with knowledge distillation from a trained teacher."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ..core.errors import UserError
from ..core.modules import eval_mode
from ..distill import Hint, KnowledgeDistillation, load_teacher
from ..models import get_model_spec
from ..pipelines.common import build_model
from ..schedule import CompressionScheduler, Policy
from .common import Emit, add_common, add_data_args, add_model_args, add_train_args, positive_int
from .compress import run_schedule


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


def register(sub) -> None:
    p = sub.add_parser(
        "distill",
        help="train a student with knowledge distillation from a trained teacher",
        description="Train --model (the student; from --weights, or from scratch) on the soft "
        "targets of --teacher: loss = alpha * T^2 * KL(teacher/T || student/T) + (1 - alpha) * "
        "cross entropy (Hinton et al. 2015), optionally with hints between named layers.",
    )
    add_model_args(p)
    p.add_argument("--teacher", required=True, help="the teacher's zoo name (or "
                   "package.module:function)")
    p.add_argument("--teacher-weights", required=True, help="the teacher's trained checkpoint")
    p.add_argument("--temperature", type=float, default=4.0,
                   help="softmax temperature T (default: 4.0)")
    p.add_argument("--alpha", type=float, default=0.9,
                   help="weight of the distillation term; the cross entropy gets 1 - alpha "
                   "(default: 0.9)")
    p.add_argument("--hint", type=_hint, action="append", default=[], metavar="S:T[:W]",
                   help="feature distillation from teacher layer T into student layer S through "
                   "a learned 1x1 adapter, weight W (default 1); repeatable")
    add_data_args(p, "train")
    add_train_args(p, Path("runs/distill"), schedule_default="cosine")
    p.add_argument("--latency-batch", type=positive_int, default=256,
                   help="the large batch (default: 256)")
    p.add_argument("--repeats", type=positive_int, default=20, help="latency repeats (default: 20)")
    add_common(p)
    p.set_defaults(handler=run_distill)


def run_distill(args: argparse.Namespace, emit: Emit) -> None:
    if not 0.0 <= args.alpha <= 1.0:
        raise UserError(f"--alpha must be in [0, 1], got {args.alpha}")
    if not args.temperature > 0:
        raise UserError(f"--temperature must be > 0, got {args.temperature}")
    # Name and file errors before any data loads.
    get_model_spec(args.teacher)
    if not Path(args.teacher_weights).is_file():
        raise UserError(f"teacher checkpoint '{args.teacher_weights}' does not exist: give the "
                        "trained teacher's file with --teacher-weights")
    build_model(args.model, args.weights)

    def scheduler(model, example_input):
        with torch.no_grad(), eval_mode(model):  # the teacher predicts the student's classes
            classes = model(example_input).shape[-1]
        teacher = load_teacher(args.teacher, args.teacher_weights, num_classes=classes)
        schedule = CompressionScheduler(model, example_input=example_input)
        step = KnowledgeDistillation(teacher, temperature=args.temperature,
                                     distill_weight=args.alpha, hints=args.hint)
        schedule.add(step, Policy(0), name="distillation")
        return schedule

    run_schedule(args, emit, "distill", scheduler, label=f"distilled from {args.teacher}",
                 notes=[], meta={"teacher": args.teacher,
                                 "teacher_weights": str(args.teacher_weights),
                                 "temperature": args.temperature, "alpha": args.alpha})
