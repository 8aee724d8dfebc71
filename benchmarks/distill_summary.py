"""Collect the runs of ``benchmarks/distill_lowrank.sh`` into one table with the issue's targets.

Reads ``RUNS/<name>.json`` (the last JSON line of each run: top-1 after the last epoch), loads
each run's saved model for its params, MACs and PyTorch latency (measured here, all models in
one run: the runs may have trained on other machines) and writes
``benchmarks/results/distill_lowrank.{json,md}`` (or ``--out``). Runs not finished yet are listed
as such, so the table can be written at any time. A run missing from RUNS keeps the row the
summary already written to ``--out`` holds for it (numbers and the day they were measured):
runs/ is not committed and a session may not redo every run, so rows accumulate across sessions.

    .venv/bin/python benchmarks/distill_summary.py runs/bench/distill
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from torchslim.analysis import measure_latency, summarize
from torchslim.core.fileio import atomic_write_text
from torchslim.models import create_model, load_weights
from torchslim.pipelines.common import machine_meta

ROOT = Path(__file__).resolve().parents[1]

#: (run, model, what it is)
RUNS = [
    ("r20_dense15", "cifar_resnet20", "ResNet-20 fine-tuned 15 epochs (teacher, baseline)"),
    ("r20_dense15_s0", "cifar_resnet20",
     "the same again, seed 0 (teacher and reference on another device)"),
    ("r20_agp90_kd", "cifar_resnet20", "ResNet-20 AGP 90 % + KD from the dense ResNet-20, 15 ep."),
    ("r20_agp90fast_kd", "cifar_resnet20", "the same, 90 % reached by epoch 6 (9 to recover)"),
    ("r20_agp90fast_kd_lr05", "cifar_resnet20", "the same, 90 % by epoch 6, lr 0.05"),
    ("r20_agp90fast_kd_lr10", "cifar_resnet20", "the same, 90 % by epoch 6, lr 0.1"),
    ("r20_agp90fast_kd_lr05_a05", "cifar_resnet20",
     "the same, 90 % by epoch 6, lr 0.05, alpha 0.5"),
    ("r20_agp90fast_hint_lr05", "cifar_resnet20",
     "the same, 90 % by epoch 6, lr 0.05, + hints on each stage's output"),
    ("r56_dense8", "cifar_resnet56", "ResNet-56 fine-tuned 8 epochs (teacher, baseline)"),
    ("r56_dense8_s0", "cifar_resnet56",
     "the same again (seed 0) on a later CPU: teacher and reference of r56_depth50/60_kd"),
    ("r56_inner_kd", "cifar_resnet56", "ResNet-56 inner filters -55 % + KD from ResNet-56, 8 ep."),
    ("r56_inner_kd_lr05", "cifar_resnet56", "the same, lr 0.05"),
    ("r56_inner_kd_a05", "cifar_resnet56", "the same, alpha 0.5"),
    ("r56_inner_hint", "cifar_resnet56", "the same, + hints on each stage's output (weight 1)"),
    ("r56_inner_hint01", "cifar_resnet56", "the same, + hints (weight 0.1)"),
    ("r56_target_macs_kd", "cifar_resnet56",
     "ResNet-56 sensitivity-allocated ratios (48 % MACs) + KD, 8 ep."),
    ("r56_target25_kd", "cifar_resnet56",
     "ResNet-56 sensitivity-allocated ratios (25 % MACs) + KD, 8 ep."),
    ("r56_target17_kd", "cifar_resnet56",
     "ResNet-56 sensitivity-allocated ratios (17 % MACs) + KD, 8 ep."),
    ("r56_depth30_kd", "cifar_resnet56",
     "ResNet-56, whole blocks removed (29 % MACs) + KD, 8 ep."),
    ("r56_depth30_kd16", "cifar_resnet56", "the same, 16 epochs"),
    ("r56_depth30_kd32", "cifar_resnet56", "the same, 32 epochs"),
    ("r56_depth30_kd64", "cifar_resnet56", "the same, 64 epochs"),
    ("r56_depth30_gradual32", "cifar_resnet56",
     "the same blocks removed in three steps (epochs 0, 4, 8), 32 epochs"),
    ("r56_depth30_hint32", "cifar_resnet56", "32 epochs, + hints on each stage's output"),
    ("r56_depth50_kd", "cifar_resnet56",
     "ResNet-56, whole blocks removed (50 % MACs) + KD, 8 ep."),
    ("r56_depth60_kd", "cifar_resnet56",
     "ResNet-56, whole blocks removed (60 % MACs) + KD, 8 ep."),
    ("r56_tucker2", "cifar_resnet56", "ResNet-56 Tucker-2, 1.5x fewer MACs, 8 epochs"),
    ("r20_plain10", "cifar_resnet20", "ResNet-20 fine-tuned 10 epochs"),
    *[(f"r20_plain10_s{seed}", "cifar_resnet20", f"the same, seed {seed}") for seed in range(4)],
    ("r20_kd_from_r56", "cifar_resnet20", "ResNet-20 taught by ResNet-56, 10 epochs"),
    *[(f"r20_kd_from_r56_s{seed}", "cifar_resnet20", f"the same, seed {seed}")
      for seed in range(1, 4)],
    ("r20_kd_from_r56_a05", "cifar_resnet20", "the same, alpha 0.5"),
    ("r20_kd_from_r56_lr05", "cifar_resnet20", "the same, lr 0.05"),
    ("r20_ds_scratch", "cifar_resnet20", "depthwise-separable ResNet-20 from scratch, 15 ep."),
    ("r20_ds_kd", "cifar_resnet20", "depthwise-separable ResNet-20 + KD from ResNet-20, 15 ep."),
    ("transfer_frozen", "cifar_resnet20", "cat vs dog: new head, frozen backbone, 5 epochs"),
    ("transfer_full", "cifar_resnet20", "cat vs dog: new head, everything trained, 5 epochs"),
    ("transfer_two_phase", "cifar_resnet20",
     "cat vs dog: head alone for 1 epoch, then everything, 5 epochs"),
]

_AGP = ["r20_agp90_kd", "r20_agp90fast_kd", "r20_agp90fast_kd_lr05", "r20_agp90fast_kd_lr10",
        "r20_agp90fast_kd_lr05_a05", "r20_agp90fast_hint_lr05"]
_HALF = ["r56_inner_kd", "r56_inner_kd_lr05", "r56_inner_kd_a05", "r56_inner_hint",
         "r56_inner_hint01", "r56_target_macs_kd"]
_KD = ["r20_kd_from_r56", "r20_kd_from_r56_a05", "r20_kd_from_r56_lr05"]

#: (runs, reference run, test on (gap, MACs ratio, params ratio), target text): one check per
#: run, every attempt listed
TARGETS = [
    (_AGP, "r20_dense15", lambda gap, macs, params: gap >= -1.0,
     "at most 1.0 point below the dense fine-tune"),
    (_HALF, "r56_dense8", lambda gap, macs, params: gap >= -0.5 and macs >= 2.0,
     "at least 2x fewer MACs, at most 0.5 point below"),
    (_KD, "r20_plain10", lambda gap, macs, params: gap >= 0.5,
     "at least 0.5 point above plain fine-tuning"),
    (["r56_tucker2"], "r56_dense8", lambda gap, macs, params: gap >= -1.0 and macs >= 1.5,
     "at least 1.5x fewer MACs, at most 1.0 point below"),
    (["r20_ds_kd"], "r20_ds_scratch", None, "distillation vs from scratch, same epochs"),
    (["r20_ds_scratch"], "r20_dense15", lambda gap, macs, params: params >= 4.0,
     "at most a quarter of ResNet-20's params"),
    (["transfer_full"], "transfer_frozen", None, "full fine-tuning vs frozen backbone"),
    (["transfer_two_phase"], "transfer_frozen", None, "head first, then everything, vs frozen"),
]

#: (runs, reference runs, least mean gain, target text): the mean over seeds of runs trained
#: on the same device, so that one run's luck does not decide the target
SEED_TARGETS = [
    ([*(f"r20_kd_from_r56_s{seed}" for seed in range(1, 4)), "r20_kd_from_r56"],
     [f"r20_plain10_s{seed}" for seed in range(4)], 0.5,
     "ResNet-56 teaching ResNet-20: at least 0.5 point above plain fine-tuning, mean of 4 "
     "seeds each"),
]


def _load(model: str, result: dict) -> torch.nn.Module | None:
    """The run's saved model (its file's edits rebuild it: thinned, factorized, a new head)."""
    path = result.get("model_path")
    if not path or not Path(path).is_file():
        return None
    return load_weights(create_model(model), path).eval()


def _size(net: torch.nn.Module | None) -> tuple[int | None, int | None, int | None]:
    """Params, non-zero params and MACs."""
    if net is None:
        return None, None, None
    summary = summarize(net, (3, 32, 32))
    return summary.params, summary.nonzero_params, summary.macs


def _latency(net: torch.nn.Module | None, repeats: int) -> tuple[float | None, float | None]:
    """PyTorch latency at batch 1 and 64 on this machine, one thread (the runs trained on
    different machines; their own end-of-run timings are not comparable)."""
    if net is None or repeats == 0:
        return None, None
    return tuple(measure_latency(net, (3, 32, 32), batch, repeats=repeats, threads=1).median_ms
                 for batch in (1, 64))


def _same_device(rows: dict, name: str, reference: str) -> str:
    """``reference``, or its rerun (``<reference>_s<seed>``) trained on the run's device."""
    device = rows[name].get("device")
    twins = [reference, *sorted(k for k in rows if k.startswith(f"{reference}_s"))]
    return next((k for k in twins if rows[k].get("device") == device
                 and rows[k]["top1"] is not None), reference)


