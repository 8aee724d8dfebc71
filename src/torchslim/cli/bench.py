"""``torchslim bench``: one table of accuracy, size, MACs, latency and memory per model."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ..bench import BenchTable
from ..bench.measure import measure_onnx_row, measure_row
from ..core.errors import UserError
from ..export.onnx import export_onnx
from ..models import get_model_spec
from ..pipelines.common import build_model, machine_meta, weights_file_bytes
from ..quantization import is_prepared
from .common import Emit, add_common, add_data_args, load_split, make_loader, positive_int


def register(sub) -> None:
    p = sub.add_parser("bench", help="one table: accuracy, size, MACs, latency, memory per model")
    p.add_argument(
        "--model", dest="models", action="append", required=True, metavar="NAME[=WEIGHTS]",
        help="a model to measure, with its checkpoint; repeat for more rows",
    )
    add_data_args(p, "test")
    p.add_argument("--latency-batch", type=positive_int, default=256,
                   help="the large batch (default: 256)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch threads to time (default: torch's own)")
    p.add_argument("--repeats", type=positive_int, default=20, help="(default: 20)")
    p.add_argument("--onnx", action="store_true",
                   help="also export every model to ONNX (int8 QDQ for a quantized one) and "
                   "add its ONNX Runtime row")
    p.add_argument("--out", type=Path, default=Path("runs/bench"), help="(default: runs/bench)")
    p.add_argument("--stem", default="bench",
                   help="file names: STEM.md, STEM.csv, STEM.json (default: bench)")
    add_common(p)
    p.set_defaults(handler=run_bench)


def parse_entry(entry: str) -> tuple[str, str | None, str]:
    """``NAME[=WEIGHTS]`` -> (model name, weights or None, row label)."""
    name, _, weights = entry.partition("=")
    label = f"{name} ({Path(weights).stem})" if weights else name
    return name, weights or None, label


def run_bench(args: argparse.Namespace, emit: Emit) -> None:
    entries = [parse_entry(e) for e in args.models]
    for name, weights, _ in entries:
        get_model_spec(name)
        if weights and not Path(weights).is_file():
            raise UserError(f"weights file '{weights}' not found: check the path after '{name}='")
    dataset = load_split(args, args.split)
    rows = []
    for name, weights, label in entries:
        model, spec = build_model(name, weights, dataset.num_classes, dataset.classes,
                                  dataset.image_shape)
        rows.append(measure_row(
            label, model, dataset.image_shape, make_loader(args, spec, dataset),
            num_classes=dataset.num_classes, latency_batch=args.latency_batch,
            repeats=args.repeats, threads=args.threads,
            file_bytes=weights_file_bytes(model, weights),
        ))
        if args.onnx:
            kind = "int8" if is_prepared(model) else "fp32"
            path = export_onnx(model.eval(), torch.zeros(1, *dataset.image_shape),
                               args.out / "onnx" / f"{args.stem}_{len(rows)}_{kind}.onnx")
            rows.append(measure_onnx_row(
                f"{label} (ONNX Runtime)", path, model, dataset.image_shape,
                make_loader(args, spec, dataset), num_classes=dataset.num_classes,
                latency_batch=args.latency_batch, repeats=args.repeats, threads=args.threads,
                notes=f"{kind} ONNX",
            ))
    table = BenchTable(rows, meta={**machine_meta(), "dataset": args.data, "split": args.split,
                                   "images": len(dataset)})
    paths = table.write(args.out, stem=args.stem)
    if not args.quiet:
        print(table.format_text())
        print(f"\nwritten: {', '.join(str(p) for p in paths.values())}")
    files = {kind: str(path) for kind, path in paths.items()}
    emit(args, {"rows": [r.to_dict() for r in rows], "files": files})
