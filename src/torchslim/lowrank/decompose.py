"""Layer decompositions: each takes a trained layer and returns the smaller module that replaces
it, initialised to approximate it as well as its structure allows.

==========================  ======================================================================
:func:`svd_linear`          ``Linear(in, out)`` -> ``Linear(in, r)``, ``Linear(r, out)``
                            (truncated SVD)
:func:`svd_conv`            ``k x k`` conv -> ``k x k`` conv with ``r`` outputs, then a 1 x 1 conv
                            (SVD of the weight as an ``out x (in k k)`` matrix)
:func:`tucker2_conv`        1 x 1 conv to ``r_in``, ``k x k`` core conv ``r_in -> r_out``, 1 x 1
                            conv to ``out`` (Tucker-2 by HOOI; Kim et al. 2016)
:func:`depthwise_separable` depthwise ``k x k`` conv, then a pointwise 1 x 1 conv: for every input
                            channel the best rank-1 fit of its ``out x (k k)`` slice
:func:`group_conv`          the same conv with ``groups=g``: the block-diagonal part of the
                            weight
==========================  ======================================================================

At full rank the SVD and Tucker-2 forms reproduce the layer (up to float rounding). Replacements
are ``nn.Sequential`` modules, so their parameters are named ``<layer>.0.weight``, ...

Example::

    >>> import torch
    >>> from torchslim.lowrank import svd_conv
    >>> conv = torch.nn.Conv2d(8, 16, 3, padding=1)
    >>> low = svd_conv(conv, rank=8)   # rank min(16, 8 * 9) = 16 would be exact
    >>> [tuple(m.weight.shape) for m in low]
    [(8, 8, 3, 3), (16, 8, 1, 1)]
    >>> x = torch.randn(2, 8, 6, 6)
    >>> bool((svd_conv(conv, 16)(x) - conv(x)).abs().max() < 1e-4)
    True
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.modules.conv import _ConvNd

from ..core.errors import UserError


def check_rank(rank: int, limit: int, what: str) -> int:
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise UserError(f"the rank of {what} must be a whole number >= 1, got {rank!r}")
    if rank > limit:
        raise UserError(f"rank {rank} is larger than {what} allows (at most {limit}): give a "
                        "smaller rank, or a kept-energy or params target instead")
    return rank


def _plain_conv(layer: nn.Module, what: str) -> nn.Conv2d:
    if not isinstance(layer, nn.Conv2d) or layer.transposed:
        raise UserError(f"{what} is a {type(layer).__name__}, not a Conv2d: this decomposition "
                        "takes 2-D convolutions")
    if layer.groups != 1:
        raise UserError(f"{what} is already a grouped convolution (groups={layer.groups})")
    return layer


def _copy_bias(target: nn.Module, layer: nn.Module) -> None:
    if layer.bias is not None:
        target.bias.data.copy_(layer.bias.detach())


def _like(layer: _ConvNd, in_ch: int, out_ch: int, *, kernel=None, groups: int = 1,
          bias: bool = False, spatial: bool = True) -> nn.Conv2d:
    """A conv like ``layer`` (stride, padding, dilation, padding mode) or, with
    ``spatial=False``, a plain 1 x 1 conv."""
    if not spatial:
        conv = nn.Conv2d(in_ch, out_ch, 1, bias=bias)
    else:
        conv = nn.Conv2d(in_ch, out_ch, kernel or layer.kernel_size, stride=layer.stride,
                         padding=layer.padding, dilation=layer.dilation, groups=groups,
                         bias=bias, padding_mode=layer.padding_mode)
    return conv.to(device=layer.weight.device, dtype=layer.weight.dtype)


def max_rank(layer: nn.Module) -> int:
    """The largest rank :func:`svd_linear`/:func:`svd_conv` accept for ``layer``."""
    weight = layer.weight
    return min(weight.shape[0], weight[0].numel())


def singular_values(layer: nn.Module) -> torch.Tensor:
    """The singular values of ``layer``'s weight as an ``out x (the rest)`` matrix."""
    weight = layer.weight.detach().double()
    return torch.linalg.svdvals(weight.reshape(weight.shape[0], -1))


