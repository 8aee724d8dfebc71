"""``torchslim sensitivity``: prune one layer (or channel group) at a time, evaluate each."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

from ..pipelines.common import build_model
from ..pruning.sensitivity import format_sensitivity, sensitivity_analysis
from ..train import evaluate
from .common import (
    Emit,
    add_common,
    add_data_args,
    add_model_args,
    levels,
    load_split,
    make_loader,
)


def register(sub) -> None:
    p = sub.add_parser(
        "sensitivity", help="prune one layer at a time at several levels, evaluate each (plot)"
    )
    add_model_args(p, weights_required=True)
    add_data_args(p, "test")
    p.add_argument(
        "--levels", type=levels, default=[round(0.1 * i, 1) for i in range(1, 10)],
        help="comma-separated sparsity levels (default: 0.1,0.2,...,0.9)",
    )
    p.add_argument(
        "--granularity", nargs="+", default=["element"],
        choices=["element", "filter", "channel", "group", "block"],
        help="prune single weights, whole filters, whole input channels, coupled channel "
        "groups as structured pruning does, or remove whole residual blocks one at a time "
        "(several allowed; default: element)",
    )
    p.add_argument(
        "--layers", nargs="+", default=None, metavar="PATTERN",
        help="weights to analyse: names, globs or regexes (default: every conv and linear "
        "weight); with --granularity group, the channel groups those layers produce; with "
        "--granularity block, the blocks to remove (default: every one)",
    )
    p.add_argument("--out", type=Path, default=Path("runs/sensitivity"),
                   help="(default: runs/sensitivity)")
    add_common(p)
    p.set_defaults(handler=run_sensitivity)


def run_sensitivity(args: argparse.Namespace, emit: Emit) -> None:
    dataset = load_split(args, args.split)
    model, spec = build_model(args.model, args.weights, dataset.num_classes, dataset.classes,
                              dataset.image_shape)
    batches = make_loader(args, spec, dataset)

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
