"""``torchslim compress``: fine-tune under a YAML compression schedule, then report."""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.errors import UserError, did_you_mean
from ..pipelines.common import build_model, check_same_classes, machine_meta
from ..pipelines.compress import compress, report, schedule_notes
from ..recipe import build_scheduler, load_recipe
from ..recipes import recipe_names, recipe_path
from ..schedule import CompressionScheduler
from ..train import resolve_device, seed_everything
from .common import (
    Emit,
    add_common,
    add_data_args,
    add_model_args,
    add_train_args,
    check_metric_users,
    load_split,
    make_loader,
    model_meta,
    positive_int,
    train_config,
    training_log,
    training_splits,
)
from .teacher import add_distill_args, add_distillation, check_distill_args


def register(sub) -> None:
    p = sub.add_parser(
        "compress", help="fine-tune under a YAML compression schedule (Distiller's format works)"
    )
    p.add_argument(
        "--recipe", required=True,
        help="the YAML compression schedule: a file, or the name of one shipped with torchslim "
        "(demo_agp, demo_filters, ...)",
    )
    add_model_args(p)
    add_data_args(p, "train")
    add_train_args(p, Path("runs/compress"), schedule_default=None)
    p.add_argument("--latency-batch", type=positive_int, default=256,
                   help="the large batch (default: 256)")
    p.add_argument("--repeats", type=positive_int, default=20, help="latency repeats (default: 20)")
    add_distill_args(p, required=False)
    add_common(p)
    p.set_defaults(handler=run_compress)


def resolve_recipe(text: str) -> Path:
    """A recipe file given by path, or by the name of a recipe shipped with torchslim."""
    path = Path(text)
    if path.is_file() or len(path.parts) > 1:
        return path  # a path that does not exist: load_recipe says so
    if path.stem not in recipe_names():
        raise UserError(
            f"recipe '{text}' is neither a file nor a recipe shipped with torchslim"
            f"{did_you_mean(path.stem, recipe_names())}; shipped: {', '.join(recipe_names())}"
        )
    return recipe_path(path.stem)


def run_compress(args: argparse.Namespace, emit: Emit) -> None:
    recipe_file = resolve_recipe(args.recipe)
    recipe = load_recipe(recipe_file)
    model, spec = build_model(args.model)
    shape = spec.input_shape or ()
    # Name (and shape) errors before any data loads.
    check_metric_users(build_scheduler(recipe, model, torch.zeros(1, *shape) if shape else None),
                       args)
    if args.teacher:
        check_distill_args(args)
    elif args.teacher_weights or args.hint:
        raise UserError("--teacher-weights and --hint distil from a teacher: name it with "
                        "--teacher")

    def scheduler(model, example_input):
        schedule = build_scheduler(recipe, model, example_input)
        if args.teacher:
            add_distillation(schedule, args)
        return schedule

    label = recipe_file.stem + (f", distilled from {args.teacher}" if args.teacher else "")
    run_schedule(
        args, emit, "compress", scheduler, label=label, notes=schedule_notes(recipe, args.epochs),
        lr_scheduled=any(p.kind == "lr_scheduler" for p in recipe.policies),
        meta={"recipe": str(recipe_file), **({"teacher": args.teacher} if args.teacher else {})},
    )


def run_schedule(
    args: argparse.Namespace,
    emit: Emit,
    command: str,
    make_scheduler: Callable[[nn.Module, torch.Tensor], CompressionScheduler],
    *,
    label: str,
    notes: list[str],
    lr_scheduled: bool = False,
    meta: dict[str, Any] | None = None,
) -> None:
    """Load the data and the model, train under the scheduler ``make_scheduler(model,
    example_input)`` builds, measure the result beside the input model, print and emit it
    (what ``torchslim compress`` and ``torchslim distill`` share)."""
    if not args.quiet:
        for note in notes:
            print(f"torchslim {command}: note: {note}", file=sys.stderr)
    train_set, held_set = training_splits(args)
    eval_set = load_split(args, args.eval_split, limit=False)
    check_same_classes(train_set, eval_set, f"{args.split} and {args.eval_split}")
    seed_everything(args.seed)
    model, spec = build_model(args.model, args.weights, train_set.num_classes, train_set.classes,
                              train_set.image_shape)
    baseline = copy.deepcopy(model)
    schedule = args.schedule or ("constant" if lr_scheduled else "cosine")
    eval_batches = make_loader(args, spec, eval_set)
    config = train_config(args, schedule)
    if not args.quiet:
        print(f"torchslim {command}: {training_log(args, config, train_set)}")
    example_input = torch.zeros(1, *eval_set.image_shape)
    run = compress(
        model, make_scheduler(model, example_input), make_loader(args, spec, train_set,
                                                                 train=True),
        config, eval_batches=eval_batches,
        val_batches=make_loader(args, spec, held_set) if held_set is not None else None,
        num_classes=train_set.num_classes, out_dir=args.out, progress=not args.quiet,
        model_meta=model_meta(args, train_set, spec), resume=args.resume,
        example_input=example_input,
    )
    result = report(
        run, baseline, eval_set.image_shape, eval_batches, num_classes=eval_set.num_classes,
        labels=(f"{args.model} (input)", f"{args.model} ({label})"),
        input_file=args.weights, latency_batch=args.latency_batch, repeats=args.repeats,
        meta={**machine_meta(), "dataset": args.data, "split": args.eval_split, **(meta or {})},
    )
    summary, rows = result.summary, result.rows
    if not args.quiet:
        print(run.scheduler.format_log())
        print()
        print(summary.format_table())
        print()
        print(result.table.format_text())
        print(f"\noutputs in {args.out}/")
    emit(args, {
        "top1": rows[1].top1,
        "params": summary.params,
        "nonzero_params": summary.nonzero_params,
        "macs": summary.macs,
        "sparsity": summary.sparsity,
        "model_path": str(run.model_path),
        "epochs": len(run.history),
        "device": str(resolve_device(config.device)),
        "rows": [row.to_dict() for row in rows],
        "schedule_log": str(args.out / "schedule.json"),
        "notes": notes,
        "files": {k: v for k, v in result.files.items() if k in ("md", "csv", "json")},
    })
