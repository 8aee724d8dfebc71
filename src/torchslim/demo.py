"""The main job: train the demo CNN on the digits data, evaluate, summarise and benchmark it.

Everything lands under one output folder (``runs/demo`` from the command line)::

    torchslim demo --out runs/demo

Example (a short run)::

    >>> import tempfile
    >>> from torchslim.demo import run_demo
    >>> result = run_demo(tempfile.mkdtemp(), epochs=1, quiet=True, repeats=2)
    >>> sorted(result["files"])[:3]
    ['bench_csv', 'bench_json', 'bench_md']
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .analysis import summarize
from .bench import BenchTable, plot_tradeoff
from .bench.measure import measure_row
from .commands import machine_meta, write_eval_outputs
from .data import BatchLoader, load_digits
from .fileio import atomic_write_text
from .models import create_model, get_model_spec
from .train import TrainConfig, Trainer, evaluate, seed_everything

MODEL = "demo_cnn"


def run_demo(
    out: str | os.PathLike, epochs: int = 30, quiet: bool = False, repeats: int = 20
) -> dict[str, Any]:
    """Train, evaluate and benchmark the demo CNN; return the JSON summary of the run."""
    out = Path(out)
    spec = get_model_spec(MODEL)
    train_set, test_set = load_digits("train"), load_digits("test")
    seed = 0
    seed_everything(seed)
    model = create_model(MODEL, num_classes=train_set.num_classes)
    train_batches = BatchLoader(
        train_set, 64, shuffle=True, augment=False, normalization=spec.normalization, seed=seed
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
    atomic_write_text(out / "summary.txt", summary.format_table() + "\n")
    atomic_write_text(out / "summary.json", json.dumps(summary.to_dict(), indent=2) + "\n")

    row = measure_row(
        "demo_cnn (dense)", model, spec.input_shape, test_batches,
        num_classes=test_set.num_classes, latency_batch=256, repeats=repeats,
        file_bytes=(out / "train" / "model.pt").stat().st_size,
    )
    table = BenchTable([row], meta={**machine_meta(), "dataset": "digits", "split": "test",
                                    "images": len(test_set)})
    files = {f"bench_{kind}": str(path) for kind, path in table.write(out).items()}
    plot_path = out / "tradeoff.png"
    plot_tradeoff(table, plot_path)
    files.update(
        plot=str(plot_path), model=str(out / "train" / "model.pt"),
        summary=str(out / "summary.txt"), eval=str(out / "eval" / "report.txt"),
    )
    if not quiet:
        print(result.format_report())
        print()
        print(summary.format_table())
        print()
        print(table.format_text())
        print(f"\noutputs in {out}/")
    return {
        "top1": result.top1,
        "top5": result.top5,
        "params": summary.params,
        "nonzero_params": summary.nonzero_params,
        "macs": summary.macs,
        "sparsity": summary.sparsity,
        "rows": [row.to_dict()],
        "files": files,
    }
