"""Post-training int8 quantization of the pretrained ResNet-20, side by side in one run with
torch.ao FX PTQ and ONNX Runtime's ``quantize_static``, on the same calibration images.

Data: the JPEG CIFAR-10 of ../shared; calibration on the first ``--per-class`` (default 100)
training images of every class (never the test split), top-1 on the 10,000 test images. Rows:

- fp32 in PyTorch (eager) and in ONNX Runtime;
- torch.ao FX PTQ: ``prepare_fx`` with ``get_default_qconfig_mapping("x86")``, calibration,
  ``convert_fx``, run in PyTorch (its file: the converted model's ``state_dict``);
- ONNX Runtime ``quantize_static``: QDQ, per channel, uint8 activations and int8 weights, its
  default MinMax calibration, from the fp32 ONNX file, with batches of 100 images;
- torchslim: ``quantize`` with the minmax and with the histogram observer, exported as QDQ ONNX
  in each layout of ``--layouts`` (default u8s8 and u8s7: int8 or 7-bit weights, see
  torchslim.pipelines.quantize); each row says how often ONNX Runtime's predictions agree with
  the PyTorch simulation (on x86 CPUs without VNNI the int8-weight kernels saturate).

"Seconds to quantize" is calibration plus conversion, from float model to quantized model in
memory (for ONNX Runtime: from fp32 ONNX file to int8 ONNX file), at ``--quantize-threads``
threads (default: every core, as ``quantize_static`` uses). Latency: median over
``--rounds`` round-robin rounds (every ONNX model in turn, so load on the machine hits all
alike) of the median of ``--repeats`` calls on a random batch, at ``--threads`` threads.

Writes benchmarks/results/ptq_resnet20.{json,md,csv}. Run from the repository root after
``make install``:

    .venv/bin/python benchmarks/ptq_resnet20.py [--threads 1] [--limit N]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from torchslim.analysis import measure_latency, summarize
from torchslim.bench import BenchRow, BenchTable
from torchslim.bench.measure import evaluate_onnx
from torchslim.data import BatchLoader, load_dataset
from torchslim.export.onnx import export_onnx, runtime_report, session
from torchslim.models import create_model, load_weights
from torchslim.pipelines.common import machine_meta
from torchslim.pipelines.quantize import layout_config
from torchslim.quantization import QuantConfig, quantize
from torchslim.train import evaluate

ROOT = Path(__file__).resolve().parents[1]
INPUT = (3, 32, 32)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    p.add_argument("--per-class", type=int, default=100, help="calibration images per class")
    p.add_argument("--limit", type=int, default=None, help="test images (default: all)")
    p.add_argument("--threads", type=int, default=1, help="threads for latency")
    p.add_argument("--quantize-threads", type=int, default=os.cpu_count(),
                   help="threads while quantizing (ONNX Runtime's quantize_static uses its "
                   "default, every core; default: every core)")
    p.add_argument("--layouts", nargs="+", default=["u8s8", "u8s7"])
    p.add_argument("--observers", nargs="+", default=["minmax", "histogram"])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "bench" / "ptq_resnet20")
    return p.parse_args(argv)


def cifar_batches(shared: Path, per_class: int, limit: int | None):
    """The JPEG CIFAR-10 calibration set (the first ``per_class`` training images of every
    class) and test split (``limit`` random images, or all), and their normalised batches."""
    data = shared / "data" / "cifar10-jpeg.tar.gz"
    test = load_dataset(data, "test", progress=False)
    if limit:
        test = test.subset(limit, seed=0)
    train = load_dataset(data, "train", progress=False).first_per_class(per_class)
    return (train, test, list(BatchLoader(train, 100, normalization="cifar")),
            list(BatchLoader(test, 500, normalization="cifar")))


def agreement(model, path, batches) -> float:
    runtime = session(path, 1)
    same = total = 0
    with torch.no_grad():
        for x, _ in batches:
            got = runtime.run(None, {"input": np.ascontiguousarray(x.numpy())})[0].argmax(1)
            same += int((got == model(x).argmax(1).numpy()).sum())
            total += len(x)
    return same / total


def torch_ao_fx(model, calibration):
    """torch.ao FX PTQ with the x86 backend's default qconfig mapping."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = "x86"
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare_fx(model, get_default_qconfig_mapping("x86"),
                              (torch.zeros(1, *INPUT),))
        with torch.no_grad():
            for x, _ in calibration:
                prepared(x)
        converted = convert_fx(prepared)
    seconds = time.perf_counter() - started
    buffer = io.BytesIO()
    torch.save(converted.state_dict(), buffer)
    return converted, seconds, len(buffer.getvalue())


def ort_quantize_static(fp32_path: Path, out: Path, calibration) -> float:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"input": x.numpy()} for x, _ in calibration])

        def get_next(self):
            return next(self.batches, None)

    started = time.perf_counter()
    quantize_static(str(fp32_path), str(out), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8)
    return time.perf_counter() - started


