"""Weight-only storage and dynamic quantization: file size, accuracy and CPU latency.

1. Weight-only storage of the pretrained CIFAR ResNet-20 (JPEG CIFAR-10 test split):
   the float32 ``state_dict`` beside :func:`~torchslim.quantization.weight_only.save_weight_only`
   at 8 bits (one scale per output channel), 4 bits with groups of 128 weights (the default),
   of 32 weights, and with one scale per output channel. Every Conv and Linear weight is
   quantized; biases and BatchNorm stay float32. Accuracy is that of the file loaded back with
   ``load_weight_only`` (dequantized to float32, so it runs at the float model's speed: no
   latency is given for these rows; their non-zeros count the weights that round to 0).
2. Dynamic quantization of a Linear-heavy model: the zoo has no recurrent or keyword-spotting
   model, so an MLP on the flattened CIFAR images (3072-512-256-10, ReLU), trained here from
   seed 0 for ``--mlp-epochs`` epochs (SGD, lr 0.01, momentum 0.9, cosine, weight decay 5e-4,
   batch 128, no augmentation) on the train split (``--train-limit`` images). Rows: float32 and
   ``quantize_dynamic`` (torch.ao, int8) in PyTorch, float32 ONNX and
   ``quantize_dynamic_onnx`` (int8, 7-bit weights) in ONNX Runtime. File: the ``state_dict``
   (float32), ``save_dynamic`` (int8 PyTorch), the ``.onnx`` files. Latency at batch 1 and
   ``--batch`` with ``--threads`` threads (PyTorch ``torch.set_num_threads``, ONNX Runtime
   intra-op threads).

Writes benchmarks/results/quant_weight_only_dynamic.{md,csv,json} (or under ``--out``). Run
from the repository root after ``make install``:

    .venv/bin/python benchmarks/quant_weight_only_dynamic.py [--limit N] [--train-limit N]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import onnxruntime
import torch
from torch import nn

from torchslim.analysis import file_size_bytes, measure_latency, saved_file_size, summarize
from torchslim.bench import BenchRow, BenchTable
from torchslim.data import BatchLoader, load_dataset
from torchslim.export.onnx import export_onnx, session
from torchslim.models import create_model, load_weights
from torchslim.pipelines.common import machine_meta
from torchslim.quantization.dynamic import quantize_dynamic, quantize_dynamic_onnx, save_dynamic
from torchslim.quantization.weight_only import (
    load_weight_only,
    resolve_group_size,
    save_weight_only,
)
from torchslim.train import TrainConfig, Trainer, evaluate

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
WORK = ROOT / "runs" / "bench" / "quant_weight_only_dynamic"
SHAPE = (3, 32, 32)
STEM = "quant_weight_only_dynamic"


class OnnxModule(nn.Module):
    """An ONNX Runtime session behind ``nn.Module``'s call, so ``evaluate`` can score it."""

    def __init__(self, path: Path, threads: int) -> None:
        super().__init__()
        self.session = session(path, threads=threads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, {"input": x.numpy()})[0])


def mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 512), nn.ReLU(),
                         nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 10))


def make_row(name: str, model: nn.Module, file_bytes: int, top1: float, **fields) -> BenchRow:
    summary = summarize(model, SHAPE)
    return BenchRow(name=name, top1=top1, params=summary.params,
                    nonzero_params=summary.nonzero_params, macs=summary.macs,
                    sparsity=summary.sparsity, file_bytes=file_bytes, **fields)


def log(row: BenchRow) -> None:
    latency = (f"  b1 {row.latency_b1_ms:.3f} ms  b{row.batch_n} {row.latency_bn_ms:.2f} ms"
               if row.latency_b1_ms is not None else "")
    print(f"{row.name:<34} top-1 {row.top1:6.2f}  file {row.file_bytes:>10,} B{latency}",
          flush=True)


def weight_only_rows(shared: Path, batches) -> list[BenchRow]:
    weights = shared / "models" / "resnet20-12fca82f.th"
    model = load_weights(create_model("cifar_resnet20"), weights).eval()
    dense = file_size_bytes(model)
    rows = [make_row("resnet20 fp32", model, dense, evaluate(model, batches, 10).top1,
                     notes="float32 state_dict")]
    log(rows[-1])
    for name, bits, group_size in (("int8", 8, "auto"), ("int4 g128", 4, "auto"),
                                   ("int4 g32", 4, 32), ("int4 per-channel", 4, None)):
        path = save_weight_only(model, WORK / f"resnet20.{name.replace(' ', '_')}.pt", bits,
                                group_size=group_size)
        restored = load_weight_only(create_model("cifar_resnet20"), path).eval()
        size = saved_file_size(path)
        size_of_groups = resolve_group_size(group_size, bits)
        scales = "per channel" if size_of_groups is None else f"groups of {size_of_groups}"
        rows.append(make_row(
            f"resnet20 weight-only {name}", restored, size, evaluate(restored, batches, 10).top1,
            notes=f"{size / dense:.3f}x fp32 file; {bits}-bit weights, {scales}; "
                  "dequantized to float32 to run"))
        log(rows[-1])
    return rows


