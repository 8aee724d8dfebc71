"""CPU inference latency and peak memory of one batch.

Example::

    >>> import torch
    >>> from torchslim.analysis import measure_latency, peak_memory_bytes
    >>> model = torch.nn.Linear(64, 10)
    >>> measure_latency(model, (64,), batch_size=8, repeats=3).median_ms > 0
    True
    >>> peak_memory_bytes(model, (64,), batch_size=8).weights_bytes
    2600
"""

from __future__ import annotations

import itertools
import math
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from ..core.errors import UserError
from ..core.modules import batch_shape, eval_mode, example_input

_CPU_MEMORY = (DeviceType.CPU, DeviceType.MKLDNN, DeviceType.IDEEP)


@dataclass
class LatencyResult:
    """Wall-clock time of one call on one batch, over ``repeats`` timed calls.

    >>> LatencyResult(batch_size=1, threads=4, median_ms=1.5, p90_ms=2.0, min_ms=1.2, repeats=20)
    LatencyResult(batch_size=1, threads=4, median_ms=1.5, p90_ms=2.0, min_ms=1.2, repeats=20)
    """

    batch_size: int
    threads: int
    median_ms: float
    p90_ms: float
    min_ms: float
    repeats: int


@dataclass
class MemoryResult:
    """Peak live tensor bytes during one inference (input batch included) plus the weights.

    >>> MemoryResult(activations_bytes=100, weights_bytes=50, total_bytes=150).total_bytes
    150
    """

    activations_bytes: int
    weights_bytes: int
    total_bytes: int


def measure_latency(
    model: nn.Module | None,
    input_shape: Sequence[int],
    batch_size: int,
    *,
    warmup: int = 5,
    repeats: int = 20,
    threads: int | None = None,
    min_time_s: float = 0.0,
    runner: Callable[[torch.Tensor], Any] | None = None,
) -> LatencyResult:
    """Time ``model(x)`` (or ``runner(x)``) on a random batch of ``batch_size`` samples.

    ``input_shape`` is one sample (``(C, H, W)`` or ``(F,)``) or a full shape whose batch
    dimension ``batch_size`` replaces. The model runs in eval mode under
    ``torch.inference_mode()``: ``warmup`` untimed calls, then at least ``repeats`` timed calls
    and more until they add up to ``min_time_s``. ``threads`` sets ``torch.set_num_threads`` for
    the measurement only. ``runner`` times something else on the same input, e.g. an ONNX Runtime
    session: ``runner=lambda x: session.run(None, {"input": x.numpy()})`` (``model`` may then be
    ``None``; its own thread settings are the caller's).

    >>> calls = []
    >>> result = measure_latency(None, (3,), 2, warmup=1, repeats=4, runner=calls.append)
    >>> len(calls), result.repeats, result.batch_size, tuple(calls[0].shape)
    (5, 4, 2, (2, 3))
    """
    if model is None and runner is None:
        raise TypeError("measure_latency needs a model, a runner, or both")
    if repeats < 1 or warmup < 0:
        raise UserError(f"repeats must be >= 1 and warmup >= 0, got {repeats} and {warmup}")
    if threads is not None and threads < 1:
        raise UserError(f"threads must be at least 1, got {threads}")
    shape = batch_shape(input_shape, batch_size)
    call = runner if runner is not None else model
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        used = torch.get_num_threads()
        with eval_mode(model), torch.inference_mode():
            x = example_input(model, shape)
            for _ in range(warmup):
                call(x)
            times: list[float] = []
            elapsed = 0.0
            while len(times) < repeats or elapsed < min_time_s:
                start = time.perf_counter()
                call(x)
                times.append(time.perf_counter() - start)
                elapsed += times[-1]
    finally:
        torch.set_num_threads(previous)
    ordered = sorted(times)
    return LatencyResult(
        batch_size=shape[0],
        threads=used,
        median_ms=statistics.median(ordered) * 1e3,
        p90_ms=ordered[math.ceil(0.9 * len(ordered)) - 1] * 1e3,
        min_ms=ordered[0] * 1e3,
        repeats=len(ordered),
    )


def weights_bytes(model: nn.Module) -> int:
    """Bytes held by the parameters and buffers (shared tensors once).

    >>> weights_bytes(torch.nn.BatchNorm1d(4))  # weight, bias, 2 running stats, 1 int64 counter
    72
    """
    tensors = itertools.chain(model.parameters(), model.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


def peak_memory_bytes(
    model: nn.Module, input_shape: Sequence[int], batch_size: int
) -> MemoryResult:
    """Peak CPU tensor memory of one inference on ``batch_size`` samples, plus the weights.

    Every CPU allocation and free made while the input is created and the model runs (eval
    mode, ``torch.inference_mode()``) is recorded by ``torch.profiler`` with
    ``profile_memory=True``; the peak of their running sum is ``activations_bytes``. Memory that
    libraries manage outside PyTorch's allocator (oneDNN scratch space) is not seen.

    >>> result = peak_memory_bytes(torch.nn.Linear(100, 100), (100,), batch_size=10)
    >>> result.activations_bytes >= 2 * 10 * 100 * 4  # the input and the output
    True
    """
    shape = batch_shape(input_shape, batch_size)
    # Kineto, the profiler's backend, prints "USDT: ... profiler_start" / "profiler_stop" to
    # stderr (never stdout) on every profile. Only a KINETO_LOG_LEVEL above its highest level
    # (USDT = 5) hides them; it is read once, when the first profile in the process starts.
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    with eval_mode(model), torch.inference_mode():
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            model(example_input(model, shape))
    # prof.events() keeps a "[memory]" row only for allocations and frees made outside any op
    # (the rest are folded into their op's row); the raw records hold every one of them.
    records = sorted(
        (
            event
            for event in prof.profiler.kineto_results.events()
            if event.name() == "[memory]" and event.device_type() in _CPU_MEMORY
        ),
        key=lambda event: event.start_ns(),
    )
    running = peak = 0
    for record in records:
        running += record.nbytes()
        peak = max(peak, running)
    weights = weights_bytes(model)
    return MemoryResult(activations_bytes=peak, weights_bytes=weights, total_bytes=peak + weights)
