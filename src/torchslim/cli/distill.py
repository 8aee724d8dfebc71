"""``torchslim distill``: train a student with knowledge distillation from a trained teacher."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..models import get_model_spec
from ..models.checkpoint import read_checkpoint
from ..schedule import CompressionScheduler
from .common import Emit, add_common, add_data_args, add_model_args, add_train_args, positive_int
from .compress import run_schedule
from .teacher import add_distill_args, add_distillation, check_distill_args


def register(sub) -> None:
    p = sub.add_parser(
        "distill",
        help="train a student with knowledge distillation from a trained teacher",
        description="Train --model (the student; from --weights, or from scratch) on the soft "
        "targets of --teacher: loss = alpha * T^2 * KL(teacher/T || student/T) + (1 - alpha) * "
        "cross entropy (Hinton et al. 2015), optionally with hints between named layers.",
    )
    add_model_args(p)
    add_distill_args(p, required=True)
    add_data_args(p, "train")
    add_train_args(p, Path("runs/distill"), schedule_default="cosine")
    p.add_argument("--latency-batch", type=positive_int, default=256,
                   help="the large batch (default: 256)")
    p.add_argument("--repeats", type=positive_int, default=20, help="latency repeats (default: 20)")
    add_common(p)
    p.set_defaults(handler=run_distill)


def run_distill(args: argparse.Namespace, emit: Emit) -> None:
    check_distill_args(args)
    get_model_spec(args.model)  # mistakes named before any data loads
    if args.weights:
        read_checkpoint(args.weights)

    def scheduler(model, example_input):
        schedule = CompressionScheduler(model, example_input=example_input)
        add_distillation(schedule, args)
        return schedule

    run_schedule(args, emit, "distill", scheduler, label=f"distilled from {args.teacher}",
                 notes=[], meta={"teacher": args.teacher,
                                 "teacher_weights": str(args.teacher_weights),
                                 "temperature": args.temperature, "alpha": args.alpha})
