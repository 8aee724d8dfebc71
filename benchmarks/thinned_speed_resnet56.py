"""How much of the MACs a thinned ResNet-56 saves turns into speed in ONNX Runtime, fp32 and int8.

Speed does not depend on the weights, so the models are the zoo's ResNet-56 pruned by filter norm
at uniform ratios, thinned, exported, and (int8) quantized with min/max observers on random
calibration batches in torchslim's default layout (u8s7; the other layouts too for one model);
three models also get an int8 row with the layers whose int8 kernels are slower here kept in
float (``torchslim quantize --speed-search``, torchslim.pipelines.speed).
Three ways to prune: the inner channels of each residual block only (``layer*.*.conv1``: the
residual stream keeps its width), every channel group (the residual streams too), and every group
keeping a multiple of 8 channels (``round_to=8``). Two more models keep every layer's width and
remove whole residual blocks instead (torchslim.pruning.depth): the last ones of each stage, down
to 3/3/3 blocks (ResNet-20's shape) and 3/3/2. Latency at batch 256 (and 1), one thread, the
median of ``--rounds`` round-robin rounds; speed-up against the dense fp32 model in ONNX Runtime
in the same run.

    .venv/bin/python benchmarks/thinned_speed_resnet56.py [--rounds 5]

Writes benchmarks/results/thinned_speed_resnet56.{md,json}.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
from pathlib import Path

import torch
from ptq_resnet20 import interleaved_latency

from torchslim.analysis import summarize
from torchslim.core.fileio import atomic_write_text
from torchslim.export.onnx import export_onnx, session
from torchslim.graph import build_graph
from torchslim.models import create_model
from torchslim.pipelines.common import machine_meta
from torchslim.pipelines.quantize import layout_config
from torchslim.pipelines.speed import paired_latency, select_float_layers
from torchslim.pruning.depth import remove_blocks, residual_blocks
from torchslim.pruning.masks import Masks
from torchslim.pruning.structured import FilterNormPruner
from torchslim.pruning.thinning import thin
from torchslim.quantization import QuantConfig, quantize

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = torch.zeros(1, 3, 32, 32)
#: (name, ratio, which groups, round_to)
VARIANTS = [
    ("dense", 0.0, "all", 1),
    ("inner 50 %", 0.5, "inner", 1),
    ("inner 75 %", 0.75, "inner", 1),
    ("all 50 %", 0.5, "all", 1),
    ("all 55 %", 0.55, "all", 1),
    ("all 55 %, round_to 8", 0.55, "all", 8),
    ("all 65 %", 0.65, "all", 1),
    ("all 65 %, round_to 8", 0.65, "all", 8),
    ("depth 3/3/3 blocks", (3, 3, 3), "depth", 1),
    ("depth 3/3/2 blocks", (3, 3, 2), "depth", 1),
]
#: variants that also get an int8 row with the layers faster in float kept float
SEARCHED = ("dense", "all 50 %", "all 65 %, round_to 8", "depth 3/3/2 blocks")
#: int8 layouts also tried on "all 50 %": (name, layout, per-channel weights)
LAYOUTS = [("u8s8", "u8s8", True), ("s8s8", "s8s8", True), ("u8u8", "u8u8", True),
           ("u8s7 per tensor", "u8s7", False)]


def pruned(ratio, groups: str, round_to: int) -> torch.nn.Module:
    model = create_model("cifar_resnet56").eval()
    if groups == "depth":  # ratio: blocks kept per stage
        blocks = [block for block in residual_blocks(model, EXAMPLE)
                  if int(block.name.split(".")[1]) >= ratio[int(block.name[5]) - 1]]
        remove_blocks(model, blocks)
    elif ratio:
        layers = None
        if groups == "inner":
            layers = [name for name, _ in model.named_modules()
                      if name.startswith("layer") and name.endswith("conv1")]
        FilterNormPruner(ratio, round_to=round_to).apply(build_graph(model, EXAMPLE),
                                                         Masks(model), layers)
        thin(model, EXAMPLE)
    return model


def widths(model: torch.nn.Module) -> str:
    """Output channels of the first convolution of each stage's blocks, and of conv1 inside."""
    stages = []
    for stage in ("layer1", "layer2", "layer3"):
        block = getattr(model, stage)[1]
        count = sum(not isinstance(b, torch.nn.ReLU) for b in getattr(model, stage))
        blocks = f" x{count}" if count != 9 else ""
        stages.append(f"{block.conv2.out_channels}/{block.conv1.out_channels}{blocks}")
    return " ".join(stages)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(1)
    calibration = [torch.randn(32, 3, 32, 32) for _ in range(4)]
    config = layout_config(QuantConfig(observer="minmax"), "u8s7")
    sessions, info, searched = {}, {}, {}
    dense_macs = summarize(create_model("cifar_resnet56"), (3, 32, 32)).macs
    with tempfile.TemporaryDirectory() as work:
        for index, (name, ratio, groups, round_to) in enumerate(VARIANTS):
            model = pruned(ratio, groups, round_to)
            info[name] = {"macs": summarize(model, (3, 32, 32)).macs / dense_macs,
                          "widths": widths(model)}
            path = Path(work) / f"{index}.onnx"
            sessions[f"{name}|fp32"] = session(export_onnx(model, EXAMPLE, path), 1)
            if ratio or name in SEARCHED:
                quantized = quantize(model, config, calibration, EXAMPLE)
                int8 = export_onnx(quantized, EXAMPLE, Path(work) / f"{index}_int8.onnx")
                sessions[f"{name}|int8"] = session(int8, 1)
            if name in SEARCHED:  # int8 only where it is faster here (quantize --speed-search)
                selection = select_float_layers(
                    model, config, calibration, EXAMPLE, work,
                    measure=paired_latency((3, 32, 32), 256, threads=1))
                mixed = quantize(model, dataclasses.replace(
                    config, exclude=selection.float_layers), calibration, EXAMPLE)
                path = export_onnx(mixed, EXAMPLE, Path(work) / f"{index}_mixed.onnx")
                sessions[f"{name}|int8, float where faster"] = session(path, 1)
                searched[name] = selection.to_dict()
                print(selection.format())
            if name == "all 50 %":
                for label, layout, per_channel in LAYOUTS:
                    other = dataclasses.replace(layout_config(QuantConfig(observer="minmax"),
                                                              layout), per_channel=per_channel)
                    quantized = quantize(model, other, calibration, EXAMPLE)
                    int8 = export_onnx(quantized, EXAMPLE, Path(work) / f"{index}_{label}.onnx")
                    sessions[f"{name}|int8 {label}"] = session(int8, 1)
        runners = {name: (lambda x, sess=sess: sess.run(None, {"input": x.numpy()}))
                   for name, sess in sessions.items()}
        b256 = interleaved_latency(runners, 256, args.rounds, 3)
        b1 = interleaved_latency(runners, 1, args.rounds, 20)
    dense = b256["dense|fp32"]
    rows = []
    for key in sessions:
        name, precision = key.split("|")
        rows.append({"model": name, "precision": precision, "macs": round(info[name]["macs"], 4),
                     "widths": info[name]["widths"], "b1_ms": round(b1[key], 3),
                     "b256_ms": round(b256[key], 1), "speedup_b256": round(dense / b256[key], 2)})
    meta = {**machine_meta(), "threads": 1, "rounds": args.rounds, "layout": "u8s7",
            "speed_search": searched,
            "load_average": [round(v, 2) for v in os.getloadavg()]}
    lines = [
        "# Thinned ResNet-56: MACs against speed in ONNX Runtime",
        "",
        "Produced by `benchmarks/thinned_speed_resnet56.py` (see its docstring). Widths: output "
        "channels of each stage's residual stream / of the inner convolution (layer1 layer2 "
        "layer3), and xN when a stage keeps N of its 9 blocks. Speed-up: dense fp32 ONNX "
        "Runtime latency at batch 256 over the row's.",
        "",
        f"Machine: {meta['machine']}, torch {meta['torch']}, {meta['date']}, 1 thread; load "
        f"average {meta['load_average'][0]} (other jobs share the cores: compare rows within "
        "this run only).",
        "",
        "| model | precision | MACs (of dense) | widths | batch 1 ms | batch 256 ms | speed-up |",
        "|---|---|---:|---|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(f"| {row['model']} | {row['precision']} | {row['macs']:.2f} | "
                     f"{row['widths']} | {row['b1_ms']:.2f} | {row['b256_ms']:.1f} | "
                     f"{row['speedup_b256']:.2f}x |")
    lines += ["", "\"int8, float where faster\": the layer groups (same shape) that the speed "
              "search kept in float, measured in the whole model at batch 256:", ""]
    for name, found in searched.items():
        total = sum(trial["layers"] for trial in found["trials"]  # each layer once
                    if not trial["group"].endswith("groups left in int8"))
        kept = [f"{t['group']} ({t['layers']})" for t in found["trials"] if t["kept_float"]]
        lines.append(f"- {name}: {len(found['float_layers'])} of {total} layers in float"
                     + (f": {', '.join(kept)}" if kept else ""))
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "thinned_speed_resnet56.md", "\n".join(lines) + "\n")
    atomic_write_text(args.out / "thinned_speed_resnet56.json",
                      json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
