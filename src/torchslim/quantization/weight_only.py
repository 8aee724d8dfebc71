"""Weight-only quantization for storage: a smaller file, dequantized to a float model on load.

Every Conv and Linear weight (or those ``include``/``exclude`` select) is stored on a signed
symmetric integer grid of ``bits`` bits: ``q = clamp(round(w / scale), -2^(b-1), 2^(b-1) - 1)``
with the scale :func:`qparams` gives :meth:`QuantSpec.weights` for the block's largest ``|w|``
(``max|w| / 127`` at 8 bits, ``max|w| / 7`` at 4 bits: the range's ends fall on grid points),
so every weight is within ``scale / 2`` of its stored value. The scales are computed per *block*:

* ``group_size=None``: one scale per output channel (per slice along dim 0: the output channels
  of a convolution or Linear layer, the input channels of a transposed convolution);
* ``group_size=g``: one scale per ``g`` consecutive weights of an output channel, along its
  flattened input dimension (``in_features`` for Linear, ``in * kh * kw`` for a convolution);
  the last group of a channel is shorter when ``g`` does not divide it;
* ``group_size="auto"`` (the default): groups of 128 below 8 bits (the common choice for 4-bit
  weights: it keeps one outlier from coarsening a whole row), one scale per channel at 8 bits.

Storage: 8-bit weights are an ``int8`` tensor of the weight's shape; narrower ones are packed
bit after bit into ``uint8`` bytes as the unsigned codes ``q + 2^(b-1)``, least significant bit
first (at 4 bits: two weights per byte, the first in the low nibble). The scales are float32
(4 bytes per channel or group: at 4 bits with groups of 128, 0.25 bit per weight). Everything
else in the ``state_dict`` (biases, BatchNorm parameters and statistics, weights left out) is
stored unchanged, in its own dtype (float32 for a float32 model). The file is an ordinary
``torch.save`` archive of tensors, numbers and strings, loadable with
``torch.load(..., weights_only=True)``.

Example::

    >>> import tempfile, torch
    >>> from torchslim.quantization.weight_only import (load_weight_only, quantize_weights,
    ...                                                 save_weight_only)
    >>> model = torch.nn.Sequential(torch.nn.Linear(256, 64), torch.nn.ReLU(),
    ...                             torch.nn.Linear(64, 10))
    >>> path = save_weight_only(model, tempfile.mktemp(suffix=".pt"), bits=4)
    >>> restored = load_weight_only(torch.nn.Sequential(torch.nn.Linear(256, 64),
    ...                             torch.nn.ReLU(), torch.nn.Linear(64, 10)), path)
    >>> error = (restored[0].weight - model[0].weight).abs()
    >>> scale = quantize_weights(model, bits=4)["0.weight"].scale_per_element()
    >>> bool((error <= scale / 2 * 1.0001).all())
    True
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.conv import _ConvNd

from ..core.edits import apply_edits
from ..core.errors import UserError, did_you_mean
from ..core.fileio import atomic_torch_save
from ..core.names import match_names
from ..models.checkpoint import describe_keys, read_checkpoint
from .qparams import QuantSpec, qparams

FORMAT = "torchslim.weight-only/1"
#: The group size ``group_size="auto"`` gives below 8 bits (8-bit weights: one scale per channel).
DEFAULT_GROUP_SIZE = 128
#: The layer types whose weights are quantized.
LAYERS = (nn.Linear, _ConvNd)

GroupSize = int | None | Literal["auto"]


def check_bits(bits: Any) -> int:
    """``bits`` if weight-only storage supports it (2 to 8), else :class:`UserError`.

    >>> check_bits(16)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    torchslim.core.errors.UserError: weight-only storage packs 2 to 8 bits per weight ..., got 16
    """
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 8:
        raise UserError(
            "weight-only storage packs 2 to 8 bits per weight (8: int8, 4: two weights per "
            f"byte), got {bits!r}"
        )
    return bits


def resolve_group_size(group_size: Any, bits: int) -> int | None:
    """The group size ``group_size`` stands for at ``bits`` bits (None: one scale per channel).

    >>> resolve_group_size("auto", 4), resolve_group_size("auto", 8), resolve_group_size(64, 8)
    (128, None, 64)
    """
    if group_size == "auto":
        return DEFAULT_GROUP_SIZE if bits < 8 else None
    if group_size is None:
        return None
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise UserError(
            "group_size is a whole number of weights >= 1, None (one scale per output "
            f"channel) or 'auto', got {group_size!r}"
        )
    return group_size


def pack_bits(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Unsigned ``codes`` (each below ``2**bits``) packed into bytes, ``bits`` bits each, least
    significant bit first: ``ceil(n * bits / 8)`` uint8 values.

    >>> pack_bits(torch.tensor([1, 2, 15], dtype=torch.uint8), 4).tolist()  # 0x21, 0x0f
    [33, 15]
    """
    check_bits(bits)
    flat = codes.detach().cpu().reshape(-1).to(torch.uint8)
    if bits == 8:
        return flat.clone()
    if bits == 4:  # the common case, without the bit-per-byte detour below
        padded = torch.cat([flat, flat.new_zeros(flat.numel() % 2)]).view(-1, 2)
        return padded[:, 0] | (padded[:, 1] << 4)
    stream = np.unpackbits(flat.numpy()[:, None], axis=1, bitorder="little")[:, :bits]
    return torch.from_numpy(np.packbits(stream.reshape(-1), bitorder="little"))


