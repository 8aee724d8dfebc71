"""The recipe classes of the quantization package (section ``quantizers``): Distiller's names
with their arguments, and torchslim's own.

=====================================  ==========================================================
``QuantAwareTrainRangeLinearQuantizer``  quantization-aware training with running ranges
                                       (``ema_decay``), Distiller's ``mode``
``DorefaQuantizer``                    DoReFa weights and clipped activations
``PACTQuantizer``                      PACT activations (``act_clip_init_val``, L2 term
                                       ``act_clip_decay``), DoReFa weights
``WRPNQuantizer``                      WRPN weights (clipped to [-1, 1]) and clipped
                                       activations (Mishra et al. 2017)
``PostTrainLinearQuantizer``           calibration on the first ``calibration_batches``
                                       minibatches of its epoch, then quantized (for plain
                                       post-training quantization use ``torchslim quantize``)
``QuantizationAwareTraining``          torchslim's: any method (``static``, ``lsq``, ``pact``,
                                       ``dorefa``, ``wrpn``), bit widths, observer, frozen
                                       epochs, layers kept in float
=====================================  ==========================================================

Distiller's ``bits_bias``/``quantize_bias`` are accepted and ignored with a note: biases are
always quantized to the int32 grid an int8 runtime uses.

Example::

    >>> from torchslim.core.config import find_recipe_class
    >>> import torchslim.quantization.recipes
    >>> spec = find_recipe_class("quantizers", "PACTQuantizer")
    >>> step = spec.build(spec.args(bits_activations=4, bits_weights=4), None)
    >>> step.config.method, step.config.activation_bits
    ('pact', 4)
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field

from ..core.config import Args, NonNegative, Number, register_recipe_class
from ..core.errors import UserError
from .config import METHODS, QuantConfig
from .observers import OBSERVERS
from .steps import QuantizationStep

Bits = Annotated[int, Field(ge=2, le=8)]
Epoch = Annotated[int, Field(ge=0)]
ModeName = Literal["SYMMETRIC", "ASYMMETRIC_UNSIGNED", "ASYMMETRIC_SIGNED"]


class ModeSplit(Args):
    """Distiller's ``mode: {activations: ..., weights: ...}``."""

    activations: ModeName
    weights: ModeName


_MODES = ModeName.__args__


def _mode(value):
    """One mode name, or a mapping with exactly ``activations`` and ``weights`` (Distiller reads
    both keys); the errors name them."""
    if not isinstance(value, dict):
        return value
    if set(value) != {"activations", "weights"}:
        raise ValueError(f"a mode per tensor kind needs exactly the keys activations and "
                         f"weights, got {', '.join(map(str, value)) or 'none'}")
    for key, mode in value.items():
        if mode not in _MODES:
            raise ValueError(f"mode of the {key} must be one of {', '.join(_MODES)}, got {mode!r}")
    return ModeSplit(**value)


DistillerMode = Annotated[ModeName | ModeSplit, BeforeValidator(_mode)]
_IGNORED = ("bits_bias", "quantize_bias", "bits_accum")


class Override(Args):
    """One entry of Distiller's ``overrides``: ``null`` bit widths keep the layer in float."""

    bits_activations: Bits | None = 8
    bits_weights: Bits | None = 8
    bits_parameters: Bits | None = 8


class _WithOverrides(Args):
    overrides: dict[str, Override] = {}


def _excluded(a: _WithOverrides) -> tuple[str, ...]:
    """The layers Distiller's ``overrides`` keep in float (every bit width ``null``); other
    per-layer bit widths are refused with a clear message."""
    excluded = []
    for name, override in a.overrides.items():
        given = override.model_fields_set
        values = {key: getattr(override, key) for key in given}
        if values and all(value is None for value in values.values()):
            excluded.append(name)
        else:
            raise UserError(f"override '{name}': only null bit widths (keep the layer in float) "
                            "are supported; give every bits_* of it as null, or drop it")
    return tuple(excluded)


class RangeLinearArgs(_WithOverrides):
    bits_activations: Bits = 8
    bits_weights: Bits = 8
    mode: DistillerMode = "SYMMETRIC"
    ema_decay: Annotated[Number, Field(gt=0.0, lt=1.0)] = 0.999
    per_channel_wts: bool = False
    quantize_inputs: Literal[True] = True
    freeze_bn_epoch: Epoch | None = None


class DorefaArgs(_WithOverrides):
    bits_activations: Bits = 8
    bits_weights: Bits = 8


class PACTArgs(DorefaArgs):
    act_clip_init_val: Annotated[Number, Field(gt=0.0)] = 8.0
    act_clip_decay: NonNegative | None = None


class PostTrainArgs(_WithOverrides):
    bits_activations: Bits = 8
    bits_parameters: Bits = 8
    mode: DistillerMode = "SYMMETRIC"
    per_channel_wts: bool = False
    clip_acts: Literal["NONE", "AVG", "N_STD", "GAUSS", "LAPLACE"] = "NONE"
    calibration_batches: Annotated[int, Field(ge=1, le=100_000)] = 32


