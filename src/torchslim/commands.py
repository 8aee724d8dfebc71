"""What each ``torchslim`` subcommand does, on top of the Python API (see :mod:`torchslim.cli`).

Example::

    >>> from torchslim.commands import build_model
    >>> model, spec = build_model("cifar_resnet20")
    >>> spec.input_shape
    (3, 32, 32)
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .analysis import summarize
from .analysis.sensitivity import format_sensitivity, sensitivity_analysis
from .bench import BenchTable
from .bench.measure import measure_row
from .compress import compress, schedule_notes
from .data import ArrayDataset, BatchLoader, load_dataset
from .errors import UserError
from .fileio import atomic_write_text
from .models import (
    ModelSpec,
    create_model,
    get_model_spec,
    list_models,
    load_weights,
    thinning_records,
)
from .recipe import build_scheduler, load_recipe
from .train import TrainConfig, Trainer, evaluate, seed_everything

Emit = Callable[[argparse.Namespace, dict[str, Any]], None]


def build_model(
    name: str, weights: str | None = None, num_classes: int | None = None
) -> tuple[nn.Module, ModelSpec]:
    """Create a zoo (or ``package.module:function``) model and load ``weights`` into it."""
    spec = get_model_spec(name)
    model = create_model(name, num_classes=num_classes)
    if weights:
        load_weights(model, weights, name=name)
    return model, spec


def _input_shape(spec: ModelSpec, dataset: ArrayDataset | None, given=None) -> tuple[int, ...]:
    shape = given or (dataset.image_shape if dataset is not None else spec.input_shape)
    if not shape:
        raise UserError(f"model '{spec.name}' has no default input shape: pass --input-shape C,H,W")
    return tuple(shape)


def _load(args: argparse.Namespace, split: str) -> ArrayDataset:
    dataset = load_dataset(args.data, split, progress=not args.quiet)
    if args.limit is not None:
        dataset = dataset.subset(args.limit)
    return dataset


def _loader(args, spec: ModelSpec, dataset: ArrayDataset, train: bool = False) -> BatchLoader:
    return BatchLoader(
        dataset,
        args.batch_size,
        shuffle=train,
        augment=train and not getattr(args, "no_augment", False),
        normalization=args.normalization or spec.normalization,
        seed=getattr(args, "seed", 0),
    )


def machine_meta() -> dict[str, Any]:
    """Machine, torch version and thread count, stored beside every benchmark table."""
    return {
        "torch": torch.__version__,
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def run_models(args: argparse.Namespace, emit: Emit) -> None:
    specs = list_models()
    if not args.quiet:
        for spec in specs:
            shape = "x".join(map(str, spec.input_shape))
            print(f"{spec.name:<16} {shape:<10} {spec.normalization:<8} {spec.description}")
    emit(args, {"models": [{"name": s.name, "input_shape": list(s.input_shape),
                            "normalization": s.normalization} for s in specs]})


def run_summary(args: argparse.Namespace, emit: Emit) -> None:
    model, spec = build_model(args.model, args.weights, args.num_classes)
    summary = summarize(model, _input_shape(spec, None, args.input_shape))
    if not args.quiet:
        print(summary.format_table())
    emit(args, summary.to_dict())


def run_eval(args: argparse.Namespace, emit: Emit) -> None:
    dataset = _load(args, args.split)
    model, spec = build_model(args.model, args.weights, dataset.num_classes)
    result = evaluate(
        model, _loader(args, spec, dataset), dataset.num_classes, dataset.classes,
        progress=not args.quiet,
    )
    if not args.quiet:
        print(result.format_report())
    payload = {"model": args.model, "weights": args.weights, "split": args.split,
               **result.to_dict()}
    if args.out is not None:
        write_eval_outputs(result, payload, args.out)
    emit(args, payload)


def write_eval_outputs(result, payload: dict[str, Any], out: Path) -> None:
    """report.txt, confusion.csv and eval.json under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "report.txt", result.format_report() + "\n")
    header = "true\\predicted," + ",".join(result.class_names)
    rows = [f"{name}," + ",".join(map(str, row))
            for name, row in zip(result.class_names, result.confusion, strict=True)]
    atomic_write_text(out / "confusion.csv", "\n".join([header, *rows]) + "\n")
    atomic_write_text(out / "eval.json", json.dumps(payload, indent=2) + "\n")


