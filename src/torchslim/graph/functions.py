"""Function handlers: how channels flow through the ops a forward calls between layers.

==================  ================================================================================
handler             ops
==================  ================================================================================
Elementwise         arithmetic (``+ - * /``, ``torch.add``, ``where``, ``maximum``...), activations,
                    dropout, casts: inputs are broadcast and tied position by position
Movement            ``view``, ``reshape``, ``flatten``, ``permute``, ``transpose``, ``squeeze``,
                    ``expand``, ``repeat``...: run on the ids; where a reshape splits the channel
                    dimension into groups (a channel shuffle written with ``view``), the same
                    position goes from every group
Concat              ``torch.cat``, ``stack``
Partition           slicing ``x[:, :k]``, ``narrow``, ``chunk``, ``split``, ``unbind``, ``select``
Pad                 ``F.pad`` (on the channels: a zero-padding shortcut)
ChannelShuffle      ``F.channel_shuffle``, ``pixel_shuffle``, ``pixel_unshuffle``
Spatial             pooling, adaptive pooling, interpolation
Reduction           ``mean``, ``sum``, ``amax``...  over dimensions other than the channels
Softmax             ``softmax``, ``log_softmax`` over a dimension other than the channels
Creation            ``torch.zeros``, ``ones_like``, ``new_zeros``...: channels that cannot go
==================  ================================================================================

A slice or pad of the channel dimension with constant bounds (``x[:, :64]``, the ``F.pad`` of a
CIFAR ResNet's option-A shortcut) names channel positions: when the module that calls it can be
traced alone, thinning rewrites the call (:mod:`torchslim.graph.rewrite`); otherwise the channels
it depends on stay. Bounds computed from sizes (``x[:, :x.size(1) // 2]``, ``chunk``) are taken
as proportional: the same position goes from every part, so the parts keep their proportions.

Example::

    >>> import torch
    >>> from torchslim.graph import build_graph
    >>> class Shuffle(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.a, self.b = torch.nn.Conv2d(3, 8, 1), torch.nn.Conv2d(8, 4, 1)
    ...     def forward(self, x):
    ...         n, c, h, w = x.shape
    ...         y = self.a(x)
    ...         c = y.size(1)
    ...         y = y.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)
    ...         return self.b(y)
    >>> group = build_graph(Shuffle(), torch.zeros(1, 3, 4, 4)).group("a")
    >>> len(group.channels), group.channels[0]  # channel 0 goes with channel 4
    (4, {Axis(module='a', role='out', size=8): (0, 4), Axis(module='b', role='in', size=8): (0, 1)})
"""

from __future__ import annotations

import itertools
import math
import operator
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from ..core import ops as _ops  # noqa: F401  (registers torch.ops.torchslim)
from .handlers import Unsupported
from .registry import ARITHMETIC, register_function
from .tracer import Layout, Site, TensorMeta

if TYPE_CHECKING:
    from .build import TracedCall

MAXINT = 2**62


def _names(namespace: Any, names: str) -> list[Any]:
    return [getattr(namespace, name) for name in names.split() if hasattr(namespace, name)]


def _aten(names: str) -> list[str]:
    return [f"aten::{name}" for name in names.split()]


class FunctionHandler:
    """How channels flow through a traced function: :meth:`trace` couples elements and returns
    the output layout (or a tuple of them)."""

    def trace(self, call: TracedCall) -> Any:
        raise NotImplementedError


class Elementwise(FunctionHandler):
    """Position-by-position ops: every tensor operand is broadcast to the result and tied to the
    others; one-element tensors and numbers do not take part."""

    def trace(self, call: TracedCall) -> Layout:
        shape = call.out_shape
        layouts = [x for x in call.layouts() if math.prod(x.shape) > 1]
        if not layouts:
            layouts = call.layouts()
        if not layouts:
            return call.tracer.fresh_layout(shape, f"{call.describe()} has no traced input")
        ids = [x.ids for x in layouts]
        try:
            joint = torch.broadcast_shapes(*(i.shape for i in ids))
            target = torch.broadcast_shapes(joint, shape)
        except RuntimeError as err:
            raise Unsupported(f"its operands do not broadcast ({err})") from None
        first = ids[0].expand(joint)
        for other in ids[1:]:
            call.tracer.couple(first, other.expand(joint))
        return Layout(first.reshape((1,) * (len(target) - len(joint)) + tuple(joint)), target)


