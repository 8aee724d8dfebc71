"""Helpers shared by the analysis functions: input shapes, example inputs, eval mode.

Example::

    >>> from torchslim.core.modules import batch_shape
    >>> batch_shape((3, 32, 32)), batch_shape((3, 32, 32), 8), batch_shape((4, 10))
    ((1, 3, 32, 32), (8, 3, 32, 32), (4, 10))
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from .errors import UserError


def batch_shape(input_shape: Sequence[int], batch_size: int | None = None) -> tuple[int, ...]:
    """The full input shape for a forward pass.

    ``(C, H, W)`` and ``(F,)`` are one sample and get a batch dimension (1, or ``batch_size``);
    any other length, e.g. ``(N, C, H, W)`` or ``(N, F)``, already starts with the batch, which
    ``batch_size`` replaces when given.

    >>> batch_shape((2, 3, 32, 32)), batch_shape((2, 3, 32, 32), 16), batch_shape((10,))
    ((2, 3, 32, 32), (16, 3, 32, 32), (1, 10))
    """
    try:
        dims = tuple(operator.index(d) for d in input_shape)
    except TypeError:
        dims = ()
    if not dims or min(dims) < 1:
        raise UserError(
            f"input shape {tuple(input_shape)} must be positive whole numbers, e.g. 3,32,32"
        )
    if batch_size is not None and batch_size < 1:
        raise UserError(f"batch size must be at least 1, got {batch_size}")
    one_sample = len(dims) in (1, 3)
    sample = dims if one_sample else dims[1:]
    if batch_size is None:
        return (1, *sample) if one_sample else dims
    return (batch_size, *sample)


def example_input(model: nn.Module | None, shape: Sequence[int]) -> torch.Tensor:
    """A reproducible random batch of ``shape`` on the model's device, in its floating dtype.

    >>> example_input(torch.nn.Linear(3, 2).double(), (2, 3)).dtype
    torch.float64
    """
    tensors = itertools.chain(model.parameters(), model.buffers()) if model is not None else ()
    reference = next((t for t in tensors if t.is_floating_point()), None)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(tuple(shape), generator=generator)
    if reference is None:
        return x
    return x.to(device=reference.device, dtype=reference.dtype)


@contextmanager
def eval_mode(model: nn.Module | None) -> Iterator[None]:
    """Put ``model`` in eval mode, then give every submodule back its own train/eval flag.

    >>> model = torch.nn.Sequential(torch.nn.Dropout(), torch.nn.Dropout().eval())
    >>> with eval_mode(model):
    ...     model.training
    False
    >>> [m.training for m in model]
    [True, False]
    """
    if model is None:
        yield
        return
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


def sync_optimizer(
    optimizer: torch.optim.Optimizer,
    model: nn.Module,
    before: set[int],
    own_group: Iterable[nn.Parameter] = (),
    own_options: dict | None = None,
) -> None:
    """After a step replaced layers of ``model`` (factorization, BatchNorm folding): tensors
    the model no longer has leave the optimizer (with their state), the model's new parameters
    (ids not in ``before``) join the first group, and those in ``own_group`` get a group of
    their own with ``own_options`` (e.g. no weight decay for learned quantizer steps).

    >>> model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    >>> optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> before = {id(p) for p in model.parameters()}
    >>> model[0] = torch.nn.Linear(2, 2, bias=False)
    >>> sync_optimizer(optimizer, model, before)
    >>> [p is model[0].weight for p in optimizer.param_groups[0]["params"]]
    [True]
    """
    alive = {id(p) for p in model.parameters()}
    gone = before - alive  # parameters trained outside the model (adapters) stay
    for group in optimizer.param_groups:
        for param in group["params"]:
            if id(param) in gone:
                optimizer.state.pop(param, None)
        group["params"] = [p for p in group["params"] if id(p) not in gone]
    separate = {id(p) for p in own_group}
    new = [p for p in model.parameters() if id(p) not in before]
    optimizer.param_groups[0]["params"].extend(p for p in new if id(p) not in separate)
    own = [p for p in new if id(p) in separate]
    if own:
        optimizer.add_param_group({"params": own, **(own_options or {})})