def _model_meta(args: argparse.Namespace, train_set: ArrayDataset) -> dict[str, Any]:
    """What a saved model needs beside its weights: name, classes and, for a thinned input
    model, its thinning records (so the output reloads into a fresh model)."""
    thinning = thinning_records(args.weights) if args.weights else []
    return {"model": args.model, "classes": train_set.classes, "thinning": thinning}


def _train_config(args: argparse.Namespace, schedule: str) -> TrainConfig:
    return TrainConfig(
        epochs=args.epochs, optimizer=args.optimizer, lr=args.lr, momentum=args.momentum,
        weight_decay=args.weight_decay, schedule=schedule, step_size=args.step_size,
        milestones=list(args.milestones), gamma=args.gamma, seed=args.seed,
        channels_last=args.channels_last,
    )


def run_train(args: argparse.Namespace, emit: Emit) -> None:
    train_set = _load(args, args.split)
    eval_set = load_dataset(args.data, args.eval_split, progress=not args.quiet)
    seed_everything(args.seed)
    model, spec = build_model(args.model, args.weights, train_set.num_classes)
    trainer = Trainer(
        model,
        _loader(args, spec, train_set, train=True),
        _train_config(args, args.schedule),
        eval_batches=_loader(args, spec, eval_set),
        num_classes=train_set.num_classes,
        out_dir=args.out,
        progress=not args.quiet,
        model_meta=_model_meta(args, train_set),
    )
    history = trainer.fit(resume=args.resume)
    last = history[-1]
    emit(args, {
        "epochs": len(history),
        "top1": last.get("val_top1"),
        "top5": last.get("val_top5"),
        "train_loss": last["train_loss"],
        "checkpoint": str(trainer.checkpoint_path),
        "model_path": str(args.out / "model.pt"),
        "history": history,
    })


def run_compress(args: argparse.Namespace, emit: Emit) -> None:
    recipe = load_recipe(args.recipe)
    build_scheduler(recipe, build_model(args.model)[0])  # name errors before any data loads
    notes = schedule_notes(recipe, args.epochs)
    if not args.quiet:
        for note in notes:
            print(f"torchslim compress: note: {note}", file=sys.stderr)
    train_set = _load(args, args.split)
    eval_set = load_dataset(args.data, args.eval_split, progress=not args.quiet)
    seed_everything(args.seed)
    model, spec = build_model(args.model, args.weights, train_set.num_classes)
    baseline = copy.deepcopy(model)
    lr_scheduled = any(p.kind == "lr_scheduler" for p in recipe.policies)
    schedule = args.schedule or ("constant" if lr_scheduled else "cosine")
    eval_batches = _loader(args, spec, eval_set)
    run = compress(
        model, recipe, _loader(args, spec, train_set, train=True), _train_config(args, schedule),
        eval_batches=eval_batches, num_classes=train_set.num_classes, out_dir=args.out,
        progress=not args.quiet, model_meta=_model_meta(args, train_set),
        resume=args.resume, example_input=torch.zeros(1, *eval_set.image_shape),
    )
    input_shape = eval_set.image_shape
    summary = summarize(run.model, input_shape)
    atomic_write_text(args.out / "summary.txt", summary.format_table() + "\n")
    atomic_write_text(args.out / "summary.json", json.dumps(summary.to_dict(), indent=2) + "\n")
    measure = {"num_classes": eval_set.num_classes, "latency_batch": args.latency_batch,
               "repeats": args.repeats}
    rows = [
        measure_row(f"{args.model} (input)", baseline, input_shape, eval_batches, **measure,
                    file_bytes=Path(args.weights).stat().st_size if args.weights else None),
        measure_row(f"{args.model} ({args.recipe.stem})", run.model, input_shape, eval_batches,
                    **measure, file_bytes=run.model_path.stat().st_size),
    ]
    table = BenchTable(rows, meta={**machine_meta(), "dataset": args.data,
                                   "split": args.eval_split, "recipe": str(args.recipe)})
    files = {kind: str(path) for kind, path in table.write(args.out).items()}
    if not args.quiet:
        print(run.scheduler.format_log())
        print()
        print(summary.format_table())
        print()
        print(table.format_text())
        print(f"\noutputs in {args.out}/")
    emit(args, {
        "top1": rows[1].top1,
        "params": summary.params,
        "nonzero_params": summary.nonzero_params,
        "macs": summary.macs,
        "sparsity": summary.sparsity,
        "model_path": str(run.model_path),
        "epochs": len(run.history),
        "rows": [row.to_dict() for row in rows],
        "schedule_log": str(args.out / "schedule.json"),
        "notes": notes,
        "files": files,
    })


