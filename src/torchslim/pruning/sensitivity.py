"""Pruning sensitivity analysis (Han et al. 2015; Li et al. 2017; Distiller's sensitivity tool).

For each prunable weight and each sparsity level: prune that weight alone, evaluate, restore.
Granularities: ``element`` (smallest magnitudes), ``filter`` (output channels with the smallest
L1 norm) and ``channel`` (input channels with the smallest L1 norm), as Distiller ranks them, and
``group``: a coupled channel group of the traced model, pruned as structured pruning prunes it
(the curves :func:`torchslim.pruning.allocation.allocate_ratios` turns into per-group ratios),
and ``block``: each removable residual block removed alone (:mod:`torchslim.pruning.depth`; one
evaluation per block, at level 1.0, whatever the levels).
The result is a table (CSV, JSON) and a plot of accuracy against sparsity, one line per layer.

Example::

    >>> import torch
    >>> from torchslim.pruning.sensitivity import sensitivity_analysis
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2))
    >>> score = lambda m: {"top1": float(m[0].weight.detach().abs().sum())}
    >>> result = sensitivity_analysis(model, score, levels=[0.0, 0.5], progress=False)
    >>> [(r.name, r.level) for r in result.rows][:2]
    [('0.weight', 0.0), ('0.weight', 0.5)]
    >>> result.rows[0].top1 > result.rows[1].top1
    True
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from ..core.errors import UserError
from ..core.fileio import atomic_write_text, make_folder
from ..core.names import match_parameters
from ..graph import build_graph
from .depth import block_names, residual_blocks, without_block
from .methods import LevelMethod, pruned_count
from .structured import FilterNormPruner, removal_count

GRANULARITIES = ("element", "filter", "channel", "group", "block")


def structure_mask(weight: torch.Tensor, sparsity: float, dim: int) -> torch.Tensor:
    """Keep-mask zeroing the ``sparsity`` fraction of slices along ``dim`` (0 = filters,
    1 = input channels) with the smallest L1 norm; at least one slice is kept."""
    other = [d for d in range(weight.dim()) if d != dim]
    norms = weight.detach().abs().sum(dim=other) if other else weight.detach().abs()
    count = min(pruned_count(norms.numel(), sparsity), norms.numel() - 1)
    keep = torch.ones(norms.numel(), dtype=torch.bool)
    keep[torch.argsort(norms, stable=True)[:count]] = False
    shape = [1] * weight.dim()
    shape[dim] = -1
    return keep.view(shape).expand_as(weight)


def prune_mask(weight: torch.Tensor, sparsity: float, granularity: str) -> torch.Tensor:
    """The keep-mask of ``weight`` at ``sparsity`` for one granularity."""
    if granularity == "element":
        return LevelMethod(sparsity).compute_mask(weight)
    return structure_mask(weight, sparsity, 0 if granularity == "filter" else 1)


def prunable_weights(model: nn.Module, granularity: str) -> list[str]:
    """Conv and linear weights (input-channel pruning needs a weight with an input axis)."""
    return [
        name
        for name, module in model.named_modules()
        for pname, param in module.named_parameters(recurse=False)
        if pname == "weight" and isinstance(module, nn.Conv2d | nn.Linear)
        and (granularity != "channel" or param.shape[1] > 1)
        for name in [f"{name}.weight" if name else "weight"]
    ]


@dataclass
class SensitivityRow:
    """One evaluation: ``name`` pruned alone to ``level`` at ``granularity``."""

    name: str
    granularity: str
    level: float
    sparsity: float
    top1: float
    top5: float | None = None
    loss: float | None = None


@dataclass
class SensitivityResult:
    """All rows, with the helpers to write them."""

    rows: list[SensitivityRow]
    meta: dict[str, Any] = field(default_factory=dict)

    def to_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(asdict(self.rows[0])) if self.rows else [])
        writer.writeheader()
        for row in self.rows:
            writer.writerow(asdict(row))
        return buffer.getvalue()

    def to_dict(self) -> dict[str, Any]:
        return {"meta": self.meta, "rows": [asdict(row) for row in self.rows]}

    def plot(self, path: str | os.PathLike) -> None:
        """Accuracy against sparsity, one line per weight, one panel per granularity."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        kinds = [g for g in GRANULARITIES if any(r.granularity == g for r in self.rows)]
        fig, axes = plt.subplots(1, len(kinds), figsize=(6.5 * len(kinds), 4.8), squeeze=False)
        for ax, kind in zip(axes[0], kinds, strict=True):
            rows = [r for r in self.rows if r.granularity == kind]
            if kind == "block":  # one evaluation per block: a bar each
                ax.bar(range(len(rows)), [r.top1 for r in rows], color="tab:gray")
                dense = (self.meta.get("dense") or {}).get("top1")
                if dense is not None:
                    ax.axhline(dense, color="tab:red", linestyle="--", linewidth=1)
                    ax.text(len(rows) - 0.5, dense + 1, f"whole model {dense:.2f} %",
                            ha="right", fontsize=7, color="tab:red")
                ax.set_xticks(range(len(rows)), [r.name for r in rows], rotation=90, fontsize=6)
                ax.set(title="residual blocks, one removed at a time", ylabel="top-1 %",
                       ylim=(0, 100))
                ax.grid(alpha=0.3, axis="y")
                continue
            for name in dict.fromkeys(r.name for r in rows):
                mine = [r for r in rows if r.name == name]
                ax.plot([r.level for r in mine], [r.top1 for r in mine], marker=".", label=name)
            ax.set(title=f"{kind} pruning, one layer at a time", xlabel="sparsity of the layer",
                   ylabel="top-1 %", ylim=(0, 100))
            ax.grid(alpha=0.3)
        handles, labels = axes[0][0].get_legend_handles_labels()
        for ax in axes[0][1:]:
            if not labels:
                handles, labels = ax.get_legend_handles_labels()
        fig.tight_layout(rect=(0, 0, 0.86, 1) if labels else None)
        if labels:
            fig.legend(handles, labels, loc="center left", bbox_to_anchor=(0.86, 0.5),
                       fontsize=6, ncol=1 + len(labels) // 30)
        make_folder(Path(path).parent)
        tmp = Path(path).with_suffix(".tmp.png")
        fig.savefig(tmp, dpi=120)
        plt.close(fig)
        os.replace(tmp, path)

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> SensitivityResult:
        """Read what :meth:`write` wrote as ``STEM.json``."""
        try:
            data = json.loads(Path(path).read_text())
            return cls([SensitivityRow(**row) for row in data["rows"]], data.get("meta", {}))
        except FileNotFoundError:
            raise UserError(f"sensitivity results '{path}' not found: check the path") from None
        except (ValueError, KeyError, TypeError) as err:
            raise UserError(
                f"'{path}' is not a sensitivity JSON written by torchslim sensitivity ({err})"
            ) from None

    def write(self, out_dir: str | os.PathLike, stem: str = "sensitivity") -> dict[str, Path]:
        """``STEM.csv``, ``STEM.json`` and ``STEM.png`` under ``out_dir``, atomically."""
        out = Path(out_dir)
        paths = {"csv": out / f"{stem}.csv", "json": out / f"{stem}.json",
                 "png": out / f"{stem}.png"}
        atomic_write_text(paths["csv"], self.to_csv())
        atomic_write_text(paths["json"], json.dumps(self.to_dict(), indent=2) + "\n")
        self.plot(paths["png"])
        return paths


@contextmanager
def _masked(model: nn.Module, masks: dict[str, torch.Tensor]) -> Iterator[None]:
    """``model`` with the ``masks`` applied to its parameters, restored after."""
    params = dict(model.named_parameters())
    originals = {key: params[key].detach().clone() for key in masks}
    with torch.no_grad():
        for key, mask in masks.items():
            params[key].mul_(mask)
    try:
        yield
    finally:
        with torch.no_grad():
            for key, original in originals.items():
                params[key].copy_(original)


def _jobs(model, granularity, weights, levels, example_input):
    """(name, level, pruned fraction, context that prunes it) of every evaluation."""
    params = dict(model.named_parameters())
    if granularity in ("group", "block") and example_input is None:
        raise ValueError(f"{granularity} sensitivity traces the model: pass example_input")
    if granularity == "block":
        blocks = residual_blocks(model, example_input)
        if not blocks:
            raise UserError(f"{type(model).__name__} has no residual block to remove (block "
                            "sensitivity needs submodules computing x + f(x) or "
                            "relu(x + f(x))): choose another granularity")
        if weights:  # patterns select blocks by name
            chosen = block_names(blocks, weights)
            blocks = [b for b in blocks if b.name in chosen]
        for block in blocks:
            yield block.name, 1.0, 1.0, lambda block=block: without_block(model, block)
        return
    if granularity == "group":
        graph = build_graph(model, example_input)
        groups = graph.select(None)
        if weights:  # patterns select the groups whose channels the matched layers produce
            layers = {name.rsplit(".", 1)[0] for name in match_parameters(model, weights)}
            chosen = set()
            for layer in layers:
                try:
                    chosen.update(group.name for group in graph.select([layer]))
                except UserError:  # a matched layer with no prunable output channels
                    continue
            groups = [group for group in groups if group.name in chosen]
            if not groups:
                raise UserError(f"no prunable channel group is produced by the layers of "
                                f"{', '.join(weights)}: pick convolutions or linears whose "
                                "outputs can be pruned (see 'torchslim summary')")
        for group in groups:
            for level in levels:
                masks = FilterNormPruner(level).compute_mask(graph, [group.name])
                fraction = removal_count(level, len(group.channels)) / len(group.channels)
                yield group.name, level, fraction, lambda masks=masks: _masked(model, masks)
        return
    names = match_parameters(model, weights) if weights else prunable_weights(model, granularity)
    for name in names:
        for level in levels:
            mask = prune_mask(params[name], level, granularity)
            yield (name, level, 1.0 - mask.float().mean().item(),
                   lambda masks={name: mask}: _masked(model, masks))


def sensitivity_analysis(
    model: nn.Module,
    evaluate: Callable[[nn.Module], dict[str, float]],
    levels: Sequence[float],
    weights: Sequence[str] | None = None,
    granularities: Sequence[str] = ("element",),
    progress: bool = True,
    example_input: torch.Tensor | None = None,
) -> SensitivityResult:
    """Prune each weight alone at each level, ``evaluate(model)`` (a dict with ``top1`` and
    optionally ``top5``, ``loss``), and restore it. ``weights`` are name patterns (default: every
    conv and linear weight). Granularity ``group`` prunes each coupled channel group of the
    traced model (see :mod:`torchslim.graph`; needs ``example_input``) by filter L1
    norm, as structured pruning and thinning will; ``block`` removes each residual block alone
    (needs ``example_input``; ``weights`` patterns then select blocks by name)."""
    for granularity in granularities:
        if granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    jobs = [
        (granularity, *job)
        for granularity in granularities
        for job in _jobs(model, granularity, weights, levels, example_input)
    ]
    rows = []
    for granularity, name, level, fraction, pruned in tqdm(
        jobs, desc="sensitivity", disable=not progress
    ):
        with pruned():
            scores = evaluate(model)
        rows.append(SensitivityRow(
            name, granularity, float(level), round(fraction, 6), float(scores["top1"]),
            scores.get("top5"), scores.get("loss"),
        ))
    return SensitivityResult(rows, {"levels": list(levels), "granularities": list(granularities)})


def format_sensitivity(result: SensitivityResult, dense_top1: float | None = None) -> str:
    """A text table: one line per (granularity, weight), top-1 at each level."""
    levels = list(dict.fromkeys(row.level for row in result.rows))
    width = max((len(row.name) for row in result.rows), default=4)
    header = f"{'weight':<{width}}  {'kind':<7}" + "".join(f"{level:>7.2f}" for level in levels)
    lines = [header, "-" * len(header)]
    if dense_top1 is not None:
        lines.insert(0, f"dense top-1: {dense_top1:.2f} %")
    seen: dict[tuple[str, str], dict[float, float]] = {}
    for row in result.rows:
        seen.setdefault((row.granularity, row.name), {})[row.level] = row.top1
    for (kind, name), by_level in seen.items():
        cells = "".join(f"{by_level.get(level, float('nan')):>7.2f}" for level in levels)
        lines.append(f"{name:<{width}}  {kind:<7}{cells}")
    return "\n".join(lines)
