"""Distiller's own YAML schedules, run unchanged on torchslim's copies of Distiller's models.

For every ``*.yaml`` under a Distiller checkout's ``examples/`` and ``tests/`` folders it records
whether torchslim validates it and, for the models of Distiller's zoo that torchslim has
(``resnet20_cifar`` ... ``simplenet_mnist``), runs it through its last thinning epoch, or two
epochs from its first pruning when it never thins (random minibatches: the shapes a schedule
leaves do not depend on the data, except for regularization thresholds). Where the file's
comments state Distiller's own result ("Total MACs" before and after, and the dense weight count
of its "Total sparsity" row), the table puts torchslim's numbers beside them.

Writes ``benchmarks/results/distiller_schedules.{json,md}``. No download: give the path of a
Distiller checkout (``git clone https://github.com/IntelLabs/distiller``)::

    .venv/bin/python benchmarks/distiller_schedules.py ../distiller
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import torch

from torchslim.analysis import summarize
from torchslim.core.errors import UserError
from torchslim.core.fileio import atomic_write_text
from torchslim.models import create_model
from torchslim.pipelines.common import machine_meta
from torchslim.recipe import build_scheduler, load_recipe
from torchslim.train import TrainConfig, Trainer

ROOT = Path(__file__).resolve().parents[1]
# The longer names first: a file named for preact_resnet20 is not one for resnet20.
ZOO = ["preact_resnet20_cifar", "preact_resnet32_cifar", "preact_resnet44_cifar",
       "preact_resnet56_cifar", "resnet20_cifar", "resnet32_cifar", "resnet44_cifar",
       "resnet56_cifar", "plain20_cifar", "vgg16_cifar", "simplenet_mnist"]
MACS = re.compile(r"Total MACs:\s*([\d,]+)")
TOTAL_ROW = re.compile(r"\|\s*\d+\s*\|\s*Total sparsity:\s*\|\s*-\s*\|\s*(\d+)\s*\|\s*(\d+)")
STRUCTURAL = ("pruner", "extension")


def arch_of(path: Path, text: str) -> str | None:
    """The model a Distiller file was written for: its ``--arch``/``-a`` command line or
    ``arch:`` key, else the file name."""
    for pattern in (r"--arch[= ]+([a-z0-9_]+)", r"\s-a[= ]+([a-z0-9_]+)",
                    r"arch:\s*'?([a-z0-9_]+)"):
        match = re.search(pattern, text)
        if match:
            return match.group(1)
    name = path.name.lower()
    return next((z for z in ZOO if z.rsplit("_", 1)[0] in name), None)


def weights(model: torch.nn.Module) -> int:
    """Distiller's parameter count: conv and fc weight tensors only."""
    return sum(p.numel() for n, p in model.named_parameters()
               if n.endswith("weight") and p.dim() > 1)


def run(path: Path, text: str, arch: str) -> dict:
    recipe = load_recipe(path)
    shape = (1, 28, 28) if "mnist" in arch else (3, 32, 32)
    torch.manual_seed(0)
    model = create_model(arch)
    before = {"weights": weights(model), "macs": summarize(model, shape).macs}
    schedule = build_scheduler(recipe, model, torch.zeros(1, *shape))
    # Shapes change only when the schedule thins: run until its last thinning (pruning after it
    # only masks); a schedule that never thins runs two epochs (its pruners fire, masks hold).
    thinning = [p.policy for p in recipe.policies if p.kind == "extension"]
    pruning = [p.policy for p in recipe.policies if p.kind in STRUCTURAL]
    if thinning:
        epochs = max(p.last if p.last is not None else p.first for p in thinning) + 1
    else:
        epochs = min(max([p.first for p in pruning], default=0) + 2, 400)
    data = [(torch.randn(2, *shape), torch.randint(0, 10, (2,))) for _ in range(2)]
    started = time.perf_counter()
    Trainer(model, data, TrainConfig(epochs=epochs, lr=1e-3, device="cpu"),
            callbacks=[schedule], progress=False).fit()
    schedule.finish()
    after = {"weights": weights(model), "macs": summarize(model.eval(), shape).macs}
    return {"epochs_run": epochs, "seconds": round(time.perf_counter() - started, 1),
            "before": before, "after": after}


