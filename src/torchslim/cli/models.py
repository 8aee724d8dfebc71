"""``torchslim models`` (the zoo) and ``torchslim summary`` (per-layer params, sparsity, MACs)."""

from __future__ import annotations

import argparse

from ..analysis import summarize
from ..models import list_models
from ..pipelines.common import build_model
from .common import Emit, add_common, add_model_args, input_shape, positive_int, shape


def register(sub) -> None:
    p = sub.add_parser("models", help="list the model zoo")
    add_common(p)
    p.set_defaults(handler=run_models)

    p = sub.add_parser("summary", help="per-layer params, sparsity and MACs of a model")
    add_model_args(p)
    p.add_argument("--input-shape", type=shape, help="C,H,W (default: the model's own)")
    p.add_argument("--num-classes", type=positive_int, default=None)
    add_common(p)
    p.set_defaults(handler=run_summary)


def run_models(args: argparse.Namespace, emit: Emit) -> None:
    specs = list_models()
    if not args.quiet:
        for spec in specs:
            dims = "x".join(map(str, spec.input_shape))
            print(f"{spec.name:<16} {dims:<10} {spec.normalization:<8} {spec.description}")
    emit(args, {"models": [{"name": s.name, "input_shape": list(s.input_shape),
                            "normalization": s.normalization} for s in specs]})


def run_summary(args: argparse.Namespace, emit: Emit) -> None:
    model, spec = build_model(args.model, args.weights, args.num_classes)
    summary = summarize(model, input_shape(spec, None, args.input_shape))
    if not args.quiet:
        print(summary.format_table())
    emit(args, summary.to_dict())
