"""One-shot pruning (no fine-tuning), torchslim beside its peers on the same machine and data.

1. ResNet-20 (pretrained, JPEG CIFAR-10 test split), global unstructured L1 pruning of every conv
   and linear weight at 50/70/90 %: torchslim's GlobalMagnitudePruner beside
   ``torch.nn.utils.prune.global_unstructured`` (L1Unstructured).
2. ResNet-20, structured L1 filter pruning of every channel group at 30/50/70 %, thinned, with
   and without re-estimating the BatchNorm statistics on 50 training batches: torchslim beside
   Torch-Pruning 1.6, whose failure on the zero-padding shortcuts is recorded.
3. The demo CNN (trained here on digits, 30 epochs), structured L1 filter pruning at 30/50/70 %:
   torchslim beside Torch-Pruning, a model both can prune.

Writes benchmarks/results/oneshot_pruning.{json,md}. Run from the repository root after
``make install`` and ``.venv/bin/pip install torch-pruning==1.6.1`` (the ``bench`` extra):

    .venv/bin/python benchmarks/oneshot_pruning.py [--limit N]
"""

from __future__ import annotations

import argparse
import copy
import importlib.metadata
import json
import traceback
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from torchslim.analysis import summarize
from torchslim.core.fileio import atomic_write_text
from torchslim.data import BatchLoader, load_dataset, load_digits
from torchslim.graph import build_graph
from torchslim.models import create_model, load_weights
from torchslim.pipelines.common import machine_meta
from torchslim.pipelines.demo import run_demo
from torchslim.pruning import GlobalMagnitudePruner, Masks
from torchslim.pruning.recalibration import recalibrate_batchnorm
from torchslim.pruning.structured import FilterNormPruner
from torchslim.pruning.thinning import thin
from torchslim.train import evaluate

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def conv_and_linear(model: nn.Module) -> list[tuple[nn.Module, str]]:
    return [(m, "weight") for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]


def row(benchmark, model_name, tool, level, model, batches, input_shape, note=""):
    summary = summarize(model, input_shape)
    top1 = evaluate(model, batches, 10).top1
    print(f"{benchmark:<28} {tool:<28} {level:>4} top-1 {top1:6.2f}  MACs {summary.macs:,}")
    return {
        "benchmark": benchmark, "model": model_name, "tool": tool, "level": level, "top1": top1,
        "params": summary.params, "nonzero_params": summary.nonzero_params, "macs": summary.macs,
        "note": note,
    }


def failure_row(benchmark, model_name, tool, level, error: BaseException) -> dict:
    message = f"{type(error).__name__}: {str(error).splitlines()[0]}"
    print(f"{benchmark:<28} {tool:<28} {level:>4} FAILED {message}")
    return {"benchmark": benchmark, "model": model_name, "tool": tool, "level": level,
            "top1": None, "params": None, "nonzero_params": None, "macs": None,
            "note": f"failed: {message}"}


def torch_pruning_filters(model: nn.Module, example: torch.Tensor, level: float) -> nn.Module:
    import torch_pruning as tp

    head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    pruner = tp.pruner.MetaPruner(
        model, example, importance=tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=level, ignored_layers=[head],
    )
    pruner.step()
    model(example)  # Torch-Pruning 1.6 leaves ResNet-20 unable to run: record that
    return model


def torchslim_filters(model: nn.Module, example: torch.Tensor, level: float) -> nn.Module:
    masks = Masks(model)
    FilterNormPruner(level).apply(build_graph(model, example), masks)
    thin(model, example, masks=masks)
    return model


def structured(benchmark, model_name, base, batches, train, input_shape, levels) -> list[dict]:
    example = torch.zeros(1, *input_shape)

    def recalibrated(model, example, level):
        torchslim_filters(model, example, level)
        recalibrate_batchnorm(model, train, num_batches=50)
        return model.eval()

    rows = []
    for level in levels:
        for tool, method in (("torchslim", torchslim_filters),
                             ("torchslim + BN recalibration", recalibrated),
                             ("Torch-Pruning " + TP_VERSION, torch_pruning_filters)):
            model = copy.deepcopy(base).eval()
            try:
                method(model, example, level)
            except Exception as err:  # a peer's crash is a result here, not a bug to hide
                traceback.print_exc(limit=1)
                rows.append(failure_row(benchmark, model_name, tool, level, err))
                continue
            rows.append(row(benchmark, model_name, tool, level, model, batches, input_shape,
                            "L1 filters, uniform, thinned"))
    return rows


