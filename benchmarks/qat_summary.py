"""Collect the runs of ``benchmarks/qat_resnet20.sh`` into one table.

Reads ``RUNS/<name>.json`` (the last JSON line of each run) and writes
``benchmarks/results/qat_resnet20.{json,md}``: top-1 after 10 epochs of each quantization-aware
training beside the fp32 model fine-tuned for the same epochs, and the gap to it. A run missing
from RUNS keeps the row the committed JSON holds for it, with the date it was measured (runs/ is
not committed, and a session may not finish every run), so rows accumulate across sessions.

    .venv/bin/python benchmarks/qat_summary.py runs/bench/qat_resnet20
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from torchslim.core.fileio import atomic_write_text
from torchslim.pipelines.common import machine_meta

ROOT = Path(__file__).resolve().parents[1]
RUNS = [
    ("fp32", "fp32, fine-tuned", None),
    ("fp32_cuda", "fp32, fine-tuned (the same run on the GPU)", None),
    ("w8a8", "W8A8 (int8 weights per channel, uint8 activations, observer ranges)", 0.1),
    ("lsq_w4a4", "LSQ W4A4 (learned step sizes)", 2.0),
    ("dorefa_w4a4", "DoReFa W4A4", None),
    ("pact_w4a4", "PACT W4A4 (DoReFa weights)", None),
    ("w8a8_kd", "W8A8, distilling from the fine-tuned fp32 model", 0.1),
    ("w8a8_late", "W8A8, fp32 for 5 epochs, then 5 of quantization-aware training", 0.1),
    ("lsq_w4a4_kd", "LSQ W4A4, distilling from the fine-tuned fp32 model", 2.0),
    ("lsq_w4a4_mse_kd", "LSQ W4A4 started from MSE ranges, distilling", 2.0),
    ("fp32_ptq", "for reference: the fine-tuned fp32 model post-training quantized (W8A8, "
     "min/max, 1,000 training images), int8 in ONNX Runtime", None),
]
#: the fp32 run each device's rows are compared with
REFERENCE = {"cpu": "fp32", "cuda": "fp32_cuda"}


def _committed(path: Path) -> dict[str, dict]:
    """Rows of the committed summary that hold a measured top-1, by run name."""
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    date = data.get("meta", {}).get("date")
    return {row["run"]: {"top1": row["top1"], "device": row.get("device", "cpu"),
                         "epochs": row.get("epochs"), "measured": row.get("measured", date)}
            for row in data.get("rows", []) if row.get("top1") is not None}


def _top1(result: dict) -> dict:
    """A run's JSON with its top-1 on top: `torchslim quantize` gives rows, one per runtime;
    its top-1 is the int8 model's in ONNX Runtime."""
    if "top1" in result:
        return result
    int8 = [row for row in result.get("rows", [])
            if row["runtime"] == "onnxruntime" and row["name"].startswith("int8")]
    if not int8:
        raise SystemExit(f"no top-1 and no int8 ONNX Runtime row in {result}")
    return {**result, "top1": int8[0]["top1"], "device": "cpu"}


def main(runs: Path) -> None:
    rows = []
    results_dir = ROOT / "benchmarks" / "results"
    results = _committed(results_dir / "qat_resnet20.json")
    for name, _, _ in RUNS:
        path = runs / f"{name}.json"
        if path.is_file():
            results[name] = _top1(json.loads(path.read_text()))
            results[name]["measured"] = time.strftime(
                "%Y-%m-%d", time.localtime(path.stat().st_mtime))
    for name, label, target in RUNS:
        if name not in results:
            rows.append({"run": name, "label": label, "top1": None, "note": "not run"})
            continue
        top1, device = results[name]["top1"], results[name].get("device", "cpu")
        reference = REFERENCE.get(device, "fp32")
        dense = results.get(reference, {}).get("top1")
        gap = None if dense is None or name in REFERENCE.values() else round(top1 - dense, 2)
        met = None if target is None or gap is None else gap >= -target
        rows.append({"run": name, "label": label, "top1": round(top1, 2), "device": device,
                     "reference": reference, "gap": gap, "target": target, "met": met,
                     "epochs": results[name].get("epochs"),
                     "measured": (results[name].get("measured") or "")[:10]})
    meta = {**machine_meta(), "runs": str(runs)}
    lines = [
        "# Quantization-aware training, ResNet-20, JPEG CIFAR-10",
        "",
        "Every run starts from the pretrained ResNet-20 (81.03 %) and trains 10 epochs (SGD, lr "
        "0.02, cosine, batch 128, crop and flip) on the 50,000 JPEG training images; top-1 on the "
        "10,000 JPEG test images, in PyTorch (the quantizers simulate the integer arithmetic). "
        "The `_kd` rows add knowledge distillation (T=4, alpha 0.9) with the fine-tuned fp32 row "
        "as teacher. Produced by `benchmarks/qat_resnet20.sh`. Trained on: `cpu` is this "
        "machine, `cuda` an NVIDIA H100 lent for a session (TRAIN_ARGS='--device cuda "
        "--no-amp'); each row is compared with the fp32 run trained on the same device. "
        "`measured`: the day the run finished (rows are kept from earlier sessions until rerun).",
        "",
        f"Summary written on: {meta['cpu']} ({meta['machine']}, int8 dot product: "
        f"{', '.join(meta['int8_dot']) or 'none'}), torch {meta['torch']}, {meta['date']}.",
        "",
        "| run | trained on | top-1 % | vs fp32 fine-tuned | target | measured |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        gap = "" if row.get("gap") is None else f"{row['gap']:+.2f}"
        verdict = {True: "met", False: "missed", None: "no fp32 run on that device yet"}
        target = "" if row.get("target") is None else (
            f"within {row['target']}: {verdict[row.get('met')]}")
        top1 = "—" if row["top1"] is None else f"{row['top1']:.2f}"
        lines.append(f"| {row['label']} | {row.get('device', '')} | {top1} | {gap} | {target} "
                     f"| {row.get('measured', '')} |")
    atomic_write_text(results_dir / "qat_resnet20.json",
                      json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    atomic_write_text(results_dir / "qat_resnet20.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "runs" / "bench" / "qat_resnet20")
