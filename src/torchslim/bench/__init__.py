"""The benchmark table every torchslim feature adds rows to, and its trade-off plot.

Example::

    >>> from torchslim.bench import BenchRow, BenchTable
    >>> row = BenchRow(name="demo", top1=97.5, params=28_000, nonzero_params=28_000,
    ...                macs=1_500_000, sparsity=0.0, file_bytes=120_000, latency_b1_ms=0.2)
    >>> "demo" in BenchTable([row]).to_markdown()
    True
"""

from .plot import AXES, plot_tradeoff
from .table import BenchRow, BenchTable

__all__ = ["AXES", "BenchRow", "BenchTable", "plot_tradeoff"]