def main(distiller: Path, out: Path) -> None:
    files = sorted([*distiller.glob("examples/**/*.yaml"), *distiller.glob("tests/**/*.yaml")])
    if not files:
        raise SystemExit(f"no YAML files under {distiller}/examples: give a Distiller checkout")
    rows = []
    for path in files:
        rel = str(path.relative_to(distiller))
        if path.is_symlink() or path.stat().st_size < 200 and "\n" not in path.read_text()[:-1]:
            rows.append({"file": rel, "status": "link to another file"})
            continue
        text = path.read_text()
        arch = arch_of(path, text)
        row = {"file": rel, "model": arch}
        published = [int(v.replace(",", "")) for v in MACS.findall(text)]
        totals = TOTAL_ROW.findall(text)
        if len(published) >= 2:
            row["distiller_macs"] = [published[0], published[-1]]
        if totals:
            row["distiller_weights_after"] = int(totals[-1][0])
        try:
            recipe = load_recipe(path)
        except UserError as err:
            row.update(status="rejected", reason=str(err))
            rows.append(row)
            continue
        row["schedules"] = sorted({p.kind for p in recipe.policies})
        if arch not in ZOO:
            row["status"] = "validates (model not in torchslim's zoo)"
            rows.append(row)
            continue
        try:
            row.update(run(path, text, arch), status="runs")
        except UserError as err:
            row.update(status="fails", reason=str(err))
        if "after" in row and "distiller_macs" in row:
            row["macs_match"] = row["after"]["macs"] == row["distiller_macs"][1]
        if "after" in row and "distiller_weights_after" in row:
            row["weights_match"] = row["after"]["weights"] == row["distiller_weights_after"]
        rows.append(row)
        print(rel, row["status"], row.get("macs_match"), row.get("weights_match"), flush=True)
    write(rows, distiller, out)


ELEMENT_WISE = {"AutomatedGradualPruner", "SensitivityPruner", "SparsityLevelParameterPruner",
                "LevelParameterPruner", "MagnitudeParameterPruner", "SplicingPruner"}


def _fine_grained_and_thinned(path: Path) -> bool:
    """Whether the schedule prunes element-wise and thins: Distiller's thinner then also removes
    the filters that fine-grained pruning happened to zero entirely while training (e.g. the six
    filters of layer3.2.conv1 with 3D sparsity 9.375 % in resnet20_filters.schedule_agp_3.yaml's
    table: 6 x 64 x 9 x 8 x 8 = 221,184 MACs, its whole difference to the shapes it prints)."""
    classes = {instance.spec.name for instance in load_recipe(path).instances.values()}
    return bool(classes & ELEMENT_WISE) and bool(
        classes & {"FilterRemover", "ChannelRemover", "StructureRemover"})


def write(rows: list[dict], distiller: Path, out: Path) -> None:
    meta = {**machine_meta(), "distiller": str(distiller)}
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    lines = [
        "# Distiller's schedules in torchslim",
        "",
        "Every YAML file of Distiller's `examples/` and `tests/` folders, read by torchslim "
        "unchanged; those for a model of Distiller's zoo that torchslim has are run through "
        "their last thinning epoch, or two epochs from their first pruning when they never thin "
        "(random minibatches: the shapes do not depend on the data). Where a file's comments "
        "state Distiller's result, torchslim's is beside it. Produced by "
        "`benchmarks/distiller_schedules.py` on a Distiller checkout.",
        "",
        f"{meta['date']}, torch {meta['torch']}. "
        + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + ".",
        "",
        "## Structured results against Distiller's published figures",
        "",
        "| file | model | Distiller MACs after | torchslim | Distiller weights after | "
        "torchslim | same |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if "distiller_macs" not in row or "after" not in row:
            continue
        weights_text = (f"{row['distiller_weights_after']:,}"
                        if "distiller_weights_after" in row else "-")
        same = all(row.get(k, True) for k in ("macs_match", "weights_match"))
        # Regularization (SSL) decides what thinning removes from the trained weights: on
        # random minibatches the shapes cannot be Distiller's.
        kinds = row.get("schedules", [])
        verdict = "yes" if same else "no"
        if "regularizer" in kinds:
            verdict += " (depends on training: regularization)"
        elif not same and _fine_grained_and_thinned(distiller / row["file"]):
            verdict += (" (depends on training: Distiller's thinner also removes filters that "
                        "fine-grained pruning zeroed whole, dropping their BatchNorm shift; "
                        "torchslim's keeps a channel whose removal would change the outputs)")
        elif "pruner" not in kinds:
            verdict += " (thins the zeros of the checkpoint it starts from)"
        lines.append(
            f"| {row['file']} | {row['model']} | {row['distiller_macs'][1]:,} | "
            f"{row['after']['macs']:,} | {weights_text} | {row['after']['weights']:,} | "
            f"{verdict} |")
    lines += ["", "## Every file", "", "| file | model | status | note |", "|---|---|---|---|"]
    for row in rows:
        note = row.get("reason", "")
        if row.get("status") == "runs":
            note = f"{row['epochs_run']} epochs run, {row['seconds']} s"
        note = note.replace("|", "\\|")
        lines.append(f"| {row['file']} | {row.get('model') or '-'} | {row['status']} | "
                     f"{note} |")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "distiller_schedules.md", "\n".join(lines) + "\n")
    atomic_write_text(out / "distiller_schedules.json",
                      json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("distiller", type=Path, help="a checkout of IntelLabs/distiller")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--tables-only", action="store_true",
                        help="rewrite the Markdown from the JSON of an earlier run")
    args = parser.parse_args()
    if args.tables_only:
        write(json.loads((args.out / "distiller_schedules.json").read_text())["rows"],
              args.distiller, args.out)
    else:
        main(args.distiller, args.out)
