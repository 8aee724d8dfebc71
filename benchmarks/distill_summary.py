"""Collect the runs of ``benchmarks/distill_lowrank.sh`` into one table with the issue's targets.

Reads ``RUNS/<name>.json`` (the last JSON line of each run: top-1 after the last epoch; the
compress and distill runs also hold their benchmark rows, latency included) and writes
``benchmarks/results/distill_lowrank.{json,md}`` (or ``--out``). Runs not finished yet are listed
as such, so the table can be written at any time.

    .venv/bin/python benchmarks/distill_summary.py runs/bench/distill
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from torchslim.analysis import summarize
from torchslim.core.fileio import atomic_write_text
from torchslim.models import create_model, load_weights
from torchslim.pipelines.common import machine_meta

ROOT = Path(__file__).resolve().parents[1]

#: (run, model, what it is)
RUNS = [
    ("r20_dense15", "cifar_resnet20", "ResNet-20 fine-tuned 15 epochs (teacher, baseline)"),
    ("r20_agp90_kd", "cifar_resnet20", "ResNet-20 AGP 90 % + KD from the dense ResNet-20, 15 ep."),
    ("r56_dense8", "cifar_resnet56", "ResNet-56 fine-tuned 8 epochs (teacher, baseline)"),
    ("r56_inner_kd", "cifar_resnet56", "ResNet-56 inner filters -55 % + KD from ResNet-56, 8 ep."),
    ("r56_target_macs_kd", "cifar_resnet56",
     "ResNet-56 sensitivity-allocated ratios (48 % MACs) + KD, 8 ep."),
    ("r56_target25_kd", "cifar_resnet56",
     "ResNet-56 sensitivity-allocated ratios (25 % MACs) + KD, 8 ep."),
    ("r56_target17_kd", "cifar_resnet56",
     "ResNet-56 sensitivity-allocated ratios (17 % MACs) + KD, 8 ep."),
    ("r56_depth30_kd", "cifar_resnet56",
     "ResNet-56, whole blocks removed (29 % MACs) + KD, 8 ep."),
    ("r56_tucker2", "cifar_resnet56", "ResNet-56 Tucker-2, 1.5x fewer MACs, 8 epochs"),
    ("r20_plain10", "cifar_resnet20", "ResNet-20 fine-tuned 10 epochs"),
    ("r20_kd_from_r56", "cifar_resnet20", "ResNet-20 taught by ResNet-56, 10 epochs"),
    ("r20_ds_scratch", "cifar_resnet20", "depthwise-separable ResNet-20 from scratch, 15 ep."),
    ("r20_ds_kd", "cifar_resnet20", "depthwise-separable ResNet-20 + KD from ResNet-20, 15 ep."),
    ("transfer_frozen", "cifar_resnet20", "cat vs dog: new head, frozen backbone, 5 epochs"),
    ("transfer_full", "cifar_resnet20", "cat vs dog: new head, everything trained, 5 epochs"),
    ("transfer_two_phase", "cifar_resnet20",
     "cat vs dog: head alone for 1 epoch, then everything, 5 epochs"),
]

#: (run, reference run, what is compared, test on (gap, MACs ratio, params ratio), target text)
TARGETS = [
    ("r20_agp90_kd", "r20_dense15", lambda gap, macs, params: gap >= -1.0,
     "at most 1.0 point below the dense fine-tune"),
    ("r56_inner_kd", "r56_dense8", lambda gap, macs, params: gap >= -0.5 and macs >= 2.0,
     "at least 2x fewer MACs, at most 0.5 point below"),
    ("r56_target_macs_kd", "r56_dense8", lambda gap, macs, params: gap >= -0.5 and macs >= 2.0,
     "at least 2x fewer MACs, at most 0.5 point below"),
    ("r20_kd_from_r56", "r20_plain10", lambda gap, macs, params: gap >= 0.5,
     "at least 0.5 point above plain fine-tuning"),
    ("r56_tucker2", "r56_dense8", lambda gap, macs, params: gap >= -1.0 and macs >= 1.5,
     "at least 1.5x fewer MACs, at most 1.0 point below"),
    ("r20_ds_kd", "r20_ds_scratch", None, "distillation vs from scratch, same epochs"),
    ("r20_ds_scratch", "r20_dense15", lambda gap, macs, params: params >= 4.0,
     "at most a quarter of ResNet-20's params"),
    ("transfer_full", "transfer_frozen", None, "full fine-tuning vs frozen backbone"),
    ("transfer_two_phase", "transfer_frozen", None, "head first, then everything, vs frozen"),
]


def _size(model: str, result: dict) -> tuple[int | None, int | None, int | None]:
    """Params, non-zero params and MACs of the run's saved model (its file's edits rebuild
    it: thinned, factorized, a new head)."""
    path = result.get("model_path")
    if not path or not Path(path).is_file():
        return None, None, None
    net = load_weights(create_model(model), path)
    summary = summarize(net.eval(), (3, 32, 32))
    return summary.params, summary.nonzero_params, summary.macs


def _latency(result: dict) -> tuple[float | None, float | None]:
    rows = result.get("rows") or []
    if len(rows) < 2:
        return None, None
    return rows[1].get("latency_b1_ms"), rows[1].get("latency_bn_ms")


def main(runs: Path, out: Path) -> None:
    results = {name: json.loads((runs / f"{name}.json").read_text())
               for name, _, _ in RUNS if (runs / f"{name}.json").is_file()}
    rows = {}
    for name, model, label in RUNS:
        if name not in results:
            rows[name] = {"run": name, "label": label, "top1": None}
            continue
        result = results[name]
        with torch.inference_mode():
            params, nonzero, macs = _size(model, result)
        b1, bn = _latency(result)
        rows[name] = {"run": name, "label": label, "top1": round(result["top1"], 2),
                      "epochs": result.get("epochs"), "params": params,
                      "nonzero_params": nonzero, "macs": macs,
                      "latency_b1_ms": b1, "latency_bn_ms": bn}
    checks = []
    for name, reference, test, text in TARGETS:
        a, b = rows[name], rows[reference]
        if a["top1"] is None or b["top1"] is None:
            checks.append({"run": name, "reference": reference, "target": text, "met": None})
            continue
        gap = round(a["top1"] - b["top1"], 2)
        macs = b["macs"] / a["macs"] if a["macs"] and b["macs"] else 0.0
        params = b["params"] / a["params"] if a["params"] and b["params"] else 0.0
        checks.append({"run": name, "reference": reference, "target": text, "gap": gap,
                       "macs_reduction": round(macs, 3), "params_reduction": round(params, 3),
                       "met": None if test is None else bool(test(gap, macs, params))})
    meta = {**machine_meta(), "runs": str(runs)}
    lines = [
        "# Distillation, low-rank factorization and transfer learning (issue 11)",
        "",
        "JPEG CIFAR-10, 50,000 training images (crop and flip), top-1 on the 10,000 test images "
        "(the cat/dog rows: those two classes only). SGD, cosine schedule, batch 128; lr 0.02 "
        "from pretrained weights, 0.1 from scratch; distillation with T = 4, alpha = 0.9. "
        "Produced by `benchmarks/distill_lowrank.sh` (resumable) and "
        "`benchmarks/distill_summary.py`.",
        "",
        f"Machine: {meta['machine']}, torch {meta['torch']}, {meta['threads']} threads, "
        f"{meta['date']}. Latency: PyTorch, batch 1 and 64, measured at the end of each run.",
        "",
        "| run | what | top-1 % | params | non-zeros | MACs | b1 ms | b64 ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows.values():
        def fmt(value, spec=""):
            return "-" if value is None else format(value, spec)
        lines.append(f"| {row['run']} | {row['label']} | {fmt(row['top1'], '.2f')} | "
                     f"{fmt(row.get('params'), ',')} | {fmt(row.get('nonzero_params'), ',')} | "
                     f"{fmt(row.get('macs'), ',')} | "
                     f"{fmt(row.get('latency_b1_ms'), '.2f')} | "
                     f"{fmt(row.get('latency_bn_ms'), '.1f')} |")
    lines += ["", "| run | against | target | gap (points) | MACs | params | met |",
              "|---|---|---|---|---|---|---|"]
    for check in checks:
        if "gap" not in check:
            lines.append(f"| {check['run']} | {check['reference']} | {check['target']} | "
                         "not run yet | | | |")
            continue
        lines.append(f"| {check['run']} | {check['reference']} | {check['target']} | "
                     f"{check['gap']:+.2f} | {check['macs_reduction']:.2f}x | "
                     f"{check['params_reduction']:.2f}x | "
                     f"{'-' if check['met'] is None else 'yes' if check['met'] else 'no'} |")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "distill_lowrank.md", "\n".join(lines) + "\n")
    atomic_write_text(out / "distill_lowrank.json", json.dumps(
        {"meta": meta, "rows": list(rows.values()), "checks": checks}, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    main(args.runs, args.out)