def reshape_blocks(
    in_shape: Sequence[int], out_shape: Sequence[int]
) -> list[tuple[list[int], list[int]]] | None:
    """Group the dims of a reshape into blocks of equal size (None if it is not a reshape)."""
    if math.prod(in_shape) != math.prod(out_shape):
        return None
    blocks, i, j = [], 0, 0
    while i < len(in_shape) or j < len(out_shape):
        ins, outs = [], []
        size_in = size_out = 1
        while True:
            if size_in <= size_out and i < len(in_shape) and (not ins or size_in < size_out):
                size_in *= in_shape[i]
                ins.append(i)
                i += 1
            elif j < len(out_shape) and (not outs or size_out < size_in):
                size_out *= out_shape[j]
                outs.append(j)
                j += 1
            else:
                break
            if size_in == size_out and ins and outs:
                break
        if not ins and not outs:
            break
        blocks.append((ins, outs))
    return blocks


class Movement(FunctionHandler):
    """Ops that only move values (views, permutes, expands): run on the ids. A reshape that
    splits a channel-carrying dimension into several ties the same innermost position across
    the outer ones (a channel shuffle then removes the same channel from every group)."""

    RESHAPES = frozenset(
        "view reshape unflatten view_as reshape_as _unsafe_view view_copy".split()
    )

    def trace(self, call: TracedCall) -> Layout:
        x = call.input()
        out = Layout.of(call.execute())
        blocks = reshape_blocks(x.shape, out.shape)
        if blocks is None or call.op_name() not in self.RESHAPES:
            return out
        varying = set(x.varying())
        literal = self._literal_sizes(call, len(out.shape))
        for ins, outs in blocks:
            if not varying & set(ins):
                continue
            fixed = [d for d in outs[-1:] if literal[d] and out.shape[d] > 1]
            if fixed:
                call.tracer.fix(
                    x.ids,
                    f"{call.describe()} hard-codes {out.shape[fixed[0]]} in a dimension that "
                    "holds channels (write it from x.size() or as -1)",
                )
                continue
            if len(ins) == 1 and len(outs) > 1:
                sizes = [out.shape[d] for d in outs]
                full = out.full().movedim(outs, list(range(len(outs))))
                rows = full.reshape(math.prod(sizes), -1)
                elements = call.tracer.channels(Layout.of(rows), 0)
                call.tracer.strided(elements, sizes[-1])
        return out


    @staticmethod
    def _literal_sizes(call: TracedCall, rank: int) -> list[bool]:
        """Per output dim of a view/reshape traced with fx: whether the code wrote its size as a
        constant (an exported graph has constants everywhere, so nothing is known there)."""
        if call.frontend != "fx" or call.op_name() not in ("view", "reshape"):
            return [False] * rank
        raw = call.call.args[1:] if call.call.kind == "method" else call.call.args[1:2]
        if len(raw) == 1 and isinstance(raw[0], tuple | list):
            raw = tuple(raw[0])
        if len(raw) != rank:
            return [False] * rank
        return [isinstance(size, int) and size != -1 for size in raw]


class Concat(FunctionHandler):
    """``torch.cat``/``stack``: the ids move with their channels."""

    def trace(self, call: TracedCall) -> Layout:
        return Layout.of(call.execute())