def _check(rows: dict, name: str, reference: str, test, text: str) -> dict:
    reference = _same_device(rows, name, reference)
    a, b = rows[name], rows[reference]
    if a["top1"] is None or b["top1"] is None:
        return {"run": name, "reference": reference, "target": text, "met": None}
    gap = round(a["top1"] - b["top1"], 2)
    macs = b["macs"] / a["macs"] if a["macs"] and b["macs"] else 0.0
    params = b["params"] / a["params"] if a["params"] and b["params"] else 0.0
    return {"run": name, "reference": reference, "target": text, "gap": gap,
            "trained_on": f"{a.get('device')} / {b.get('device')}",
            "macs_reduction": round(macs, 3), "params_reduction": round(params, 3),
            "met": None if test is None else bool(test(gap, macs, params))}


def _committed(path: Path) -> dict[str, dict]:
    """Rows of an earlier summary that hold a measured top-1, by run name."""
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    date = data.get("meta", {}).get("date", "")[:10]
    return {row["run"]: {**row, "measured": row.get("measured", date)}
            for row in data.get("rows", []) if row.get("top1") is not None}


def main(runs: Path, out: Path, repeats: int = 10) -> None:
    results = {name: json.loads((runs / f"{name}.json").read_text())
               for name, _, _ in RUNS if (runs / f"{name}.json").is_file()}
    earlier = _committed(out / "distill_lowrank.json")
    today = machine_meta()["date"][:10]
    rows = {}
    for name, model, label in RUNS:
        if name not in results:
            rows[name] = ({**earlier[name], "label": label} if name in earlier
                          else {"run": name, "label": label, "top1": None})
            continue
        result = results[name]
        with torch.inference_mode():
            net = _load(model, result)
            params, nonzero, macs = _size(net)
            b1, bn = _latency(net, repeats)
        rows[name] = {"run": name, "label": label, "top1": round(result["top1"], 2),
                      "device": result.get("device"),
                      "epochs": result.get("epochs"), "params": params,
                      "nonzero_params": nonzero, "macs": macs,
                      "latency_b1_ms": b1, "latency_bn_ms": bn, "measured": today}
    checks = []
    for names, reference, test, text in TARGETS:
        for name in names:
            checks.append(_check(rows, name, reference, test, text))
    seed_checks = []
    for names, references, least, text in SEED_TARGETS:
        ours = [rows[n]["top1"] for n in names if rows[n]["top1"] is not None]
        theirs = [rows[n]["top1"] for n in references if rows[n]["top1"] is not None]
        check = {"runs": names, "references": references, "target": text,
                 "n": [len(ours), len(theirs)], "met": None}
        if ours and theirs:
            mean, reference_mean = sum(ours) / len(ours), sum(theirs) / len(theirs)
            devices = {rows[n]["device"] for n in [*names, *references] if rows[n]["top1"]}
            check.update(mean=round(mean, 2), reference_mean=round(reference_mean, 2),
                         gain=round(mean - reference_mean, 2), devices=sorted(map(str, devices)),
                         met=len(ours) == len(names) and len(theirs) == len(references)
                         and mean - reference_mean >= least)
        seed_checks.append(check)
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
        "Trained on: `cpu` is this machine (2 cores, one thread per run); `cuda` is an NVIDIA "
        "H100 lent for a session (TRAIN_ARGS='--device cuda --no-amp'), the same commands "
        "otherwise. GPU convolutions use TF32 and other kernels, so the same seed does not "
        "give the same number on both: compare runs trained on the same device, and see the "
        "seed rows for the spread.",
        "",
        f"Summary written on: {meta['cpu']} ({meta['machine']}, int8 dot product: "
        f"{', '.join(meta['int8_dot']) or 'none'}), torch {meta['torch']}, {meta['date']}. "
        "Latency: PyTorch on this machine, one thread, batch 1 and 64, all models in this one "
        "run (median of " + str(repeats) + "); a row kept from an earlier summary (an earlier "
        "`measured` day) keeps that summary's latency.",
        "",
        "| run | what | trained on | top-1 % | params | non-zeros | MACs | b1 ms | b64 ms "
        "| measured |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows.values():
        def fmt(value, spec=""):
            return "-" if value is None else format(value, spec)
        lines.append(f"| {row['run']} | {row['label']} | {fmt(row.get('device'))} | "
                     f"{fmt(row['top1'], '.2f')} | "
                     f"{fmt(row.get('params'), ',')} | {fmt(row.get('nonzero_params'), ',')} | "
                     f"{fmt(row.get('macs'), ',')} | "
                     f"{fmt(row.get('latency_b1_ms'), '.2f')} | "
                     f"{fmt(row.get('latency_bn_ms'), '.1f')} | {fmt(row.get('measured'))} |")
    lines += ["", "| run | against | target | gap (points) | MACs | params | trained on | met |",
              "|---|---|---|---|---|---|---|---|"]
    for check in checks:
        if "gap" not in check:
            lines.append(f"| {check['run']} | {check['reference']} | {check['target']} | "
                         "not run yet | | | | |")
            continue
        lines.append(f"| {check['run']} | {check['reference']} | {check['target']} | "
                     f"{check['gap']:+.2f} | {check['macs_reduction']:.2f}x | "
                     f"{check['params_reduction']:.2f}x | {check['trained_on']} | "
                     f"{'-' if check['met'] is None else 'yes' if check['met'] else 'no'} |")
    lines += ["", "| runs | against | target | mean top-1 % | against | gain | trained on | met |",
              "|---|---|---|---|---|---|---|---|"]
    for check in seed_checks:
        if "gain" not in check:
            lines.append(f"| {', '.join(check['runs'])} | {', '.join(check['references'])} | "
                         f"{check['target']} | not run yet | | | | |")
            continue
        lines.append(f"| {', '.join(check['runs'])} | {', '.join(check['references'])} | "
                     f"{check['target']} | {check['mean']:.2f} (n={check['n'][0]}) | "
                     f"{check['reference_mean']:.2f} (n={check['n'][1]}) | "
                     f"{check['gain']:+.2f} | {', '.join(check['devices'])} | "
                     f"{'yes' if check['met'] else 'no'} |")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "distill_lowrank.md", "\n".join(lines) + "\n")
    atomic_write_text(out / "distill_lowrank.json", json.dumps(
        {"meta": meta, "rows": list(rows.values()), "checks": checks,
         "seed_checks": seed_checks}, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--repeats", type=int, default=10,
                        help="latency repeats per model and batch (0: no latency; default: 10)")
    args = parser.parse_args()
    main(args.runs, args.out, args.repeats)