def interleaved_latency(runners: dict, batch: int, rounds: int, repeats: int) -> dict:
    """Median over rounds of each runner's median latency; the runners take turns."""
    medians: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            medians[name].append(measure_latency(None, INPUT, batch, warmup=2, repeats=repeats,
                                                 runner=run).median_ms)
    return {name: statistics.median(values) for name, values in medians.items()}


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.quantize_threads)
    torch.manual_seed(0)
    train, test, calibration, evaluation = cifar_batches(args.shared, args.per_class, args.limit)
    weights = args.shared / "models" / "resnet20-12fca82f.th"
    model = load_weights(create_model("cifar_resnet20"), weights).eval()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(1, *INPUT)
    summary = summarize(model, INPUT)

    print("fp32 and torch.ao FX ...", file=sys.stderr)
    fp32_pt = work / "fp32.pt"
    torch.save(model.state_dict(), fp32_pt)
    fp32_onnx = export_onnx(model, example, work / "fp32.onnx")
    fx_model, fx_seconds, fx_bytes = torch_ao_fx(model, calibration)

    print("ONNX Runtime quantize_static ...", file=sys.stderr)
    ort_path = work / "ort_quantize_static.onnx"
    ort_seconds = ort_quantize_static(fp32_onnx, ort_path, calibration)

    onnx_models = {"fp32 (ONNX Runtime)": (fp32_onnx, None, None, None)}
    onnx_models["ONNX Runtime quantize_static (QDQ, per channel)"] = (ort_path, None,
                                                                      ort_seconds, None)
    for observer in args.observers:
        for layout in args.layouts:
            config = layout_config(QuantConfig(observer=observer), layout)
            print(f"torchslim {observer} {layout} ...", file=sys.stderr)
            started = time.perf_counter()
            quantized = quantize(model, config, calibration, example)
            seconds = time.perf_counter() - started
            path = export_onnx(quantized, example, work / f"torchslim_{observer}_{layout}.onnx")
            onnx_models[f"torchslim {observer} {layout}"] = (path, quantized, seconds, config)

    torch.set_num_threads(args.threads)
    print("accuracy ...", file=sys.stderr)
    rows_extra = {}
    accuracy = {name: evaluate_onnx(path, evaluation, 10, threads=args.threads)
                for name, (path, *_rest) in onnx_models.items()}
    for name, (path, quantized, _seconds, _config) in onnx_models.items():
        if quantized is not None:
            simulated = evaluate(quantized, evaluation, 10)
            rows_extra[name] = {
                "simulated_top1": simulated.top1,
                "agreement": agreement(quantized, path, evaluation),
                "float_nodes": runtime_report(path, work).float_nodes,
            }
    fp32_acc = evaluate(model, evaluation, 10)
    fx_acc = evaluate(fx_model, evaluation, 10)

    print("latency ...", file=sys.stderr)
    sessions = {name: session(path, args.threads) for name, (path, *_r) in onnx_models.items()}
    runners = {name: (lambda x, s=s: s.run(None, {"input": x.numpy()}))
               for name, s in sessions.items()}

    def torch_runner(net):
        def run(x):
            with torch.inference_mode():
                return net(x)
        return run

    runners["fp32 (PyTorch eager)"] = torch_runner(model)
    runners["torch.ao FX PTQ (x86)"] = torch_runner(fx_model)
    batch1 = interleaved_latency(runners, 1, args.rounds, args.repeats * 5)
    batch256 = interleaved_latency(runners, 256, args.rounds, max(3, args.repeats // 2))

    def row(name, top1, top5, file_bytes, runtime, seconds=None, notes=""):
        return BenchRow(
            name=name, top1=top1, top5=top5, params=summary.params,
            nonzero_params=summary.nonzero_params, macs=summary.macs, sparsity=0.0,
            file_bytes=file_bytes, latency_b1_ms=batch1[name], latency_bn_ms=batch256[name],
            batch_n=256, peak_mem_bytes=None, threads=args.threads, runtime=runtime,
            notes=(f"{seconds:.2f} s to quantize; " if seconds is not None else "") + notes,
        )

    rows = [
        row("fp32 (PyTorch eager)", fp32_acc.top1, fp32_acc.top5, os.path.getsize(fp32_pt),
            "pytorch"),
        row("torch.ao FX PTQ (x86)", fx_acc.top1, fx_acc.top5, fx_bytes, "pytorch", fx_seconds,
            "state_dict of the converted model"),
    ]
    for name, (path, _quantized, seconds, _config) in onnx_models.items():
        notes = ""
        if name in rows_extra:
            extra = rows_extra[name]
            notes = (f"simulated top-1 {extra['simulated_top1']:.2f}, ONNX Runtime agrees with "
                     f"the simulation on {100 * extra['agreement']:.2f} %")
        rows.append(row(name, accuracy[name].top1, accuracy[name].top5, os.path.getsize(path),
                        "onnxruntime", seconds, notes))
    meta = {
        **machine_meta(), "threads": args.threads, "quantize_threads": args.quantize_threads,
        "calibration": f"first {args.per_class} training images of each class "
                       f"({len(train)} images)",
        "test_images": len(test), "rounds": args.rounds, "repeats": args.repeats,
        "quantize_seconds": {"torch.ao FX": fx_seconds, "quantize_static": ort_seconds,
                             **{n: v[2] for n, v in onnx_models.items() if v[1] is not None}},
        "torchslim": rows_extra,
    }
    table = BenchTable(rows, meta=meta)
    args.out.mkdir(parents=True, exist_ok=True)
    files = table.write(args.out, stem="ptq_resnet20")
    print(table.format_text())
    print(json.dumps({k: str(v) for k, v in files.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
