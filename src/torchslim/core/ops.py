"""The two operators thinning writes into a model's forward where it rewrites a pad or a slice
of the channel dimension, as ``torch.ops.torchslim`` operators, so torch.fx and torch.export
both see them as single calls.

* ``channel_pad(x, dim, index, size)``: a tensor with ``size`` positions along ``dim``, zeros
  except that input position ``i`` lands at ``index[i]`` (a zero-padding shortcut after some of
  its channels were removed);
* ``channel_select(x, dim, index)``: ``x.index_select(dim, index)`` (a slice of the channels
  after some were removed).

Example::

    >>> import torch
    >>> from torchslim.core import ops
    >>> x = torch.tensor([[1.0, 2.0]])
    >>> ops.channel_pad(x, 1, [0, 2], 4).tolist(), ops.channel_select(x, 1, [1]).tolist()
    ([[1.0, 0.0, 2.0, 0.0]], [[2.0]])
"""

from __future__ import annotations

import torch


def _shape(x: torch.Tensor, dim: int, size: int) -> list[int]:
    shape = list(x.shape)
    shape[dim] = size
    return shape


@torch.library.custom_op("torchslim::channel_pad", mutates_args=())
def channel_pad(x: torch.Tensor, dim: int, index: list[int], size: int) -> torch.Tensor:
    """Scatter the positions of ``x`` along ``dim`` to ``index`` in a zero tensor of ``size``."""
    out = x.new_zeros(_shape(x, dim, size))
    where = torch.tensor(index, dtype=torch.long, device=x.device)
    return out.index_copy(dim, where, x)


@channel_pad.register_fake
def _(x: torch.Tensor, dim: int, index: list[int], size: int) -> torch.Tensor:
    return x.new_empty(_shape(x, dim, size))


@torch.library.custom_op("torchslim::channel_select", mutates_args=())
def channel_select(x: torch.Tensor, dim: int, index: list[int]) -> torch.Tensor:
    """The positions ``index`` of ``x`` along ``dim``."""
    return x.index_select(dim, torch.tensor(index, dtype=torch.long, device=x.device)).clone()


@channel_select.register_fake
def _(x: torch.Tensor, dim: int, index: list[int]) -> torch.Tensor:
    return x.new_empty(_shape(x, dim, len(index)))


def _pad_backward(ctx, grad: torch.Tensor):
    where = torch.tensor(ctx.index, dtype=torch.long, device=grad.device)
    return grad.index_select(ctx.dim, where), None, None, None


def _pad_context(ctx, inputs, output) -> None:
    ctx.dim, ctx.index = inputs[1], inputs[2]


def _select_backward(ctx, grad: torch.Tensor):
    out = grad.new_zeros(ctx.shape)
    where = torch.tensor(ctx.index, dtype=torch.long, device=grad.device)
    return out.index_add(ctx.dim, where, grad), None, None


def _select_context(ctx, inputs, output) -> None:
    ctx.dim, ctx.index, ctx.shape = inputs[1], inputs[2], list(inputs[0].shape)


channel_pad.register_autograd(_pad_backward, setup_context=_pad_context)
channel_select.register_autograd(_select_backward, setup_context=_select_context)
