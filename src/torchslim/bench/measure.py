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

import os
from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

from ..analysis import file_size_bytes, measure_latency, peak_memory_bytes, summarize
from ..export.onnx import session as onnx_session
from ..train.evaluation import EvalResult, evaluate
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


class _OnnxModel(nn.Module):
    """An ONNX Runtime session behind the ``nn.Module`` call that :func:`evaluate` makes."""

    def __init__(self, runtime) -> None:
        super().__init__()
        self.runtime = runtime

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.runtime.run(None, {"input": np.ascontiguousarray(x.numpy())})[0]
        return torch.from_numpy(out)


def evaluate_onnx(
    path: str | os.PathLike, batches: Iterable, num_classes: int, threads: int | None = None
) -> EvalResult:
    """Top-1/top-5 of the ONNX model at ``path`` in ONNX Runtime."""
    return evaluate(_OnnxModel(onnx_session(path, threads)), batches, num_classes)


def measure_onnx_row(
    name: str,
    path: str | os.PathLike,
    model: nn.Module,
    input_shape: tuple[int, ...],
    eval_batches: Iterable | None,
    *,
    num_classes: int,
    latency_batch: int = 256,
    repeats: int = 20,
    threads: int | None = None,
    notes: str = "",
) -> BenchRow:
    """One row for an ONNX model run in ONNX Runtime: accuracy, latency at batch 1 and N, and
    the file; parameters and MACs are those of the PyTorch ``model`` it was exported from."""
    summary = summarize(model, input_shape)
    # the PyTorch rows' thread count unless told (ONNX Runtime's own default ignores
    # OMP_NUM_THREADS and torch.set_num_threads)
    threads = threads if threads is not None else torch.get_num_threads()
    runtime = onnx_session(path, threads)
    accuracy = (evaluate(_OnnxModel(runtime), eval_batches, num_classes)
                if eval_batches is not None else None)

    def run(x: torch.Tensor):
        return runtime.run(None, {"input": x.numpy()})

    single = measure_latency(None, input_shape, 1, repeats=repeats, runner=run)
    large = measure_latency(None, input_shape, latency_batch, repeats=repeats, runner=run)
    return BenchRow(
        name=name,
        top1=accuracy.top1 if accuracy else None,
        top5=accuracy.top5 if accuracy else None,
        params=summary.params,
        nonzero_params=summary.nonzero_params,
        macs=summary.macs,
        sparsity=summary.sparsity,
        file_bytes=os.path.getsize(path),
        latency_b1_ms=single.median_ms,
        latency_bn_ms=large.median_ms,
        batch_n=latency_batch,
        peak_mem_bytes=None,
        threads=threads,
        runtime="onnxruntime",
        notes=notes,
    )
