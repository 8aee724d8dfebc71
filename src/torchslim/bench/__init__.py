"""The benchmark table every torchslim feature adds rows to, and its trade-off plot.

Example::

    >>> from torchslim.bench import BenchRow, BenchTable
    >>> row = BenchRow("demo", 97.5, 100.0, 28_000, 28_000, 1_500_000, 0.0, 120_000,
    ...                0.2, 3.1, 256, 2_000_000, 2)
    >>> "demo" in BenchTable([row]).to_markdown()
    True
"""

from .plot import AXES, plot_tradeoff
from .table import BenchRow, BenchTable

__all__ = ["AXES", "BenchRow", "BenchTable", "plot_tradeoff"]
