"""Quantization parameters: the integer grid a tensor is mapped to, and its scale and zero point.

A :class:`QuantSpec` says how a tensor is quantized: ``bits`` (2-8), ``signed`` (int8-style grid
``[-2^(b-1), 2^(b-1) - 1]``) or unsigned (uint8-style ``[0, 2^b - 1]``), ``symmetric`` (zero
maps to zero exactly, the range is ``[-m, m]``) or affine, and per tensor or per channel (``axis``).
:func:`qparams` turns an observed range ``[lo, hi]`` into scale and zero point, in one place:

* affine: ``scale = (hi - lo) / (q_max - q_min)``, ``zero_point = round(q_min - lo / scale)``,
  clamped to the grid (the range is first widened to contain 0, so 0 is exact);
* symmetric: ``scale = max(|lo|, |hi|) / ((q_max - q_min) // 2)``, ``zero_point = 0`` (signed)
  or the middle of the grid (unsigned): the restricted range ``[-127, 127]`` at 8 bits, whose
  ends are grid points (with ``/ 127.5`` they fall half-way between two, a tie that torch and
  ONNX Runtime round differently);
* ``multiplier`` (seed 001's alpha): the scale becomes ``alpha * scale``, centred at zero (the
  zero point is kept) or at the minimum (``center="min"``: ``zero_point = round(q_min - lo /
  scale')``, so the minimum stays on the grid's first step).

Example::

    >>> import torch
    >>> from torchslim.quantization.qparams import QuantSpec, qparams
    >>> scale, zero = qparams(torch.tensor(-1.0), torch.tensor(3.0), QuantSpec(bits=8))
    >>> round(float(scale), 6), int(zero)
    (0.015686, 64)
    >>> scale, zero = qparams(torch.tensor(-0.5), torch.tensor(2.0), QuantSpec.weights())
    >>> round(float(scale), 6), int(zero)  # 2 / 127
    (0.015748, 0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from ..core.errors import UserError


@dataclass(frozen=True)
class QuantSpec:
    """How one kind of tensor is quantized (see the module docstring). The default is the
    activation default: 8-bit unsigned affine per tensor; :meth:`weights` gives the weight
    default: 8-bit signed symmetric per output channel."""

    bits: int = 8
    signed: bool = False
    symmetric: bool = False
    axis: int | None = None
    narrow: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.bits, int) or not 2 <= self.bits <= 8:
            raise UserError(f"bit width must be a whole number from 2 to 8, got {self.bits!r}")

    @classmethod
    def weights(cls, bits: int = 8, per_channel: bool = True) -> QuantSpec:
        """Signed symmetric, per output channel (axis 0) unless ``per_channel=False``."""
        return cls(bits, signed=True, symmetric=True, axis=0 if per_channel else None)

    @classmethod
    def activations(cls, bits: int = 8, signed: bool = False) -> QuantSpec:
        """Affine per tensor, unsigned (uint8) unless ``signed``."""
        return cls(bits, signed=signed, symmetric=False)

    def with_(self, **changes) -> QuantSpec:
        """A copy with ``changes``."""
        return replace(self, **changes)

    @property
    def per_channel(self) -> bool:
        return self.axis is not None

    @property
    def q_min(self) -> int:
        low = -(2 ** (self.bits - 1)) if self.signed else 0
        return low + 1 if self.narrow and self.signed else low

    @property
    def q_max(self) -> int:
        return 2 ** (self.bits - 1) - 1 if self.signed else 2**self.bits - 1

    def describe(self) -> str:
        """``int8 symmetric per-channel`` and the like, for reports."""
        kind = f"{'int' if self.signed else 'uint'}{self.bits}"
        mapping = "symmetric" if self.symmetric else "affine"
        scope = f"per-channel (axis {self.axis})" if self.per_channel else "per-tensor"
        return f"{kind} {mapping} {scope}"


def qparams(
    lo: torch.Tensor,
    hi: torch.Tensor,
    spec: QuantSpec,
    multiplier: float = 1.0,
    center: str = "zero",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale (float32) and zero point (int32) for the range ``[lo, hi]`` (scalars, or one value
    per channel) on ``spec``'s grid; see the module docstring for ``multiplier`` and ``center``."""
    if not math.isfinite(multiplier) or multiplier <= 0:
        raise UserError(f"the scale multiplier must be a number > 0, got {multiplier}")
    if center not in ("zero", "min"):
        raise UserError(f"the scale multiplier's centre is 'zero' or 'min', got {center!r}")
    lo = torch.minimum(torch.as_tensor(lo, dtype=torch.float32), torch.tensor(0.0))
    hi = torch.maximum(torch.as_tensor(hi, dtype=torch.float32), torch.tensor(0.0))
    q_min, q_max = spec.q_min, spec.q_max
    eps = torch.finfo(torch.float32).eps
    if spec.symmetric:
        bound = torch.maximum(-lo, hi)
        # restricted range ([-127, 127] for int8): the range's ends fall on grid points, not
        # half-way between two (a tie that runtimes and torch round differently)
        scale = bound / ((q_max - q_min) // 2)
        # an all-zero channel (a pruned filter) gets scale 1: its weights stay 0 and its bias
        # keeps a grid (input scale * 1) on which it fits in int32
        scale = torch.where(bound > 0, scale.clamp(min=eps), torch.ones_like(scale))
        zero = torch.full_like(scale, 0 if spec.signed else (q_max + q_min + 1) // 2)
    else:
        scale = torch.clamp((hi - lo) / (q_max - q_min), min=eps)
        zero = torch.clamp(torch.round(q_min - lo / scale), q_min, q_max)
    if multiplier != 1.0:
        scale = scale * multiplier
        if center == "min" and not spec.symmetric:
            zero = torch.clamp(torch.round(q_min - lo / scale), q_min, q_max)
    return scale.float(), zero.to(torch.int32)


def fake_quantize(
    x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, spec: QuantSpec
) -> torch.Tensor:
    """``dequantize(quantize(x))`` on ``spec``'s grid, with the core ``torch.fake_quantize_*``
    ops (their gradient is the straight-through estimator inside the range, zero outside).

    ONNX's QuantizeLinear only has 8-bit grids: while exporting, a narrower grid is written as a
    clip to its range followed by the 8-bit grid with the same scale, which rounds the same."""
    q_min, q_max = spec.q_min, spec.q_max
    if torch.onnx.is_in_onnx_export() and (q_min, q_max) not in ((0, 255), (-128, 127)):
        shape = [1] * x.dim()
        if spec.per_channel:
            shape[spec.axis % x.dim()] = -1
        s, z = scale.reshape(shape).float(), zero.reshape(shape).float()
        x = torch.maximum(torch.minimum(x, (q_max - z) * s), (q_min - z) * s)
        spec = QuantSpec(8, spec.signed, spec.symmetric, spec.axis)
    if spec.per_channel:
        return torch.fake_quantize_per_channel_affine(
            x, scale.float(), zero.to(torch.int32), spec.axis % x.dim(), spec.q_min, spec.q_max
        )
    return torch.fake_quantize_per_tensor_affine(
        x, scale.reshape(()).float(), zero.reshape(()).to(torch.int32), spec.q_min, spec.q_max
    )
