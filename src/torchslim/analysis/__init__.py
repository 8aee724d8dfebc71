"""Measure a model: per-layer summary (parameters, sparsity, MACs), file size, latency, memory.

Example::

    >>> import torch
    >>> from torchslim.analysis import summarize
    >>> summarize(torch.nn.Linear(8, 4), (8,)).macs
    32
"""

from .perf import LatencyResult, MemoryResult, measure_latency, peak_memory_bytes, weights_bytes
from .size import file_size_bytes, saved_file_size
from .summary import LayerRow, ModelSummary, summarize

__all__ = [
    "LatencyResult",
    "LayerRow",
    "MemoryResult",
    "ModelSummary",
    "file_size_bytes",
    "measure_latency",
    "peak_memory_bytes",
    "saved_file_size",
    "summarize",
    "weights_bytes",
]
