"""Feature-map reconstruction against plain channel removal, without fine-tuning.

The pretrained ResNet-20 loses the ``--ratios`` fraction of the inner channels of every residual
block (the input channels of each ``layer*.*.conv2``, ranked by the L1 norm of its weights),
once by Distiller's ``L1RankedStructureParameterPruner`` (the channels removed, nothing else)
and once by its ``FMReconstructionChannelPruner`` (then each conv2 refitted by least squares on
feature maps sampled from ``--batches`` training minibatches of 128 images). Both see the same
training minibatches in train mode and no optimizer step; plain removal prunes before them, so
its BatchNorm statistics adapt to the pruned network, while reconstruction prunes after them
(an advantage to plain removal). Top-1 on the 10,000 JPEG CIFAR-10 test images.

    .venv/bin/python benchmarks/fm_reconstruction_resnet20.py [--ratios 0.3 0.5 0.7]

Writes benchmarks/results/fm_reconstruction_resnet20.{md,json}.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import torch

from torchslim.core.fileio import atomic_write_text
from torchslim.data import BatchLoader, load_dataset
from torchslim.models import create_model, load_weights
from torchslim.pipelines.common import machine_meta
from torchslim.recipe import build_scheduler, parse_recipe
from torchslim.train import evaluate

ROOT = Path(__file__).resolve().parents[1]
RECIPE = """
pruners:
  p:
    class: {cls}
    group_type: Channels
    desired_sparsity: {ratio}
    weights: ['layer*.*.conv2.weight']{extra}
policies:
  - pruner: {{instance_name: p}}
    epochs: [0]
"""


def pruned_top1(base, cls: str, ratio: float, train, evaluation, batches: int) -> float:
    model = copy.deepcopy(base)
    extra = f"\n    collect_batches: {batches}" if cls.startswith("FM") else ""
    recipe = parse_recipe(RECIPE.format(cls=cls, ratio=ratio, extra=extra), "fm.yaml")
    schedule = build_scheduler(recipe, model, torch.zeros(1, 3, 32, 32))
    model.train()
    schedule.on_epoch_begin(0)
    with torch.no_grad():
        for index, (x, _) in enumerate(train):
            schedule.on_minibatch_begin(0, index, len(train))
            model(x)
    schedule.on_epoch_end(0)
    schedule.finish()
    return evaluate(model.eval(), evaluation, 10).top1


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    p.add_argument("--ratios", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    p.add_argument("--batches", type=int, default=16)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(1)
    data = args.shared / "data" / "cifar10-jpeg.tar.gz"
    test = load_dataset(data, "test", progress=False)
    train = load_dataset(data, "train", progress=False).subset(128 * (args.batches + 1), seed=0)
    evaluation = list(BatchLoader(test, 500, normalization="cifar"))
    minibatches = list(BatchLoader(train, 128, normalization="cifar"))
    base = load_weights(create_model("cifar_resnet20"),
                        args.shared / "models" / "resnet20-12fca82f.th")
    dense = evaluate(copy.deepcopy(base).eval(), evaluation, 10).top1
    rows = []
    for ratio in args.ratios:
        plain = pruned_top1(base, "L1RankedStructureParameterPruner", ratio, minibatches,
                            evaluation, args.batches)
        refit = pruned_top1(base, "FMReconstructionChannelPruner", ratio, minibatches,
                            evaluation, args.batches)
        rows.append({"ratio": ratio, "removed": plain, "reconstructed": refit})
        print(rows[-1], flush=True)
    meta = {**machine_meta(), "dense_top1": dense, "batches": args.batches,
            "test_images": len(test)}
    lines = [
        "# Feature-map reconstruction against plain channel removal (ResNet-20, no fine-tuning)",
        "",
        "Produced by `benchmarks/fm_reconstruction_resnet20.py` (see its docstring). Top-1 % on "
        f"the 10,000 JPEG CIFAR-10 test images; dense {dense:.2f} %.",
        "",
        f"Machine: {meta['machine']}, torch {meta['torch']}, {meta['date']}.",
        "",
        "| inner channels removed | channels removed (L1) | removed, then refitted |",
        "|---:|---:|---:|",
    ]
    lines += [f"| {100 * r['ratio']:.0f} % | {r['removed']:.2f} | {r['reconstructed']:.2f} |"
              for r in rows]
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "fm_reconstruction_resnet20.md", "\n".join(lines) + "\n")
    atomic_write_text(args.out / "fm_reconstruction_resnet20.json",
                      json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