def _split(matrix: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    u, s, vh = torch.linalg.svd(matrix.double(), full_matrices=False)
    root = s[:rank].sqrt()
    return u[:, :rank] * root, root[:, None] * vh[:rank]


def svd_linear(layer: nn.Linear, rank: int) -> nn.Sequential:
    """``layer`` as two Linears through ``rank`` features."""
    if not isinstance(layer, nn.Linear):
        raise UserError(f"svd_linear takes a Linear, got {type(layer).__name__}")
    check_rank(rank, max_rank(layer), f"a Linear({layer.in_features}, {layer.out_features})")
    left, right = _split(layer.weight.detach(), rank)
    first = nn.Linear(layer.in_features, rank, bias=False)
    second = nn.Linear(rank, layer.out_features, bias=layer.bias is not None)
    out = nn.Sequential(first, second).to(device=layer.weight.device, dtype=layer.weight.dtype)
    first.weight.data.copy_(right)
    second.weight.data.copy_(left)
    _copy_bias(second, layer)
    return out


def svd_conv(layer: nn.Conv2d, rank: int) -> nn.Sequential:
    """``layer`` as a ``k x k`` conv with ``rank`` outputs and a 1 x 1 conv."""
    layer = _plain_conv(layer, "the layer")
    out_ch, in_ch = layer.out_channels, layer.in_channels
    check_rank(rank, max_rank(layer), f"a {in_ch}->{out_ch} {layer.kernel_size} conv")
    left, right = _split(layer.weight.detach().reshape(out_ch, -1), rank)
    first = _like(layer, in_ch, rank)
    second = _like(layer, rank, out_ch, bias=layer.bias is not None, spatial=False)
    first.weight.data.copy_(right.reshape(rank, in_ch, *layer.kernel_size))
    second.weight.data.copy_(left.reshape(out_ch, rank, 1, 1))
    _copy_bias(second, layer)
    return nn.Sequential(first, second)


def _leading(matrix: torch.Tensor, rank: int) -> torch.Tensor:
    return torch.linalg.svd(matrix, full_matrices=False)[0][:, :rank]


def tucker2_conv(layer: nn.Conv2d, ranks: tuple[int, int], iterations: int = 5) -> nn.Sequential:
    """``layer`` as 1 x 1 (``in -> r_in``), ``k x k`` (``r_in -> r_out``), 1 x 1 (``r_out ->
    out``); ``ranks = (r_in, r_out)``; HOSVD refined by ``iterations`` of HOOI."""
    layer = _plain_conv(layer, "the layer")
    out_ch, in_ch = layer.out_channels, layer.in_channels
    r_in, r_out = ranks
    check_rank(r_in, in_ch, f"the input side of a {in_ch}->{out_ch} conv")
    check_rank(r_out, out_ch, f"the output side of a {in_ch}->{out_ch} conv")
    w = layer.weight.detach().double()
    u_out = _leading(w.reshape(out_ch, -1), r_out)
    u_in = _leading(w.transpose(0, 1).reshape(in_ch, -1), r_in)
    for _ in range(iterations):
        projected = torch.einsum("oikl,ib->obkl", w, u_in)
        u_out = _leading(projected.reshape(out_ch, -1), r_out)
        projected = torch.einsum("oikl,oa->aikl", w, u_out)
        u_in = _leading(projected.transpose(0, 1).reshape(in_ch, -1), r_in)
    core = torch.einsum("oikl,oa,ib->abkl", w, u_out, u_in)
    first = _like(layer, in_ch, r_in, spatial=False)
    middle = _like(layer, r_in, r_out)
    last = _like(layer, r_out, out_ch, bias=layer.bias is not None, spatial=False)
    first.weight.data.copy_(u_in.t().reshape(r_in, in_ch, 1, 1))
    middle.weight.data.copy_(core)
    last.weight.data.copy_(u_out.reshape(out_ch, r_out, 1, 1))
    _copy_bias(last, layer)
    return nn.Sequential(first, middle, last)


def depthwise_separable(layer: nn.Conv2d) -> nn.Sequential:
    """``layer`` as a depthwise ``k x k`` conv and a pointwise 1 x 1 conv (MobileNet's form),
    each input channel's slice replaced by its best rank-1 approximation."""
    layer = _plain_conv(layer, "the layer")
    out_ch, in_ch = layer.out_channels, layer.in_channels
    w = layer.weight.detach().double()
    depth = torch.empty(in_ch, 1, *layer.kernel_size, dtype=torch.float64)
    point = torch.empty(out_ch, in_ch, 1, 1, dtype=torch.float64)
    for i in range(in_ch):
        left, right = _split(w[:, i].reshape(out_ch, -1), 1)
        depth[i, 0] = right.reshape(layer.kernel_size)
        point[:, i, 0, 0] = left[:, 0]
    dw = _like(layer, in_ch, in_ch, groups=in_ch)
    pw = _like(layer, in_ch, out_ch, bias=layer.bias is not None, spatial=False)
    dw.weight.data.copy_(depth)
    pw.weight.data.copy_(point)
    _copy_bias(pw, layer)
    return nn.Sequential(dw, pw)


def group_conv(layer: nn.Conv2d, groups: int) -> nn.Conv2d:
    """``layer`` with ``groups`` groups, keeping the weights between channels of the same group
    (in and out channels must both divide by ``groups``)."""
    layer = _plain_conv(layer, "the layer")
    out_ch, in_ch = layer.out_channels, layer.in_channels
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 2 \
            or in_ch % groups or out_ch % groups:
        raise UserError(f"groups={groups!r} must be a whole number >= 2 dividing both the "
                        f"{in_ch} input and {out_ch} output channels")
    conv = _like(layer, in_ch, out_ch, groups=groups, bias=layer.bias is not None)
    step_in, step_out = in_ch // groups, out_ch // groups
    w = layer.weight.detach()
    for g in range(groups):
        rows = slice(g * step_out, (g + 1) * step_out)
        conv.weight.data[rows] = w[rows, g * step_in:(g + 1) * step_in]
    _copy_bias(conv, layer)
    return conv


def factorized_params(layer: nn.Module, method: str, rank: int | tuple[int, int] = 1,
                      groups: int = 1) -> int:
    """The weight count of ``layer`` after ``method`` (biases excluded)."""
    weight = layer.weight
    out_ch, rest = weight.shape[0], weight[0].numel()
    if method == "svd":
        return int(rank) * (out_ch + rest)
    in_ch = weight.shape[1]
    area = math.prod(weight.shape[2:])
    if method == "tucker2":
        r_in, r_out = rank  # type: ignore[misc]
        return in_ch * r_in + r_in * r_out * area + r_out * out_ch
    if method == "depthwise_separable":
        return in_ch * area + in_ch * out_ch
    if method == "group":
        return weight.numel() // groups
    raise UserError(f"unknown factorization method '{method}'")