def _parts_of_index(index: Any, shape: Sequence[int]) -> dict[int, list[int]] | str:
    """Input dim -> positions a getitem index keeps on it (only dims it narrows), or a reason."""
    if not isinstance(index, tuple):
        index = (index,)
    if any(isinstance(item, Layout | torch.Tensor | list) for item in index):
        return "it indexes with a tensor or a list"
    explicit = sum(1 for item in index if item is not None and item is not Ellipsis)
    dim, chosen = 0, {}
    for item in index:
        if item is None:
            continue
        if item is Ellipsis:
            dim += len(shape) - explicit
            continue
        size = shape[dim]
        if isinstance(item, slice):
            positions = list(range(size))[item]
            if len(positions) != size:
                chosen[dim] = positions
        elif isinstance(item, int):
            chosen[dim] = [item % size]
        else:
            return f"it indexes with {type(item).__name__}"
        dim += 1
    return chosen


class Partition(FunctionHandler):
    """Slices, ``narrow``, ``chunk``, ``split``, ``unbind``, ``select``: the parts are run on the
    ids; what thinning must respect depends on how the bounds were written (see the module
    docstring)."""

    family = "slice"

    def parts(self, call: TracedCall, x: Layout) -> tuple[int, list[list[int]]] | None | str:
        """(dim, input positions of each part) along the one dim the op narrows, None when it
        narrows none, or a reason it cannot be followed."""
        name = call.op_name()
        args = call.args
        size_of = x.shape
        if name in ("getitem",):
            chosen = _parts_of_index(args[1], size_of)
            if isinstance(chosen, str):
                return chosen
            chosen = {d: p for d, p in chosen.items() if d in x.varying()}
            if not chosen:
                return None
            if len(chosen) > 1:
                return "it slices several channel dimensions at once"
            dim, positions = next(iter(chosen.items()))
            return dim, [positions]
        dim = call.arg(1 if name in ("select", "unbind", "slice", "narrow") else 2, "dim", 0)
        if name in ("chunk", "split", "split_with_sizes", "tensor_split"):
            dim = call.arg(2, "dim", 0)
        dim = dim % len(size_of)
        if dim not in x.varying():
            return None
        size = size_of[dim]
        if name == "select":
            return dim, [[call.arg(2, "index") % size]]
        if name == "unbind":
            return dim, [[i] for i in range(size)]
        if name == "narrow":
            start = call.arg(2, "start") % size
            return dim, [list(range(start, start + call.arg(3, "length")))]
        if name == "slice":
            start, end = call.arg(2, "start", 0), call.arg(3, "end", MAXINT)
            step = call.arg(4, "step", 1)
            return dim, [list(range(size))[slice(start, min(end, size), step)]]
        if name == "channel_select":
            return dim, [list(call.arg(2, "index"))]
        if name == "chunk":
            chunks = call.arg(1, "chunks")
            width = -(-size // chunks)
            return dim, [list(range(s, min(s + width, size))) for s in range(0, size, width)]
        if name in ("split", "split_with_sizes"):
            sizes = call.arg(1, "split_size_or_sections" if name == "split" else "split_sizes")
            if isinstance(sizes, int):
                sizes = [min(sizes, size - s) for s in range(0, size, sizes)]
            bounds = [0, *itertools.accumulate(sizes)]
            return dim, [list(range(a, b)) for a, b in zip(bounds, bounds[1:], strict=False)]
        return "this form of it is not followed"

    def trace(self, call: TracedCall) -> Any:
        if call.op_name() == "getitem" and not isinstance(call.args[0], Layout):
            return call.args[0][call.args[1]]  # a part of a tuple of tensors
        x = call.input()
        found = self.parts(call, x)
        if isinstance(found, str):
            raise Unsupported(found)
        result = call.execute()
        out = (tuple(Layout.of(r) for r in result) if isinstance(result, tuple | list)
               else Layout.of(result))
        if found is None:
            return out
        dim, parts = found
        inputs = call.tracer.channels(x, dim)
        # chunk/split/unbind compute their parts from the size; a slice written with constant
        # bounds names positions (rewrite it, else keep what it names)
        constant = call.op_name() in ("getitem", "narrow", "channel_select") and (
            call.constant_bounds()
        )
        why_not = call.rewritable(self.family) if constant else None
        if constant and why_not is None:
            call.add_site(Site(
                self.family, call.call.owner, call.site_index(self.family), call.call.name, dim,
                inputs.tolist(), [inputs[p].tolist() for p in parts], parts=parts,
                rank=len(x.shape),
            ))
            return out
        if not constant:
            period = _period(parts, len(inputs))
            if period is not None:
                call.tracer.strided(inputs, period)
                return out
            why_not = "its parts are not proportional to the channel count"
        call.tracer.fix(inputs, f"{call.describe()} selects channels by position ({why_not})")
        return out


def _period(parts: list[list[int]], size: int) -> int | None:
    """The block width every part's bounds are multiples of, for step-1 parts (else None)."""
    bounds = [size]
    for part in parts:
        if not part or part != list(range(part[0], part[-1] + 1)):
            return None
        bounds += [part[0], part[-1] + 1]
    period = math.gcd(*bounds)
    return period if period < size else None


class Pad(FunctionHandler):
    """``F.pad`` and ``torchslim::channel_pad``. Padding the channel dimension makes new
    constant channels; when the calling module can be traced alone, thinning rewrites the pad
    as the channels go, otherwise the padded channels stay."""

    family = "pad"

    def trace(self, call: TracedCall) -> Layout:
        x = call.input()
        shape = x.shape
        t = call.tracer
        why_not = None
        if call.op_name() == "channel_pad":
            dim, index, size = call.arg(1, "dim"), list(call.arg(2, "index")), call.arg(3, "size")
            spatial: list[int] = []
        else:
            pads = list(call.arg(1, "pad"))
            mode = call.arg(2, "mode", "constant")
            padded = {len(shape) - 1 - k: (pads[2 * k], pads[2 * k + 1])
                      for k in range(len(pads) // 2) if pads[2 * k] or pads[2 * k + 1]}
            hit = [d for d in padded if d in x.varying()]
            if not hit:
                return Layout(x.ids, call.out_shape)
            if len(hit) > 1 or mode != "constant" or min(padded[hit[0]]) < 0:
                raise Unsupported("it pads several channel dimensions, crops them, or pads them "
                                  "with a non-constant mode")
            dim = hit[0]
            before, after = padded[dim]
            size = shape[dim] + before + after
            index = list(range(before, before + shape[dim]))
            spatial = list(pads)
            k = len(shape) - 1 - dim
            spatial[2 * k] = spatial[2 * k + 1] = 0
            if call.arg(3, "value", 0):
                why_not = "it pads with a value other than zero"
        inputs = t.channels(x, dim)
        outputs = t.fresh(size)
        t.couple(inputs, outputs[torch.tensor(index)])
        if why_not is None:
            why_not = (call.rewritable(self.family) if call.constant_bounds()
                       else "its padding is computed")
        if why_not is None:
            call.add_site(Site(
                self.family, call.call.owner, call.site_index(self.family), call.call.name, dim,
                inputs.tolist(), [outputs.tolist()], parts=[index], spatial=spatial,
                rank=len(shape),
            ))
        else:
            carried = set(index)
            padding = torch.tensor([p for p in range(size) if p not in carried], dtype=torch.long)
            t.fix(outputs[padding], f"{call.describe()} pads channels ({why_not})")
        return t.along(call.out_shape, dim, outputs)


class ChannelShuffle(FunctionHandler):
    """``F.channel_shuffle``: the same position goes from every group; pixel (un)shuffles just
    move the ids."""

    def trace(self, call: TracedCall) -> Layout:
        x = call.input()
        out = Layout.of(call.execute())
        if call.op_name() in ("channel_shuffle", "native_channel_shuffle"):
            inputs = call.tracer.channels(x, 1)
            call.tracer.strided(inputs, len(inputs) // call.arg(1, "groups"))
        return out


class Spatial(FunctionHandler):
    """Pooling and interpolation over the dims after the channels (dim 1)."""

    def trace(self, call: TracedCall) -> Any:
        x = call.input()
        channels = call.tracer.channels(x, 1)
        out = call.call.out
        if isinstance(out, tuple):  # (values, indices)
            return tuple(call.tracer.along(o.shape, 1, channels) for o in out)
        return call.tracer.along(call.out_shape, 1, channels)


def _dims(value: Any, rank: int) -> list[int] | None:
    if value is None:
        return None
    values = [value] if isinstance(value, int) else list(value)
    return sorted(v % rank for v in values) if values else None


class Reduction(FunctionHandler):
    """``mean``, ``sum``, ``amax``, ``max(dim)``... over dims that do not carry channels."""

    def trace(self, call: TracedCall) -> Any:
        x = call.input()
        rank = len(x.shape)
        dims = _dims(call.arg(1, "dim"), rank)
        keepdim = bool(call.arg(2, "keepdim", False))
        if dims is None:
            dims = list(range(rank))
        if set(dims) & set(x.varying()):
            raise Unsupported("it reduces over the channels")
        ids = x.ids
        if not keepdim:
            for d in reversed(dims):
                ids = ids.squeeze(d)
        out = call.call.out
        metas = out if isinstance(out, tuple) else (out,)
        if any(ids.dim() != len(meta.shape) for meta in metas):
            raise Unsupported("its result's shape could not be followed")
        layouts = tuple(Layout(ids, meta.shape) for meta in metas)
        return layouts if isinstance(out, tuple) else layouts[0]


class Softmax(FunctionHandler):
    """``softmax``/``log_softmax`` over a dim that does not carry channels."""

    def trace(self, call: TracedCall) -> Layout:
        x = call.input()
        dim = call.arg(1, "dim")
        if dim is None or dim % len(x.shape) in x.varying():
            raise Unsupported("it normalises over the channels")
        return x


class Creation(FunctionHandler):
    """Tensors created in the forward: their channels cannot be removed."""

    def trace(self, call: TracedCall) -> Any:
        out = call.call.out
        if not isinstance(out, TensorMeta):
            return None
        return call.tracer.fresh_layout(out.shape, f"{call.describe()} creates a tensor")


_UNARY = (
    "relu relu6 leaky_relu elu selu celu gelu silu mish hardswish hardsigmoid hardtanh sigmoid "
    "tanh softplus softsign tanhshrink threshold hardshrink softshrink logsigmoid dropout "
    "dropout1d dropout2d dropout3d alpha_dropout feature_alpha_dropout rrelu glu_"
)
_TORCH_ELEMENTWISE = (
    "add sub mul div true_divide floor_divide remainder fmod pow maximum minimum where clamp "
    "clip abs neg exp exp2 expm1 log log2 log10 log1p sqrt rsqrt square sin cos tan sign "
    "reciprocal erf sigmoid tanh relu relu_ masked_fill lerp addcmul addcdiv clamp_min "
    "clamp_max nan_to_num round floor ceil trunc frac logical_not isnan isfinite gt lt ge le "
    "eq ne"
)
_METHODS_ELEMENTWISE = (
    f"{_TORCH_ELEMENTWISE} {_UNARY} add_ sub_ mul_ div_ clamp_ pow_ sigmoid_ tanh_ masked_fill_ "
    "float double half bfloat16 to type type_as contiguous clone detach requires_grad_ "
    "__add__ __radd__ __sub__ __rsub__ __mul__ __rmul__ __truediv__ __rtruediv__ __neg__ "
    "__pow__ __iadd__ __imul__ __isub__ __itruediv__"
)
_ATEN_ELEMENTWISE = (
    f"{_TORCH_ELEMENTWISE} {_UNARY} add_ sub_ mul_ div_ rsub hardtanh_ relu_ silu_ "
    "hardswish_ hardsigmoid_ gelu_ leaky_relu_ elu_ _to_copy to clone contiguous detach alias "
    "native_dropout dropout_ lift_fresh_copy copy"
)

register_function(
    Elementwise(),
    functions=[f for fs in ARITHMETIC.values() for f in fs]
    + _names(torch, _TORCH_ELEMENTWISE + " " + _UNARY)
    + _names(F, _UNARY),
    methods=_METHODS_ELEMENTWISE.split(),
    ops=_aten(_ATEN_ELEMENTWISE),
)
_MOVEMENT = (
    "view reshape flatten unflatten permute transpose t squeeze unsqueeze expand expand_as "
    "movedim moveaxis swapaxes swapdims repeat tile view_as reshape_as ravel"
)
register_function(
    Movement(),
    functions=_names(torch, _MOVEMENT),
    methods=_MOVEMENT.split(),
    ops=_aten(_MOVEMENT + " _unsafe_view alias_copy view_copy"),
)
register_function(
    Concat(),
    functions=_names(torch, "cat concat concatenate stack"),
    ops=_aten("cat concat stack"),
)
_PARTITION = "chunk split split_with_sizes tensor_split unbind select narrow"
register_function(
    Partition(),
    functions=[operator.getitem, *_names(torch, _PARTITION)],
    methods=_PARTITION.split(),
    ops=_aten(_PARTITION + " slice") + ["torchslim::channel_select"],
)
register_function(Pad(), functions=[F.pad], ops=["aten::pad", "aten::constant_pad_nd",
                                                 "torchslim::channel_pad"])
register_function(
    ChannelShuffle(),
    functions=_names(F, "channel_shuffle pixel_shuffle pixel_unshuffle")
    + _names(torch, "channel_shuffle pixel_shuffle pixel_unshuffle native_channel_shuffle"),
    ops=_aten("channel_shuffle native_channel_shuffle pixel_shuffle pixel_unshuffle"),
)
_POOLS = (
    "max_pool1d max_pool2d max_pool3d avg_pool1d avg_pool2d avg_pool3d adaptive_avg_pool1d "
    "adaptive_avg_pool2d adaptive_avg_pool3d adaptive_max_pool1d adaptive_max_pool2d "
    "adaptive_max_pool3d lp_pool1d lp_pool2d max_pool1d_with_indices max_pool2d_with_indices "
    "max_pool3d_with_indices adaptive_max_pool2d_with_indices interpolate upsample "
    "upsample_nearest upsample_bilinear"
)
register_function(
    Spatial(),
    functions=_names(F, _POOLS) + _names(torch, _POOLS),
    ops=_aten(_POOLS + " _adaptive_avg_pool2d _adaptive_avg_pool3d upsample_nearest1d "
              "upsample_nearest2d upsample_nearest3d upsample_bilinear2d upsample_linear1d "
              "upsample_bicubic2d upsample_trilinear3d"),
)
_REDUCTIONS = "mean sum amax amin max min std var norm logsumexp prod nansum nanmean"
register_function(
    Reduction(),
    functions=_names(torch, _REDUCTIONS),
    methods=_REDUCTIONS.split(),
    ops=_aten(_REDUCTIONS),
)
register_function(
    Softmax(),
    functions=_names(F, "softmax log_softmax softmin") + _names(torch, "softmax log_softmax"),
    methods=["softmax", "log_softmax"],
    ops=_aten("softmax log_softmax _softmax _log_softmax"),
)
_CREATION = (
    "zeros ones full empty arange rand randn randint tensor zeros_like ones_like full_like "
    "empty_like rand_like randn_like randint_like linspace eye"
)
register_function(
    Creation(),
    functions=_names(torch, _CREATION),
    methods="new_zeros new_ones new_full new_empty new_tensor".split(),
    ops=_aten(_CREATION + " new_zeros new_ones new_full new_empty scalar_tensor"),
)
