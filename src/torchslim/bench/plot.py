"""Accuracy-versus-cost scatter plot of a :class:`~torchslim.bench.BenchTable`.

Example::

    >>> import tempfile, pathlib
    >>> from torchslim.bench import BenchRow, BenchTable, plot_tradeoff
    >>> rows = [BenchRow(name="dense", top1=91.7, params=269_722, nonzero_params=269_722,
    ...                  macs=40_551_040, sparsity=0.0, file_bytes=1_100_000),
    ...         BenchRow(name="pruned", top1=90.9, params=135_000, nonzero_params=135_000,
    ...                  macs=20_000_000, sparsity=0.0, file_bytes=560_000)]
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "tradeoff.png"
    >>> plot_tradeoff(BenchTable(rows), path).read_bytes()[:4]
    b'\\x89PNG'
"""

from __future__ import annotations

import io
import os
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from ..analysis.text import format_bytes, format_count
from ..core.errors import UserError, did_you_mean
from ..core.fileio import atomic_write
from .table import BenchTable

AXES = {
    "top1": "top-1 accuracy (%)",
    "top5": "top-5 accuracy (%)",
    "sparsity": "sparsity (%)",
    "params": "parameters",
    "nonzero_params": "nonzero parameters",
    "macs": "MACs",
    "file_bytes": "file size",
    "latency_b1_ms": "latency at batch 1 (ms)",
    "latency_bn_ms": "latency at batch N (ms)",
    "peak_mem_bytes": "peak memory",
}
_COUNTS = {"params", "nonzero_params", "macs"}
_BYTES = {"file_bytes", "peak_mem_bytes"}


def _check_axis(name: str) -> None:
    if name not in AXES:
        raise UserError(
            f"cannot plot '{name}'{did_you_mean(name, AXES)}: choose from {', '.join(AXES)}"
        )


def _units(name: str) -> FuncFormatter | None:
    if name in _COUNTS:
        return FuncFormatter(lambda value, _: format_count(int(value)))
    if name in _BYTES:
        return FuncFormatter(lambda value, _: format_bytes(int(value)))
    return None


def plot_tradeoff(
    table: BenchTable, path: str | os.PathLike, x: str = "macs", y: str = "top1"
) -> Path:
    """Scatter ``y`` against ``x`` (any :data:`AXES` name), one labelled point per row; PNG.

    Rows missing either value are left out; a log x axis is used when ``x`` spans 100x or more.
    The file is written atomically and its path returned.
    """
    _check_axis(x)
    _check_axis(y)
    points = [
        (getattr(row, x), getattr(row, y), row.name)
        for row in table.rows
        if getattr(row, x) is not None and getattr(row, y) is not None
    ]
    if not points:
        raise UserError(f"nothing to plot: no bench row has both '{x}' and '{y}' measured")
    figure = Figure(figsize=(6.4, 4.8), layout="constrained")
    axes = figure.add_subplot()
    xs = [px for px, _, _ in points]
    axes.scatter(xs, [py for _, py, _ in points], zorder=2)
    for px, py, name in points:
        axes.annotate(name, (px, py), xytext=(4, 4), textcoords="offset points", fontsize=8)
    if min(xs) > 0 and max(xs) >= 100 * min(xs):
        axes.set_xscale("log")
    for axis, name in ((axes.xaxis, x), (axes.yaxis, y)):
        formatter = _units(name)
        if formatter is not None:
            axis.set_major_formatter(formatter)
    axes.set_xlabel(AXES[x])
    axes.set_ylabel(AXES[y])
    axes.set_title(f"{AXES[y]} vs {AXES[x]}")
    axes.margins(x=0.15, y=0.1)
    if y in ("top1", "top5"):  # accuracy cannot pass 100 %: keep the axis from suggesting it
        low, high = axes.get_ylim()
        axes.set_ylim(low, min(high, 100.5))
    axes.grid(True, alpha=0.3)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    return atomic_write(path, lambda handle: handle.write(buffer.getvalue()))