class QATArgs(Args):
    method: Literal[METHODS] = "static"  # type: ignore[valid-type]
    weight_bits: Bits = 8
    activation_bits: Bits = 8
    per_channel: bool = True
    signed_weights: bool = True
    signed_activations: bool = False
    observer: Literal[tuple(OBSERVERS)] = "moving_average"  # type: ignore[valid-type]
    weight_observer: Literal[tuple(OBSERVERS)] = "minmax"  # type: ignore[valid-type]
    freeze_observers_epoch: Epoch | None = None
    freeze_bn_epoch: Epoch | None = None
    pact_strength: NonNegative = 0.0
    lsq_init: Literal["paper", "observer"] = "paper"
    exclude: list[str] = []


def _signed_weights(mode: str | ModeSplit) -> bool:
    return (mode.weights if isinstance(mode, ModeSplit) else mode) != "ASYMMETRIC_UNSIGNED"


def _signed_activations(mode: str | ModeSplit) -> bool:
    return (mode.activations if isinstance(mode, ModeSplit) else mode) == "ASYMMETRIC_SIGNED"


def _range_linear(a: RangeLinearArgs, model) -> QuantizationStep:
    config = QuantConfig(
        weight_bits=a.bits_weights, activation_bits=a.bits_activations,
        per_channel=a.per_channel_wts, signed_weights=_signed_weights(a.mode),
        signed_activations=_signed_activations(a.mode), observer="moving_average",
        fold_bn=False, momentum=1.0 - a.ema_decay, exclude=_excluded(a),
    )
    return QuantizationStep(config, freeze_bn_epoch=a.freeze_bn_epoch)


def _dorefa(a: DorefaArgs, model) -> QuantizationStep:
    config = QuantConfig(weight_bits=a.bits_weights, activation_bits=a.bits_activations,
                         method="dorefa", fold_bn=False, exclude=_excluded(a))
    return QuantizationStep(config)


def _wrpn(a: DorefaArgs, model) -> QuantizationStep:
    config = QuantConfig(weight_bits=a.bits_weights, activation_bits=a.bits_activations,
                         method="wrpn", fold_bn=False, exclude=_excluded(a))
    return QuantizationStep(config)


def _pact(a: PACTArgs, model) -> QuantizationStep:
    config = QuantConfig(weight_bits=a.bits_weights, activation_bits=a.bits_activations,
                         method="pact", fold_bn=False, pact_alpha=a.act_clip_init_val,
                         exclude=_excluded(a))
    return QuantizationStep(config, pact_strength=a.act_clip_decay or 0.0)


_CLIP = {"NONE": "minmax", "AVG": "moving_average", "N_STD": "percentile", "GAUSS": "mse",
         "LAPLACE": "mse"}


def _post_train(a: PostTrainArgs, model) -> QuantizationStep:
    config = QuantConfig(
        weight_bits=a.bits_parameters, activation_bits=a.bits_activations,
        per_channel=a.per_channel_wts, signed_weights=_signed_weights(a.mode),
        signed_activations=_signed_activations(a.mode), observer=_CLIP[a.clip_acts],
        exclude=_excluded(a),
    )
    return QuantizationStep(config, calibration_batches=a.calibration_batches)


def _qat(a: QATArgs, model) -> QuantizationStep:
    config = QuantConfig(
        weight_bits=a.weight_bits, activation_bits=a.activation_bits, per_channel=a.per_channel,
        signed_weights=a.signed_weights, signed_activations=a.signed_activations,
        observer=a.observer, weight_observer=a.weight_observer, exclude=tuple(a.exclude),
        method=a.method, fold_bn=False, lsq_init=a.lsq_init,
    )
    return QuantizationStep(config, freeze_observers_epoch=a.freeze_observers_epoch,
                            freeze_bn_epoch=a.freeze_bn_epoch, pact_strength=a.pact_strength)


register_recipe_class("quantizers", ["QuantAwareTrainRangeLinearQuantizer"], RangeLinearArgs,
                      _range_linear, ignored_keys=_IGNORED)
register_recipe_class("quantizers", ["DorefaQuantizer"], DorefaArgs, _dorefa,
                      ignored_keys=_IGNORED)
register_recipe_class("quantizers", ["WRPNQuantizer"], DorefaArgs, _wrpn,
                      ignored_keys=_IGNORED)
register_recipe_class("quantizers", ["PACTQuantizer"], PACTArgs, _pact, ignored_keys=_IGNORED)
register_recipe_class("quantizers", ["PostTrainLinearQuantizer"], PostTrainArgs, _post_train,
                      ignored_keys=(*_IGNORED, "model_activation_stats"))
register_recipe_class("quantizers", ["QuantizationAwareTraining"], QATArgs, _qat)