def run_sensitivity(args: argparse.Namespace, emit: Emit) -> None:
    dataset = _load(args, args.split)
    model, spec = build_model(args.model, args.weights, dataset.num_classes)
    batches = _loader(args, spec, dataset)

    def score(pruned: nn.Module) -> dict[str, float]:
        result = evaluate(pruned, batches, dataset.num_classes)
        return {"top1": result.top1, "top5": result.top5, "loss": result.loss}

    dense = score(model)
    result = sensitivity_analysis(
        model, score, args.levels, weights=args.layers, granularities=args.granularity,
        progress=not args.quiet, example_input=torch.zeros(1, *dataset.image_shape),
    )
    result.meta.update(model=args.model, weights=args.weights, data=args.data, split=args.split,
                       images=len(dataset), dense=dense)
    paths = result.write(args.out)
    if not args.quiet:
        print(format_sensitivity(result, dense["top1"]))
        print(f"\nwritten: {', '.join(str(p) for p in paths.values())}")
    emit(args, {"dense": dense, "rows": len(result.rows),
                "files": {kind: str(path) for kind, path in paths.items()}})


def _parse_bench_entry(entry: str) -> tuple[str, str | None, str]:
    name, _, weights = entry.partition("=")
    label = f"{name} ({Path(weights).stem})" if weights else name
    return name, weights or None, label


def run_bench(args: argparse.Namespace, emit: Emit) -> None:
    entries = [_parse_bench_entry(e) for e in args.models]
    for name, weights, _ in entries:
        get_model_spec(name)
        if weights and not Path(weights).is_file():
            raise UserError(f"weights file '{weights}' not found: check the path after '{name}='")
    dataset = _load(args, args.split)
    rows = []
    for name, weights, label in entries:
        model, spec = build_model(name, weights, dataset.num_classes)
        rows.append(measure_row(
            label, model, dataset.image_shape, _loader(args, spec, dataset),
            num_classes=dataset.num_classes, latency_batch=args.latency_batch,
            repeats=args.repeats, threads=args.threads,
            file_bytes=Path(weights).stat().st_size if weights else None,
        ))
    table = BenchTable(rows, meta={**machine_meta(), "dataset": args.data, "split": args.split,
                                   "images": len(dataset)})
    paths = table.write(args.out, stem=args.stem)
    if not args.quiet:
        print(table.format_text())
        print(f"\nwritten: {', '.join(str(p) for p in paths.values())}")
    files = {kind: str(path) for kind, path in paths.items()}
    emit(args, {"rows": [r.to_dict() for r in rows], "files": files})


def run_demo(args: argparse.Namespace, emit: Emit) -> None:
    from .demo import run_demo as demo

    emit(args, demo(args.out, epochs=args.epochs, quiet=args.quiet))