def unpack_bits(packed: torch.Tensor, bits: int, count: int) -> torch.Tensor:
    """The first ``count`` codes of :func:`pack_bits` output, as uint8.

    >>> unpack_bits(torch.tensor([33, 15], dtype=torch.uint8), 4, 3).tolist()
    [1, 2, 15]
    """
    check_bits(bits)
    packed = packed.detach().cpu().reshape(-1).to(torch.uint8)
    if bits == 8:
        return packed[:count].clone()
    if bits == 4:
        return torch.stack([packed & 0x0F, packed >> 4], dim=1).reshape(-1)[:count].clone()
    stream = np.unpackbits(packed.numpy(), count=count * bits, bitorder="little")
    codes = np.packbits(stream.reshape(count, bits), axis=1, bitorder="little")
    return torch.from_numpy(codes.reshape(count))


def _packed_bytes(numel: int, bits: int) -> int:
    return (numel * bits + 7) // 8


@dataclass(frozen=True)
class PackedWeight:
    """One weight on a ``bits``-bit symmetric grid: the stored integers and their scales.

    ``data`` is int8 of the weight's shape at 8 bits, else the packed uint8 codes (see the module
    docstring); ``scale`` is float32 of shape ``(channels, groups)``.

    >>> w = torch.tensor([[0.5, -1.0], [2.0, 0.25]])
    >>> packed = PackedWeight.quantize(w, bits=8)  # one scale per row: 1 / 127 and 2 / 127
    >>> packed.values().tolist()
    [[64, -127], [127, 16]]
    >>> bool(((packed.dequantize() - w).abs() <= 0.5001 * packed.scale_per_element()).all())
    True
    """

    shape: tuple[int, ...]
    bits: int
    group_size: int | None
    data: torch.Tensor
    scale: torch.Tensor

    @property
    def spec(self) -> QuantSpec:
        """The grid: signed symmetric, ``bits`` bits."""
        return QuantSpec.weights(self.bits)

    @property
    def channels(self) -> int:
        return self.shape[0]

    @property
    def row_length(self) -> int:
        """Weights per output channel."""
        return math.prod(self.shape[1:])

    @property
    def block(self) -> int:
        """Weights per scale along a channel (the last block may be shorter)."""
        return self.row_length if self.group_size is None else min(self.group_size,
                                                                   self.row_length)

    @property
    def groups(self) -> int:
        """Scales per channel."""
        return max(1, -(-self.row_length // self.block))

    @property
    def nbytes(self) -> int:
        """Bytes of the stored integers and scales."""
        return self.data.numel() * self.data.element_size() + self.scale.numel() * 4

    @classmethod
    def quantize(cls, weight: torch.Tensor, bits: int = 8,
                 group_size: int | None = None) -> PackedWeight:
        """Quantize ``weight`` (two or more dimensions) to ``bits`` bits, one scale per output
        channel or per ``group_size`` weights of a channel."""
        bits = check_bits(bits)
        group_size = resolve_group_size(group_size, bits)
        if weight.dim() < 2:
            raise UserError(f"weight-only quantization needs a weight of 2 or more dimensions, "
                            f"got shape {tuple(weight.shape)}")
        shape = tuple(weight.shape)
        empty = cls(shape, bits, group_size, torch.empty(0), torch.empty(0))
        blocks = _blocks(weight.detach().cpu().float().reshape(shape[0], -1), empty)
        spec = empty.spec
        scale, _ = qparams(blocks.amin(-1), blocks.amax(-1), spec)
        q = torch.clamp(torch.round(blocks / scale[..., None]), spec.q_min, spec.q_max)
        q = q.reshape(shape[0], -1)[:, :empty.row_length].reshape(shape)
        if bits == 8:
            data = q.to(torch.int8).contiguous()
        else:
            data = pack_bits((q - spec.q_min).to(torch.uint8), bits)
        return cls(shape, bits, group_size, data, scale.contiguous())

    def values(self) -> torch.Tensor:
        """The stored integers ``q`` (int16, in the weight's shape)."""
        if self.bits == 8:
            return self.data.to(torch.int16).reshape(self.shape)
        codes = unpack_bits(self.data, self.bits, math.prod(self.shape))
        return (codes.to(torch.int16) + self.spec.q_min).reshape(self.shape)

    def scale_per_element(self) -> torch.Tensor:
        """The scale of every weight, in the weight's shape (for error bounds)."""
        rows = self.scale[..., None].expand(self.channels, self.groups, self.block)
        return rows.reshape(self.channels, -1)[:, :self.row_length].reshape(self.shape)

    def dequantize(self) -> torch.Tensor:
        """``q * scale`` as float32, in the weight's shape."""
        return self.values().float() * self.scale_per_element()

    def to_dict(self) -> dict[str, Any]:
        """Plain data (tensors, numbers, lists) for a weights-only file."""
        return {"shape": list(self.shape), "bits": self.bits, "group_size": self.group_size,
                "data": self.data, "scale": self.scale}

    @classmethod
    def from_dict(cls, entry: Mapping[str, Any], name: str = "weight") -> PackedWeight:
        """Invert :meth:`to_dict`; a damaged entry is a :class:`UserError` naming ``name``."""
        try:
            shape = tuple(int(size) for size in entry["shape"])
            packed = cls(shape, int(entry["bits"]), entry["group_size"], entry["data"],
                         entry["scale"])
            check_bits(packed.bits)
            resolve_group_size(packed.group_size, packed.bits)
        except (KeyError, TypeError, ValueError, UserError) as err:
            raise UserError(f"weight '{name}' is damaged in the file ({err})") from None
        packed._check(name)
        return packed

    def _check(self, name: str) -> None:
        numel = math.prod(self.shape)
        data_ok = isinstance(self.data, torch.Tensor) and (
            (self.bits == 8 and self.data.dtype == torch.int8 and self.data.numel() == numel)
            or (self.bits < 8 and self.data.dtype == torch.uint8
                and self.data.numel() == _packed_bytes(numel, self.bits))
        )
        scale_ok = (isinstance(self.scale, torch.Tensor) and self.scale.is_floating_point()
                    and tuple(self.scale.shape) == (self.channels, self.groups))
        if len(self.shape) < 2 or not data_ok or not scale_ok:
            raise UserError(f"weight '{name}' is damaged in the file (its data or scales do not "
                            f"match shape {self.shape} at {self.bits} bits): write it again")


def _blocks(rows: torch.Tensor, packed: PackedWeight) -> torch.Tensor:
    """``rows`` (channels x row length) zero-padded and cut into (channels, groups, block)."""
    pad = packed.groups * packed.block - packed.row_length
    return F.pad(rows, (0, pad)).view(packed.channels, packed.groups, packed.block)


def quantizable_weights(model: nn.Module) -> list[str]:
    """The ``state_dict`` names of the Conv and Linear weights of ``model``, in model order.

    >>> quantizable_weights(torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2),
    ...                                         torch.nn.Flatten(), torch.nn.Linear(2, 3)))
    ['0.weight', '3.weight']
    """
    keys = set(model.state_dict())
    names = []
    for module_name, module in model.named_modules():
        name = f"{module_name}.weight" if module_name else "weight"
        if isinstance(module, LAYERS) and isinstance(module.weight, torch.Tensor) \
                and name in keys and module.weight.dim() >= 2:
            names.append(name)
    return names


def _as_patterns(patterns: str | Iterable[str] | None) -> list[str] | None:
    if patterns is None:
        return None
    return [patterns] if isinstance(patterns, str) else list(patterns)


def _select(candidates: list[str], patterns: list[str], role: str) -> set[str]:
    modules = [name.removesuffix(".weight") for name in candidates]
    selected: set[str] = set()
    for pattern in patterns:
        hits = match_names(pattern, candidates)
        hits = hits or [f"{m}.weight" for m in match_names(pattern, modules)]
        if not hits:
            raise UserError(
                f"{role} pattern '{pattern}' matches no Conv or Linear weight"
                f"{did_you_mean(pattern, candidates)}; give weight or layer names, globs "
                "(layer1.*) or regular expressions"
            )
        selected.update(hits)
    return selected


def select_weights(
    model: nn.Module,
    include: str | Iterable[str] | None = None,
    exclude: str | Iterable[str] = (),
) -> list[str]:
    """The quantizable weights (:func:`quantizable_weights`) that ``include`` selects (all when
    None) minus those ``exclude`` selects. Patterns name a weight or its layer, exactly, as a
    glob (``*`` also matches dots) or as a regular expression (see
    :func:`torchslim.core.names.match_names`); one that selects nothing is a :class:`UserError`.

    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    >>> select_weights(model, exclude=["1"])
    ['0.weight']
    """
    candidates = quantizable_weights(model)
    if not candidates:
        raise UserError(f"{type(model).__name__} has no Conv or Linear weight to quantize")
    include_list = _as_patterns(include)
    chosen = set(candidates) if include_list is None else _select(candidates, include_list,
                                                                  "include")
    chosen -= _select(candidates, _as_patterns(exclude) or [], "exclude")
    return [name for name in candidates if name in chosen]


def quantize_weights(
    model: nn.Module,
    bits: int = 8,
    *,
    group_size: GroupSize = "auto",
    include: str | Iterable[str] | None = None,
    exclude: str | Iterable[str] = (),
) -> dict[str, PackedWeight]:
    """The selected weights of ``model`` (see :func:`select_weights`) quantized to ``bits`` bits,
    keyed by ``state_dict`` name; ``model`` is not changed.

    >>> packed = quantize_weights(torch.nn.Linear(300, 4), bits=4)
    >>> packed["weight"].scale.shape, packed["weight"].data.numel()  # 3 groups, 2 weights a byte
    (torch.Size([4, 3]), 600)
    """
    bits = check_bits(bits)
    size = resolve_group_size(group_size, bits)
    state = model.state_dict()
    return {name: PackedWeight.quantize(state[name], bits, size)
            for name in select_weights(model, include, exclude)}


def save_weight_only(
    model: nn.Module,
    path: str | os.PathLike,
    bits: int = 8,
    *,
    group_size: GroupSize = "auto",
    include: str | Iterable[str] | None = None,
    exclude: str | Iterable[str] = (),
    meta: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model`` (atomically) with its selected weights quantized to ``bits`` bits and
    everything else unchanged (see the module docstring); ``meta`` (JSON-like: model name,
    classes, ``"edits"`` of a thinned model) is stored beside them. Returns ``path``."""
    packed = quantize_weights(model, bits, group_size=group_size, include=include,
                              exclude=exclude)
    try:  # plain JSON types only, so that weights_only loading accepts the file
        plain_meta = json.loads(json.dumps(dict(meta or {})))
    except (TypeError, ValueError) as err:
        raise UserError(f"the meta of a weight-only file must be JSON-like: {err}") from None
    rest = {name: tensor.detach().cpu().clone()  # clone: save no more than the tensor's storage
            for name, tensor in model.state_dict().items() if name not in packed}
    payload = {
        "format": FORMAT,
        "bits": bits,
        "group_size": resolve_group_size(group_size, bits),
        "weights": {name: weight.to_dict() for name, weight in packed.items()},
        "state": rest,
        "meta": plain_meta,
    }
    return atomic_torch_save(payload, path)


def is_weight_only(checkpoint: Any) -> bool:
    """Whether a loaded checkpoint object is in this module's format."""
    return isinstance(checkpoint, dict) and checkpoint.get("format") == FORMAT


def read_weight_only(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The dequantized ``state_dict`` (float32 weights) and the meta of a file written by
    :func:`save_weight_only`."""
    checkpoint = read_checkpoint(path)
    if not is_weight_only(checkpoint):
        found = checkpoint.get("format") if isinstance(checkpoint, dict) else None
        what = f"format '{found}'" if found else "a plain checkpoint"
        raise UserError(f"'{path}' is not a torchslim weight-only file ({what}, not {FORMAT}): "
                        "write one with save_weight_only, or load it with load_weights")
    weights, rest = checkpoint.get("weights"), checkpoint.get("state")
    if not isinstance(weights, dict) or not isinstance(rest, dict):
        raise UserError(f"'{path}' is damaged (no weights or state): write it again")
    try:
        state = {name: PackedWeight.from_dict(entry, name).dequantize()
                 for name, entry in weights.items()}
    except UserError as err:
        raise UserError(f"'{path}': {err}") from None
    state.update(rest)
    return state, dict(checkpoint.get("meta") or {})


def load_weight_only(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load a file written by :func:`save_weight_only` into ``model`` (same architecture) with
    the weights dequantized to float, and return it: the float model computes what the stored
    weights compute, so its accuracy can be evaluated in PyTorch. Architecture edits in the
    file's ``meta["edits"]`` (a thinned model) are replayed first, as
    :func:`torchslim.models.load_weights` does. A file of another model is a
    :class:`UserError` naming the keys or shapes that do not fit."""
    state, meta = read_weight_only(path)
    model = apply_edits(model, meta.get("edits") or [])
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(describe_keys(missing, list(state), "missing keys"))
        if unexpected:
            parts.append(describe_keys(unexpected, list(expected), "unexpected keys"))
        raise UserError(f"weight-only file '{path}' does not fit the model: {'; '.join(parts)}; "
                        "is it the file of another model?")
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise UserError(
                f"weight-only file '{path}' does not fit the model: '{key}' has shape "
                f"{tuple(tensor.shape)} in the file but {tuple(expected[key].shape)} in the model"
            )
    model.load_state_dict(state)
    return model