def unstructured(base, batches, levels) -> list[dict]:
    bench, name, shape = "global unstructured L1", "cifar_resnet20", (3, 32, 32)
    rows = [row(bench, name, "dense", 0.0, base, batches, shape)]
    for level in levels:
        ours = copy.deepcopy(base).eval()
        GlobalMagnitudePruner(["*"], level).prune(Masks(ours))
        rows.append(row(bench, name, "torchslim", level, ours, batches, shape))
        theirs = copy.deepcopy(base).eval()
        torch_prune.global_unstructured(
            conv_and_linear(theirs), pruning_method=torch_prune.L1Unstructured, amount=level
        )
        agree = sum(
            int(((m.weight == 0) == (o.weight == 0)).sum())
            for (m, _), (o, _) in zip(conv_and_linear(theirs), conv_and_linear(ours), strict=True)
        ) / sum(m.weight.numel() for m, _ in conv_and_linear(theirs))
        rows.append(row(bench, name, f"torch.nn.utils.prune {torch.__version__}", level, theirs,
                        batches, shape, f"same zeros as torchslim: {100 * agree:.3f} %"))
    return rows


def to_markdown(rows: list[dict], meta: dict) -> str:
    lines = [
        "# One-shot pruning, no fine-tuning",
        "",
        f"Machine: {meta['processor']}, torch {meta['torch']}, {meta['threads']} threads; "
        f"CIFAR-10 test images: {meta['cifar_images']}; digits test images: 450.",
        "",
        "| benchmark | model | tool | level | top-1 % | params | non-zeros | MACs | note |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        top1 = f"{r['top1']:.2f}" if r["top1"] is not None else "—"
        nums = [f"{r[k]:,}" if r[k] is not None else "—"
                for k in ("params", "nonzero_params", "macs")]
        lines.append(f"| {r['benchmark']} | {r['model']} | {r['tool']} | {r['level']} | {top1} "
                     f"| {' | '.join(nums)} | {r['note']} |")
    return "\n".join(lines) + "\n"


TP_VERSION = importlib.metadata.version("torch-pruning")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--limit", type=int, default=None, help="CIFAR test images to use")
    args = parser.parse_args()
    cifar = load_dataset(str(args.shared / "data" / "cifar10-jpeg.tar.gz"), "test")
    if args.limit:
        cifar = cifar.subset(args.limit)
    cifar_batches = BatchLoader(cifar, 500, normalization="cifar")
    resnet = load_weights(create_model("cifar_resnet20"),
                          args.shared / "models" / "resnet20-12fca82f.th").eval()

    rows = unstructured(resnet, cifar_batches, [0.5, 0.7, 0.9])
    cifar_train = BatchLoader(load_dataset(str(args.shared / "data" / "cifar10-jpeg.tar.gz"),
                                           "train"), 128, shuffle=True, normalization="cifar")
    rows += structured("structured L1 filters", "cifar_resnet20", resnet, cifar_batches,
                       cifar_train, (3, 32, 32), [0.3, 0.5, 0.7])
    demo_dir = ROOT / "runs" / "bench" / "oneshot_demo"
    run_demo(demo_dir, quiet=True, repeats=2, finetune_epochs=1)
    demo = load_weights(create_model("demo_cnn"), demo_dir / "train" / "model.pt").eval()
    digits = BatchLoader(load_digits("test"), 450, normalization="digits")
    rows += [row("structured L1 filters", "demo_cnn", "dense", 0.0, demo, digits, (1, 8, 8))]
    digits_train = BatchLoader(load_digits("train"), 64, shuffle=True, normalization="digits")
    rows += structured("structured L1 filters", "demo_cnn", demo, digits, digits_train,
                       (1, 8, 8), [0.3, 0.5, 0.7])

    meta = {**machine_meta(), "torch_pruning": TP_VERSION, "cifar_images": len(cifar)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_text(RESULTS / "oneshot_pruning.json",
                      json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    atomic_write_text(RESULTS / "oneshot_pruning.md", to_markdown(rows, meta))
    print(f"written: {RESULTS / 'oneshot_pruning.md'}")


if __name__ == "__main__":
    main()
