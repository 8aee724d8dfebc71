"""What to quantize and how, as data (the transform is :func:`torchslim.quantization.prepare`).

Example::

    >>> from torchslim.quantization.config import QuantConfig
    >>> config = QuantConfig(weight_bits=4, exclude=("linear",))
    >>> config.weight_spec().describe(), config.activation_spec().describe()
    ('int4 symmetric per-channel (axis 0)', 'uint8 affine per-tensor')
    >>> QuantConfig.from_dict(config.to_dict()) == config
    True
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from ..core.errors import UserError
from .observers import OBSERVERS
from .qparams import QuantSpec

#: Quantizer families: ``static`` uses observers (PTQ, and QAT with running ranges), the others
#: are the QAT methods of :mod:`torchslim.quantization.fake`.
METHODS = ("static", "lsq", "pact", "dorefa", "wrpn")


@dataclass(frozen=True)
class QuantConfig:
    """How a model is quantized.

    ``weight_bits``/``activation_bits`` (2-8), ``per_channel`` weights, ``signed_weights`` (int8
    symmetric, the default; uint8 affine otherwise), ``signed_activations`` (int8 instead of
    uint8), the activation ``observer`` and ``weight_observer`` (names in
    :data:`~torchslim.quantization.observers.OBSERVERS`), seed 001's scale ``multiplier`` and its
    ``center``, ``exclude`` (layer names or patterns kept in float), ``method`` (see
    :data:`METHODS`), ``fold_bn`` (fold BatchNorms into the convolutions before quantizing;
    quantization-aware training keeps them, with the folded weight quantized), the moving-average
    observer's ``momentum``, PACT's initial clipping level ``pact_alpha`` and LSQ's starting
    step ``lsq_init`` (``"paper"``: ``2 mean|x| / sqrt(q_max)`` as Esser et al.; ``"observer"``:
    the range ``observer`` (activations) or ``weight_observer`` (weights) finds on the first
    batch, e.g. ``mse``, as LSQ+ does). Post-training
    refinements (Nagel et al. 2019): ``equalize`` (cross-layer equalization of the weights'
    per-channel ranges before quantizing) and ``bias_correction`` (each layer's bias absorbs
    the mean error quantization adds to its outputs on the calibration data).
    """

    weight_bits: int = 8
    activation_bits: int = 8
    per_channel: bool = True
    signed_weights: bool = True
    signed_activations: bool = False
    observer: str = "histogram"
    weight_observer: str = "minmax"
    multiplier: float = 1.0
    center: str = "zero"
    exclude: tuple[str, ...] = ()
    method: str = "static"
    fold_bn: bool = True
    momentum: float = 0.01
    pact_alpha: float = 8.0
    lsq_init: str = "paper"
    equalize: bool = False
    bias_correction: bool = False

    def __post_init__(self) -> None:
        for name in ("weight_bits", "activation_bits"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 2 <= value <= 8:
                raise UserError(f"{name} must be a whole number from 2 to 8, got {value!r}")
        for name in ("observer", "weight_observer"):
            if getattr(self, name) not in OBSERVERS:
                raise UserError(f"unknown {name.replace('_', ' ')} '{getattr(self, name)}': "
                                f"choose one of {', '.join(OBSERVERS)}")
        if self.lsq_init not in ("paper", "observer"):
            raise UserError(f"lsq_init must be 'paper' or 'observer', got {self.lsq_init!r}")
        if self.lsq_init != "paper" and self.method != "lsq":
            raise UserError(f"lsq_init sets LSQ's starting step: it needs method 'lsq', not "
                            f"'{self.method}'")
        if self.method not in METHODS:
            raise UserError(f"unknown quantization method '{self.method}': choose one of "
                            f"{', '.join(METHODS)}")
        if not 0 < self.momentum <= 1:
            raise UserError(f"momentum must be in (0, 1], got {self.momentum}")
        if not math.isfinite(self.pact_alpha) or self.pact_alpha <= 0:
            raise UserError(f"the PACT clipping level must be > 0, got {self.pact_alpha}")
        if not math.isfinite(self.multiplier) or self.multiplier <= 0:
            raise UserError(f"the scale multiplier must be a number > 0, got {self.multiplier}")
        if self.center not in ("zero", "min"):
            raise UserError(f"the multiplier's centre is 'zero' or 'min', got {self.center!r}")
        if (self.equalize or self.bias_correction) and self.method != "static":
            raise UserError("equalize and bias_correction refine post-training quantization "
                            f"(method 'static'), not '{self.method}'")
        if self.equalize and not self.fold_bn:
            raise UserError("equalize needs the BatchNorms folded (fold_bn=True)")
        object.__setattr__(self, "exclude", tuple(self.exclude))

    def weight_spec(self) -> QuantSpec:
        spec = QuantSpec.weights(self.weight_bits, self.per_channel)
        return spec if self.signed_weights else spec.with_(signed=False, symmetric=False)

    def activation_spec(self) -> QuantSpec:
        return QuantSpec.activations(self.activation_bits, self.signed_activations)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types (saved with a quantized model)."""
        data = asdict(self)
        data["exclude"] = list(self.exclude)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QuantConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserError(f"unknown quantization settings {unknown}: this torchslim knows "
                            f"{sorted(known)}")
        return cls(**{**data, "exclude": tuple(data.get("exclude", ()))})
