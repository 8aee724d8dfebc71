"""Measure one model for one row of the benchmark table.

Example::

    >>> import torch
    >>> from torchslim.bench.measure import measure_row
    >>> from torchslim.models import create_model
    >>> batches = [(torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,)))]
    >>> row = measure_row("demo", create_model("demo_cnn"), (1, 8, 8), batches, num_classes=10,
    ...                   latency_batch=8, repeats=2)
    >>> row.params == sum(p.numel() for p in create_model("demo_cnn").parameters())
    True
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from ..analysis import file_size_bytes, measure_latency, peak_memory_bytes, summarize
from ..train.evaluation import evaluate
from .table import BenchRow


def measure_row(
    name: str,
    model: nn.Module,
    input_shape: tuple[int, ...],
    eval_batches: Iterable | None,
    *,
    num_classes: int,
    latency_batch: int = 256,
    repeats: int = 20,
    threads: int | None = None,
    file_bytes: int | None = None,
    notes: str = "",
) -> BenchRow:
    """Accuracy (when ``eval_batches`` is given), size, MACs, latency at batch 1 and N, memory."""
    summary = summarize(model, input_shape)
    accuracy = evaluate(model, eval_batches, num_classes) if eval_batches is not None else None
    single = measure_latency(model, input_shape, 1, repeats=repeats, threads=threads)
    large = measure_latency(model, input_shape, latency_batch, repeats=repeats, threads=threads)
    memory = peak_memory_bytes(model, input_shape, latency_batch)
    return BenchRow(
        name=name,
        top1=accuracy.top1 if accuracy else None,
        top5=accuracy.top5 if accuracy else None,
        params=summary.params,
        nonzero_params=summary.nonzero_params,
        macs=summary.macs,
        sparsity=summary.sparsity,
        file_bytes=file_bytes if file_bytes is not None else file_size_bytes(model),
        latency_b1_ms=single.median_ms,
        latency_bn_ms=large.median_ms,
        batch_n=latency_batch,
        peak_mem_bytes=memory.total_bytes,
        threads=single.threads,
        notes=notes,
    )
