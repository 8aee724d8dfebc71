"""Pruned and quantized together: the thinned ResNet-56 (by default the one pruned with
distillation-aided recovery in benchmarks/distill_lowrank.sh, run r56_inner_kd; the plain one of
benchmarks/prune_resnet56_filters.sh with --pruned), quantized to int8 and run in ONNX Runtime,
beside the dense fp32 ResNet-56 fine-tuned for the same epochs, in PyTorch and in ONNX Runtime,
in one run.

The thinned model is quantized after training (min/max observers, calibration on the first
``--per-class`` training images of every class, the int8 layout ``--layout``: u8s7 keeps the
uint8 x int8 kernels of CPUs without VNNI exact, see torchslim.pipelines.quantize). Top-1 on the
10,000 JPEG CIFAR-10 test images; latency at ``--threads`` threads, the median of ``--rounds``
round-robin rounds (every model in turn). Each thinned model also gets a second int8 row with
the layers whose int8 kernels are slower here kept in float (torchslim quantize
--speed-search). Targets (issue 10): at least 3x faster than the dense
fp32 model in ONNX Runtime at batch 256, at most 1.5 points below the dense fine-tuned model.

Writes benchmarks/results/pruned_int8_resnet56.{md,csv,json}. Run from the repository root
after ``make install`` and the pruning benchmark:

    .venv/bin/python benchmarks/pruned_int8_resnet56.py \\
        [--dense runs/bench/distill/r56_dense8/model.pt] \\
        [--pruned runs/bench/distill/r56_inner_kd/compressed.pt \\
                  runs/bench/distill/r56_target25_kd/compressed.pt ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

import torch
from ptq_resnet20 import agreement, cifar_batches, interleaved_latency

from torchslim.analysis import summarize
from torchslim.bench import BenchRow, BenchTable
from torchslim.bench.measure import evaluate_onnx
from torchslim.core.errors import UserError
from torchslim.export.onnx import export_onnx, session
from torchslim.models import create_model, load_weights
from torchslim.pipelines.common import machine_meta
from torchslim.pipelines.quantize import layout_config
from torchslim.pipelines.speed import paired_latency, select_float_layers
from torchslim.quantization import QuantConfig, quantize
from torchslim.train import evaluate

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "runs" / "bench" / "distill"
INPUT = (3, 32, 32)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    p.add_argument("--dense", type=Path, default=RUNS / "r56_dense8" / "model.pt")
    p.add_argument("--pruned", type=Path, nargs="+",
                   default=[RUNS / "r56_inner_kd" / "compressed.pt"],
                   help="thinned models (each named by its run directory), all in one run")
    p.add_argument("--per-class", type=int, default=100)
    p.add_argument("--no-speed-search", dest="speed_search", action="store_false",
                   help="skip the int8 rows with the layers that are faster in float kept "
                   "float (torchslim quantize --speed-search)")
    p.add_argument("--dense-int8", action="store_true",
                   help="also the dense model in int8 (a context row, not a headline "
                   "candidate): how much of the speed-up int8 alone gives on this CPU")
    p.add_argument("--layout", default="u8s7")
    p.add_argument("--limit", type=int, default=None, help="test images (default: all)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--repeats", type=int, default=6)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--stem", default="pruned_int8_resnet56")
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "bench" / "pruned_int8_resnet56")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    for path in (args.dense, *args.pruned):
        if not path.is_file():
            raise SystemExit(f"error: '{path}' not found: run benchmarks/distill_lowrank.sh "
                             "first (or pass --dense/--pruned)")
    torch.set_num_threads(args.threads)
    _train, test, calibration, evaluation = cifar_batches(args.shared, args.per_class,
                                                          args.limit)
    dense = load_weights(create_model("cifar_resnet56"), args.dense).eval()
    example = torch.zeros(1, *INPUT)
    config = layout_config(QuantConfig(observer="minmax"), args.layout)
    args.work.mkdir(parents=True, exist_ok=True)
    models = {"dense fp32 (PyTorch)": dense, "dense fp32 (ONNX Runtime)": dense}
    paths = {"dense fp32 (ONNX Runtime)": export_onnx(dense, example,
                                                      args.work / "dense_fp32.onnx")}
    files = {"dense fp32 (PyTorch)": os.path.getsize(args.dense)}
    int8_names, agree, speed = [], {}, {}
    if args.dense_int8:
        name = f"dense int8 {args.layout} (ONNX Runtime)"
        quantized = quantize(dense, config, calibration, example)
        paths[name] = export_onnx(quantized, example, args.work / "dense_int8.onnx")
        models[name] = dense
        agree[name] = agreement(quantized, paths[name], evaluation)
    for path in args.pruned:
        label = path.parent.name
        pruned = load_weights(create_model("cifar_resnet56"), path).eval()
        quantized = quantize(pruned, config, calibration, example)
        fp32_name = f"{label} fp32 (ONNX Runtime)"
        int8_name = f"{label} int8 {args.layout} (ONNX Runtime)"
        paths[fp32_name] = export_onnx(pruned, example, args.work / f"{label}_fp32.onnx")
        paths[int8_name] = export_onnx(quantized, example, args.work / f"{label}_int8.onnx")
        models[fp32_name] = models[int8_name] = pruned
        int8_names.append(int8_name)
        agree[int8_name] = agreement(quantized, paths[int8_name], evaluation)
        if args.speed_search:  # int8 only where it is faster here (torchslim.pipelines.speed)
            print(f"speed search on {label} ...", file=sys.stderr)
            selection = select_float_layers(
                pruned, config, calibration, example, args.work,
                measure=paired_latency(INPUT, 256, threads=args.threads))
            mixed = quantize(pruned, dataclasses.replace(
                config, exclude=selection.float_layers), calibration, example)
            mixed_name = f"{label} int8 {args.layout}, float where faster (ONNX Runtime)"
            paths[mixed_name] = export_onnx(mixed, example, args.work / f"{label}_mixed.onnx")
            models[mixed_name] = pruned
            int8_names.append(mixed_name)
            agree[mixed_name] = agreement(mixed, paths[mixed_name], evaluation)
            speed[mixed_name] = selection.to_dict()
            print(selection.format(), file=sys.stderr)
    print("accuracy ...", file=sys.stderr)
    top1 = {name: evaluate_onnx(path, evaluation, 10, threads=args.threads)
            for name, path in paths.items()}
    top1["dense fp32 (PyTorch)"] = evaluate(dense, evaluation, 10)
    print("latency ...", file=sys.stderr)
    sessions = {name: session(path, args.threads) for name, path in paths.items()}
    runners = {name: (lambda x, s=s: s.run(None, {"input": x.numpy()}))
               for name, s in sessions.items()}

    def dense_torch(x):
        with torch.inference_mode():
            return dense(x)

    runners = {"dense fp32 (PyTorch)": dense_torch, **runners}
    batch1 = interleaved_latency(runners, 1, args.rounds, args.repeats * 5)
    batch256 = interleaved_latency(runners, 256, args.rounds, max(3, args.repeats // 2))
    files.update({name: os.path.getsize(path) for name, path in paths.items()})
    rows = []
    for name, model in models.items():
        summary = summarize(model, INPUT)
        rows.append(BenchRow(
            name=name, top1=top1[name].top1, top5=top1[name].top5, params=summary.params,
            nonzero_params=summary.nonzero_params, macs=summary.macs, sparsity=summary.sparsity,
            file_bytes=files[name], latency_b1_ms=batch1[name], latency_bn_ms=batch256[name],
            batch_n=256, peak_mem_bytes=None, threads=args.threads,
            runtime="pytorch" if "PyTorch" in name else "onnxruntime",
            notes=(f"{batch256['dense fp32 (ONNX Runtime)'] / batch256[name]:.2f}x the dense "
                   "ONNX Runtime speed at batch 256"
                   + (f"; ONNX Runtime agrees with the simulation on {100 * agree[name]:.2f} %"
                      if name in agree else "")),
        ))
    verdicts = {}
    for name in int8_names:
        speedup = batch256["dense fp32 (ONNX Runtime)"] / batch256[name]
        gap = top1["dense fp32 (PyTorch)"].top1 - top1[name].top1
        verdicts[name] = {
            "speedup_vs_dense_onnx_b256": round(speedup, 3), "speedup_target": 3.0,
            "speedup_met": speedup >= 3.0, "top1_gap_vs_dense": round(gap, 2),
            "top1_gap_target": 1.5, "top1_met": gap <= 1.5,
        }
    table = BenchTable(rows, meta={
        **machine_meta(), "threads": args.threads, "dense": str(args.dense),
        "pruned": [str(path) for path in args.pruned], "test_images": len(test),
        "verdict": verdicts, "speed_search": speed,
        "calibration": f"first {args.per_class} training images of each class",
    })
    args.out.mkdir(parents=True, exist_ok=True)
    written = table.write(args.out, stem=args.stem)
    print(table.format_text())
    print(json.dumps(verdicts))
    print(json.dumps({kind: str(path) for kind, path in written.items()}))
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except UserError as err:
        raise SystemExit(f"error: {err}") from None
