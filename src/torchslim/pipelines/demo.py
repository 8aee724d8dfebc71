"""The main job: train the demo CNN on the digits data, evaluate, summarise, compress it with three
recipes (gradual pruning; filter pruning with thinning; Tucker-2 factorization), distil it into a
depthwise-separable student, quantize it to int8 after training (run in ONNX Runtime beside the
fp32 model there), and benchmark them side by side.

Everything lands under one output folder (``runs/demo`` from the command line)::

    torchslim demo --out runs/demo

Example (a short run)::

    >>> import tempfile
    >>> from torchslim.pipelines.demo import run_demo
    >>> result = run_demo(tempfile.mkdtemp(), epochs=1, quiet=True, repeats=2, finetune_epochs=1)
    >>> sorted(result["files"])[:3]
    ['bench_csv', 'bench_json', 'bench_md']
    >>> for row in result["rows"]:
    ...     print(row["name"])
    demo_cnn (dense)
    demo_cnn (AGP 80 %)
    demo_cnn (filters -40 %, thinned)
    demo_cnn (Tucker-2, half the weights)
    demo_cnn (depthwise-separable student, distilled)
    demo_cnn (dense, ONNX Runtime)
    demo_cnn (int8 PTQ, ONNX Runtime)
"""

from __future__ import annotations

import copy
import dataclasses
import os
from pathlib import Path
from typing import Any

import torch

from ..analysis import summarize
from ..bench import BenchTable, plot_tradeoff
from ..bench.measure import measure_row
from ..data import BatchLoader, load_digits
from ..distill import KnowledgeDistillation
from ..lowrank import factorize
from ..models import create_model, get_model_spec
from ..quantization import QuantConfig
from ..recipe import load_recipe
from ..recipes import recipe_path
from ..schedule import CompressionScheduler, Policy
from ..train import TrainConfig, Trainer, evaluate, seed_everything
from .common import machine_meta, write_eval_outputs, write_summary
from .compress import compress
from .quantize import quantize_and_export

MODEL = "demo_cnn"
#: The compressed rows of the demo: (a recipe shipped in :mod:`torchslim.recipes`, row label),
#: fine-tuned from the trained dense model for FINETUNE_EPOCHS each.
RECIPE_ROWS = [
    ("demo_agp", "demo_cnn (AGP 80 %)"),
    ("demo_filters", "demo_cnn (filters -40 %, thinned)"),
    ("demo_lowrank", "demo_cnn (Tucker-2, half the weights)"),
]
STUDENT_LABEL = "demo_cnn (depthwise-separable student, distilled)"
FINETUNE_EPOCHS = 6


