"""Seed 001's post-training quantization study on the pretrained ResNet-20: the activation
observer x the calibration-set size, then the scale multiplier alpha centred at zero or at the
minimum.

int8 (per-channel int8 weights, uint8 activations, BatchNorm folded) simulated in PyTorch;
top-1 on the 10,000 JPEG CIFAR-10 test images. Calibration sets are nested: the first N / 10
training images of every class (N = 100, 1,000, 5,000, 10,000), fed in that order; each
observer keeps calibrating from one size to the next and is frozen on a copy at each size.
The multiplier sweep (seed 001's Table 4: alpha 0.95 ... 1.00, plus 0.90 and 1.05)
rescales every activation scale of the min/max-calibrated model at 10,000 images.

Writes benchmarks/results/ptq_observer_study.{json,md,png}. Run from the repository root after
``make install``:

    .venv/bin/python benchmarks/ptq_observer_study.py [--threads 1] [--limit N]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

from torchslim.core.fileio import atomic_write_text
from torchslim.data import BatchLoader, load_dataset
from torchslim.models import create_model, load_weights
from torchslim.pipelines.common import machine_meta
from torchslim.quantization import (
    FakeQuantize,
    QuantConfig,
    activation_quantizers,
    calibrate,
    freeze,
    prepare,
)
from torchslim.train import evaluate

ROOT = Path(__file__).resolve().parents[1]
SIZES = (100, 1000, 5000, 10000)
OBSERVERS = ("minmax", "moving_average", "histogram", "percentile", "mse")
ALPHAS = (0.9, 0.95, 0.96, 0.97, 0.98, 0.99, 1.0, 1.05)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    p.add_argument("--limit", type=int, default=None, help="test images (default: all)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--observers", nargs="+", default=list(OBSERVERS))
    p.add_argument("--sizes", nargs="+", type=int, default=list(SIZES))
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "bench" / "ptq_observer_study",
                   help="results so far (a rerun skips what is there)")
    return p.parse_args(argv)


def frozen_top1(prepared, evaluation) -> float:
    model = freeze(copy.deepcopy(prepared))
    return evaluate(model, evaluation, 10).top1


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    data = args.shared / "data" / "cifar10-jpeg.tar.gz"
    test = load_dataset(data, "test", progress=False)
    if args.limit:
        test = test.subset(args.limit, seed=0)
    train = load_dataset(data, "train", progress=False)
    evaluation = list(BatchLoader(test, 500, normalization="cifar"))
    model = load_weights(create_model("cifar_resnet20"),
                         args.shared / "models" / "resnet20-12fca82f.th").eval()
    example = torch.zeros(1, 3, 32, 32)
    fp32 = evaluate(model, evaluation, 10).top1
    sizes = sorted(args.sizes)
    # nested calibration sets: the images each size adds to the one before
    chunks, taken = [], torch.zeros(len(train), dtype=torch.bool)
    for size in sizes:
        wanted = torch.zeros(len(train), dtype=torch.bool)
        for label in range(train.num_classes):
            wanted[torch.nonzero(train.labels == label).flatten()[:size // 10]] = True
        chunks.append(_select(train, torch.nonzero(wanted & ~taken).flatten()))
        taken |= wanted
    partial_path = args.work / f"partial_{len(test)}.json"
    partial = json.loads(partial_path.read_text()) if partial_path.is_file() else {}
    args.work.mkdir(parents=True, exist_ok=True)

    def keep(key: str, value) -> None:
        partial[key] = value
        atomic_write_text(partial_path, json.dumps(partial))

    grid: dict[str, dict[int, float]] = {}
    seconds: dict[str, float] = {}
    for observer in args.observers:
        done = partial.get(f"grid/{observer}")
        if done is not None and all(str(size) in done for size in sizes):
            grid[observer] = {size: done[str(size)] for size in sizes}
            seconds[observer] = partial.get(f"seconds/{observer}")
            continue
        prepared = prepare(model, example, QuantConfig(observer=observer))
        grid[observer], started = {}, time.perf_counter()
        for size, chunk in zip(sizes, chunks, strict=True):
            calibrate(prepared, BatchLoader(chunk, 200, normalization="cifar"))
            grid[observer][size] = frozen_top1(prepared, evaluation)
            print(f"{observer:>15} {size:>6}: {grid[observer][size]:.2f}", file=sys.stderr)
        seconds[observer] = time.perf_counter() - started
        keep(f"grid/{observer}", {str(k): v for k, v in grid[observer].items()})
        keep(f"seconds/{observer}", seconds[observer])
    # the multiplier sweep, on the min/max observer at the largest size
    prepared = prepare(model, example, QuantConfig(observer="minmax"))
    for chunk in chunks:
        calibrate(prepared, BatchLoader(chunk, 200, normalization="cifar"))
    sweep: dict[str, dict[float, float]] = {"zero": {}, "min": {}}
    for center in sweep:
        for alpha in ALPHAS:
            if f"sweep/{center}/{alpha}" in partial:
                sweep[center][alpha] = partial[f"sweep/{center}/{alpha}"]
                continue
            copy_ = copy.deepcopy(prepared)
            for quantizer in activation_quantizers(copy_).values():
                if isinstance(quantizer, FakeQuantize):
                    quantizer.multiplier, quantizer.center = alpha, center
            sweep[center][alpha] = frozen_top1(copy_, evaluation)
            keep(f"sweep/{center}/{alpha}", sweep[center][alpha])
            print(f"alpha {alpha} centre {center}: {sweep[center][alpha]:.2f}", file=sys.stderr)
    result = {
        "meta": {**machine_meta(), "threads": args.threads, "test_images": len(test),
                 "fp32_top1": fp32, "calibration": "first N/10 training images of each class",
                 "weights": "int8 symmetric per channel, min/max",
                 "activations": "uint8 affine per tensor", "seconds_per_observer": seconds},
        "observer_x_size": grid,
        "multiplier_sweep": {"observer": "minmax", "calibration_images": sizes[-1],
                             **{c: {str(a): v for a, v in s.items()} for c, s in sweep.items()}},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "ptq_observer_study.json", json.dumps(result, indent=2) + "\n")
    atomic_write_text(args.out / "ptq_observer_study.md", markdown(result, sizes) + "\n")
    plot(result, sizes, args.out / "ptq_observer_study.png")
    print(markdown(result, sizes))
    return 0


def _select(dataset, index: torch.Tensor):
    from torchslim.data import ArrayDataset

    return ArrayDataset(dataset.images[index], dataset.labels[index], dataset.classes)


def markdown(result: dict, sizes: list[int]) -> str:
    meta = result["meta"]
    lines = [
        f"ResNet-20, int8 PTQ simulated in PyTorch, top-1 % on {meta['test_images']:,} test "
        f"images (fp32: {meta['fp32_top1']:.2f} %); calibration: {meta['calibration']}.",
        "",
        "| observer | " + " | ".join(f"{s:,}" for s in sizes) + " |",
        "|---|" + "---|" * len(sizes),
    ]
    for observer, row in result["observer_x_size"].items():
        lines.append(f"| {observer} | " + " | ".join(f"{row[s]:.2f}" for s in sizes) + " |")
    sweep = result["multiplier_sweep"]
    alphas = list(sweep["zero"])
    lines += [
        "",
        f"Scale multiplier alpha on every activation scale (min/max observer, "
        f"{sweep['calibration_images']:,} calibration images):",
        "",
        "| alpha | centre at zero | centre at the minimum |",
        "|---|---|---|",
    ]
    for alpha in alphas:
        lines.append(f"| {float(alpha):.2f} | {sweep['zero'][alpha]:.2f} | "
                     f"{sweep['min'][alpha]:.2f} |")
    return "\n".join(lines)


def plot(result: dict, sizes: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for observer, row in result["observer_x_size"].items():
        left.plot(sizes, [row[s] for s in sizes], marker="o", label=observer)
    left.axhline(result["meta"]["fp32_top1"], color="grey", linestyle="--", label="fp32")
    left.set(xscale="log", xlabel="calibration images", ylabel="top-1 %",
             title="observer x calibration size")
    left.legend(fontsize=8)
    sweep = result["multiplier_sweep"]
    for center in ("zero", "min"):
        alphas = [float(a) for a in sweep[center]]
        right.plot(alphas, list(sweep[center].values()), marker="o", label=f"centre at {center}")
    right.axhline(result["meta"]["fp32_top1"], color="grey", linestyle="--", label="fp32")
    right.set(xlabel="scale multiplier alpha", ylabel="top-1 %", title="scale multiplier")
    right.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    tmp.replace(path)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