def train_mlp(shared: Path, epochs: int, limit: int | None) -> nn.Module:
    train = load_dataset(str(shared / "data" / "cifar10-jpeg.tar.gz"), "train")
    if limit:
        train = train.subset(limit)
    loader = BatchLoader(train, 128, shuffle=True, normalization="cifar")
    config = TrainConfig(epochs=epochs, lr=0.01, momentum=0.9, weight_decay=5e-4,
                         schedule="cosine", device="cpu", channels_last=False, seed=0)
    model = mlp()
    started = time.perf_counter()
    Trainer(model, loader, config, progress=False).fit()
    print(f"MLP trained: {epochs} epochs on {len(train)} images in "
          f"{time.perf_counter() - started:.0f} s", flush=True)
    return model.eval()


def latency(model: nn.Module | None, batch: int, threads: int, runner=None) -> float:
    return measure_latency(model, SHAPE, batch, threads=threads, warmup=5, repeats=30,
                           min_time_s=1.0, runner=runner).median_ms


def dynamic_rows(model: nn.Module, batches, batch: int, threads: int) -> list[BenchRow]:
    timing = {"batch_n": batch, "threads": threads}
    rows = []
    dense = file_size_bytes(model)
    runs = [("mlp fp32", model, dense, "pytorch", "float32 state_dict")]
    quantized = quantize_dynamic(model)
    saved = saved_file_size(save_dynamic(quantized, WORK / "mlp.dynamic.pt"))
    runs.append(("mlp dynamic int8", quantized, saved, "pytorch",
                 "torch.ao quantize_dynamic; file: save_dynamic"))
    fp32_onnx = export_onnx(model, torch.zeros(1, *SHAPE), WORK / "mlp.onnx")
    int8_onnx = quantize_dynamic_onnx(fp32_onnx, WORK / "mlp.int8.onnx")
    for name, path, note in (("mlp fp32", fp32_onnx, "float32 ONNX"),
                             ("mlp dynamic int8", int8_onnx,
                              "onnxruntime quantize_dynamic, 7-bit weights")):
        runs.append((name, OnnxModule(path, threads), saved_file_size(path), "onnxruntime",
                     note))
    float_runs: dict[str, tuple[int, float, float]] = {}  # runtime: its float32 numbers
    for name, runnable, size, runtime, note in runs:
        top1 = evaluate(runnable, batches, 10).top1
        if runtime == "onnxruntime":
            call = runnable.forward
            b1, bn = latency(None, 1, threads, call), latency(None, batch, threads, call)
        else:
            b1, bn = latency(runnable, 1, threads), latency(runnable, batch, threads)
        if name.endswith("fp32"):
            float_runs[runtime] = (size, b1, bn)
        else:
            base = float_runs[runtime]
            note += (f"; vs {runtime} fp32: {size / base[0]:.2f}x file, {base[1] / b1:.2f}x "
                     f"b1 speed, {base[2] / bn:.2f}x b{batch} speed")
        rows.append(make_row(name, model, size, top1, latency_b1_ms=b1, latency_bn_ms=bn,
                             runtime=runtime, notes=note, **timing))
        log(rows[-1])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--limit", type=int, default=None, help="CIFAR test images to use")
    parser.add_argument("--train-limit", type=int, default=None,
                        help="CIFAR train images the MLP is trained on (default: all)")
    parser.add_argument("--mlp-epochs", type=int, default=2)
    parser.add_argument("--batch", type=int, default=256, help="the large latency batch")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.manual_seed(0)
    np.random.seed(0)
    torch.set_num_threads(args.threads)
    test = load_dataset(str(args.shared / "data" / "cifar10-jpeg.tar.gz"), "test")
    if args.limit:
        test = test.subset(args.limit)
    batches = BatchLoader(test, 500, normalization="cifar")
    WORK.mkdir(parents=True, exist_ok=True)

    rows = weight_only_rows(args.shared, batches)
    model = train_mlp(args.shared, args.mlp_epochs, args.train_limit)
    rows += dynamic_rows(model, batches, args.batch, args.threads)

    meta = {**machine_meta(), "dataset": "cifar10-jpeg test", "test_images": len(test),
            "mlp_epochs": args.mlp_epochs, "mlp_train_images": args.train_limit or 50_000,
            "onnxruntime": onnxruntime.__version__,
            "weight_only_latency": "not measured: the file loads as a float32 model"}
    written = BenchTable(rows, meta=meta).write(args.out, stem=STEM)
    print(f"written: {written['md']}")


if __name__ == "__main__":
    main()