def run_demo(
    out: str | os.PathLike,
    epochs: int = 30,
    quiet: bool = False,
    repeats: int = 20,
    finetune_epochs: int = FINETUNE_EPOCHS,
) -> dict[str, Any]:
    """Train, evaluate and benchmark the demo CNN, then compress it with the recipes of
    :data:`RECIPE_ROWS`; return the JSON summary of the run."""
    out = Path(out)
    spec = get_model_spec(MODEL)
    train_set, test_set = load_digits("train"), load_digits("test")
    seed = 0
    seed_everything(seed)
    model = create_model(MODEL, num_classes=train_set.num_classes)
    # The data set's own augmentation: none for the digits (mirrored digits are not digits).
    train_batches = BatchLoader(
        train_set, 64, shuffle=True, augment="auto", normalization=spec.normalization, seed=seed
    )
    test_batches = BatchLoader(test_set, 256, normalization=spec.normalization)
    config = TrainConfig(epochs=epochs, lr=0.05, weight_decay=5e-4, schedule="cosine", seed=seed)
    trainer = Trainer(
        model, train_batches, config, eval_batches=test_batches,
        num_classes=train_set.num_classes, out_dir=out / "train", progress=not quiet,
        model_meta={"model": MODEL, "classes": train_set.classes},
    )
    trainer.fit()

    result = evaluate(model, test_batches, test_set.num_classes, test_set.classes)
    eval_payload = {"model": MODEL, "split": "test", **result.to_dict()}
    write_eval_outputs(result, eval_payload, out / "eval")

    summary = summarize(model, spec.input_shape)
    write_summary(summary, out)

    measure = {"num_classes": test_set.num_classes, "latency_batch": 256, "repeats": repeats}
    rows = [measure_row(
        "demo_cnn (dense)", model, spec.input_shape, test_batches, **measure,
        file_bytes=(out / "train" / "model.pt").stat().st_size,
    )]
    for recipe_name, label in RECIPE_ROWS:
        pruned = copy.deepcopy(model)
        run = compress(
            pruned, load_recipe(recipe_path(recipe_name)), train_batches,
            TrainConfig(epochs=finetune_epochs, lr=0.01, weight_decay=5e-4, schedule="cosine",
                        seed=seed),
            eval_batches=test_batches, num_classes=train_set.num_classes,
            out_dir=out / recipe_name, progress=not quiet,
            model_meta={"model": MODEL, "classes": train_set.classes},
            example_input=torch.zeros(1, *spec.input_shape),
        )
        rows.append(measure_row(
            label, run.model, spec.input_shape, test_batches, **measure,
            file_bytes=run.model_path.stat().st_size, notes=f"recipe {recipe_name}",
        ))
    # a depthwise-separable student trained from scratch on the dense model's soft targets
    student = create_model(MODEL, num_classes=train_set.num_classes)
    record = factorize(student, "depthwise_separable", reinitialize=True)
    schedule = CompressionScheduler(student, example_input=torch.zeros(1, *spec.input_shape))
    schedule.add(KnowledgeDistillation(copy.deepcopy(model), temperature=4.0,
                                       distill_weight=0.7), Policy(0), "distillation")
    run = compress(
        student, schedule, train_batches,
        TrainConfig(epochs=epochs, lr=0.05, weight_decay=5e-4, schedule="cosine", seed=seed),
        eval_batches=test_batches, num_classes=train_set.num_classes,
        out_dir=out / "distilled_student", progress=not quiet,
        model_meta={"model": MODEL, "classes": train_set.classes, "edits": [record]},
    )
    rows.append(measure_row(
        STUDENT_LABEL, run.model, spec.input_shape, test_batches, **measure,
        file_bytes=run.model_path.stat().st_size, notes="taught by demo_cnn (dense), T=4",
    ))
    # post-training int8 of the dense model, calibrated on 20 training images of each class
    calibration = BatchLoader(train_set.first_per_class(20), 100,
                              normalization=spec.normalization)
    ptq = quantize_and_export(
        model, QuantConfig(observer="histogram"), calibration, test_batches,
        torch.zeros(1, *spec.input_shape), out / "quantized", num_classes=test_set.num_classes,
        latency_batch=256, repeats=repeats,
    )
    fp32_onnx, int8_onnx = ptq.rows[2], ptq.rows[3]
    rows.append(dataclasses.replace(fp32_onnx, name="demo_cnn (dense, ONNX Runtime)"))
    rows.append(dataclasses.replace(int8_onnx, name="demo_cnn (int8 PTQ, ONNX Runtime)",
                                    notes=f"{int8_onnx.notes}; layout {ptq.chosen}"))
    table = BenchTable(rows, meta={**machine_meta(), "dataset": "digits", "split": "test",
                                   "images": len(test_set)})
    files = {f"bench_{kind}": str(path) for kind, path in table.write(out).items()}
    plot_path = out / "tradeoff.png"
    plot_tradeoff(table, plot_path)
    files.update(
        plot=str(plot_path), model=str(out / "train" / "model.pt"),
        summary=str(out / "summary.txt"), eval=str(out / "eval" / "report.txt"),
        int8_onnx=ptq.files["int8_onnx"], quantize_report=ptq.files["report"],
    )
    if not quiet:
        print(result.format_report())
        print()
        print(summary.format_table())
        print()
        print(table.format_text())
        print()
        print(ptq.verdict)
        print(f"\noutputs in {out}/")
    return {
        "top1": result.top1,
        "top5": result.top5,
        "params": summary.params,
        "nonzero_params": summary.nonzero_params,
        "macs": summary.macs,
        "sparsity": summary.sparsity,
        "rows": [row.to_dict() for row in rows],
        "files": files,
    }
