"""Pipelines: what a command runs (compress, demo), reusable from Python, and the files they
write.

Example::

    >>> from torchslim.pipelines import compress, run_demo
    >>> callable(compress) and callable(run_demo)
    True
"""

from .common import build_model, machine_meta, write_eval_outputs, write_summary
from .compress import CompressionReport, CompressionRun, compress, report, schedule_notes
from .demo import run_demo

__all__ = [
    "CompressionReport",
    "CompressionRun",
    "build_model",
    "compress",
    "machine_meta",
    "report",
    "run_demo",
    "schedule_notes",
    "write_eval_outputs",
    "write_summary",
]
