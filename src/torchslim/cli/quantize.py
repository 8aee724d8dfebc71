"""``torchslim quantize`` (post-training int8, measured in ONNX Runtime) and ``torchslim export``
(ONNX: fp32 for any model, int8 QDQ for a quantized one)."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ..bench import BenchTable
from ..core.errors import UserError
from ..export.onnx import export_onnx
from ..models import edit_records
from ..pipelines.common import build_model, check_same_classes, machine_meta
from ..pipelines.quantize import (
    LAYOUTS,
    format_report,
    quantize_and_export,
    sensitivity_report,
)
from ..quantization import OBSERVERS, QuantConfig, is_prepared
from .common import (
    Emit,
    add_common,
    add_data_args,
    add_model_args,
    input_shape,
    load_split,
    make_loader,
    positive_int,
    shape,
)


def register(sub) -> None:
    p = sub.add_parser(
        "quantize", help="post-training int8 quantization, measured in ONNX Runtime against fp32"
    )
    add_model_args(p, weights_required=True)
    add_data_args(p, "test")
    p.add_argument("--calibration-split", default="train",
                   help="split the observers calibrate on; never the evaluation split "
                   "(default: train)")
    p.add_argument("--calibration-images", type=positive_int, default=1000,
                   help="calibration images: the first N / classes of every class, at least "
                   "one of each (default: 1000)")
    p.add_argument("--observer", default="histogram", choices=list(OBSERVERS),
                   help="how activation ranges are chosen (default: histogram)")
    p.add_argument("--weight-bits", type=int, default=8, help="2-8 (default: 8)")
    p.add_argument("--activation-bits", type=int, default=8, help="2-8 (default: 8)")
    p.add_argument("--per-tensor", action="store_true",
                   help="one weight scale per layer instead of one per output channel")
    p.add_argument("--exclude", nargs="+", default=[], metavar="LAYER",
                   help="layers kept in float (names, globs or regexes)")
    p.add_argument("--multiplier", type=float, default=1.0,
                   help="scale multiplier alpha on every activation scale (default: 1.0)")
    p.add_argument("--center", default="zero", choices=["zero", "min"],
                   help="what the multiplier keeps fixed (default: zero)")
    p.add_argument("--sensitivity", action="store_true",
                   help="rank the layers by what keeping each in float gains (on calibration "
                   "images) and write sensitivity.txt/json")
    p.add_argument("--keep-float", type=int, default=0, metavar="K",
                   help="keep the K most sensitive layers in float (implies --sensitivity; "
                   "default: 0)")
    p.add_argument("--equalize", action="store_true",
                   help="cross-layer equalization of the weights before quantizing")
    p.add_argument("--bias-correction", action="store_true",
                   help="biases absorb the mean output error on the calibration images")
    p.add_argument("--layouts", nargs="+", default=["u8s8", "u8s7"], choices=list(LAYOUTS),
                   help="int8 layouts to try in ONNX Runtime (u8s7: 7-bit weights, which x86 "
                   "CPUs without VNNI need to stay exact); the fastest faithful one is kept "
                   "(default: u8s8 u8s7)")
    p.add_argument("--speed-search", action="store_true",
                   help="keep in float the layers whose int8 kernels make the model slower on "
                   "this machine, measured in ONNX Runtime a group of same-shaped layers at a "
                   "time (about 10 s a group for a CIFAR ResNet)")
    p.add_argument("--latency-batch", type=positive_int, default=256,
                   help="the large batch (default: 256)")
    p.add_argument("--repeats", type=positive_int, default=20, help="(default: 20)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="threads for PyTorch and ONNX Runtime (default: their own)")
    p.add_argument("--out", type=Path, default=Path("runs/quantize"),
                   help="(default: runs/quantize)")
    add_common(p)
    p.set_defaults(handler=run_quantize)

    p = sub.add_parser("export", help="ONNX: fp32 for any model, int8 QDQ for a quantized one")
    add_model_args(p)
    p.add_argument("--input-shape", type=shape, help="C,H,W (default: the model's own)")
    p.add_argument("--num-classes", type=positive_int, default=None)
    p.add_argument("--out", type=Path, default=Path("runs/export/model.onnx"),
                   help="the ONNX file (default: runs/export/model.onnx)")
    add_common(p)
    p.set_defaults(handler=run_export)


def run_quantize(args: argparse.Namespace, emit: Emit) -> None:
    if args.calibration_split == args.split:
        raise UserError(f"the calibration split is the evaluation split ('{args.split}'): "
                        "calibrate on training data (--calibration-split train)")
    config = QuantConfig(
        weight_bits=args.weight_bits, activation_bits=args.activation_bits,
        per_channel=not args.per_tensor, observer=args.observer, exclude=tuple(args.exclude),
        multiplier=args.multiplier, center=args.center, equalize=args.equalize,
        bias_correction=args.bias_correction,
    )
    evaluation = load_split(args, args.split)
    calibration = load_split(args, args.calibration_split, limit=False)
    if len(calibration) == 0:
        raise UserError(f"the calibration split '{args.calibration_split}' is empty")
    per_class = max(1, args.calibration_images // max(calibration.num_classes, 1))
    calibration = calibration.first_per_class(per_class)
    check_same_classes(calibration, evaluation, f"{args.calibration_split} and {args.split}")
    model, spec = build_model(args.model, args.weights, evaluation.num_classes,
                              evaluation.classes, evaluation.image_shape)
    if is_prepared(model):
        raise UserError(f"'{args.weights}' is already quantized: give the float model's weights")
    model.eval()
    if args.threads:
        torch.set_num_threads(args.threads)
    calibration_batches = list(make_loader(args, spec, calibration))
    example = torch.zeros(1, *input_shape(spec, evaluation))
    if args.keep_float < 0:
        raise UserError(f"--keep-float must be >= 0, got {args.keep_float}")
    if args.sensitivity or args.keep_float:
        report, config = sensitivity_report(model, config, calibration_batches, example,
                                            args.out, keep_float=args.keep_float)
        if not args.quiet:
            print(report.format())
            print()
    run = quantize_and_export(
        model, config, calibration_batches, make_loader(args, spec, evaluation),
        example, args.out, num_classes=evaluation.num_classes, layouts=args.layouts,
        latency_batch=args.latency_batch, repeats=args.repeats, threads=args.threads,
        speed_search=args.speed_search,
        meta={**machine_meta(), "model": args.model, "weights": args.weights,
              "dataset": args.data, "split": args.split, "classes": evaluation.classes,
              "normalization": args.normalization or spec.normalization,
              "edits": edit_records(args.weights),
              "calibration": f"{len(calibration)} images of '{args.calibration_split}'"},
    )
    if not args.quiet:
        print(BenchTable(run.rows).format_text())
        print()
        print(format_report(run))
        print(f"\noutputs in {args.out}/")
    emit(args, {
        "layout": run.chosen,
        "quantize_seconds": round(run.quantize_seconds, 3),
        "rows": [row.to_dict() for row in run.rows],
        "float_nodes": run.report.float_nodes,
        "verdict": run.verdict,
        "excluded": list(run.config.exclude),
        "float_for_speed": list(run.speed.float_layers) if run.speed else [],
        "files": run.files,
    })


def run_export(args: argparse.Namespace, emit: Emit) -> None:
    if args.out.is_dir():
        raise UserError(f"--out '{args.out}' is a folder: give the ONNX file's path, e.g. "
                        f"{args.out / 'model.onnx'}")
    model, spec = build_model(args.model, args.weights, args.num_classes)
    dims = input_shape(spec, None, args.input_shape)
    path = export_onnx(model.eval(), torch.zeros(1, *dims), args.out)
    quantized = is_prepared(model)
    if not args.quiet:
        kind = "int8 (QDQ)" if quantized else "fp32"
        print(f"{kind} ONNX written to {path} ({path.stat().st_size:,} bytes)")
    emit(args, {"path": str(path), "int8": quantized, "bytes": path.stat().st_size})
