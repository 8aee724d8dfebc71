"""The classes a recipe may name, per section, with their validated arguments.

Distiller's class names keep Distiller's meaning; torchslim's own names sit beside them. Each
class has a pydantic model of its arguments (unknown keys, wrong types and out-of-range values
are errors) and a ``build`` function that makes the Python object. A class whose algorithm does
not exist yet is listed with ``build=None`` and the reason, so it is rejected clearly rather
than ignored.

Example::

    >>> from torchslim.recipe.classes import find_class
    >>> spec = find_class("pruners", "AutomatedGradualPruner")
    >>> args = spec.args(initial_sparsity=0.05, final_sparsity=0.5, weights=["conv1.weight"])
    >>> args.final_sparsity
    0.5
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal

import torch
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)
from torch import nn

from ..pruning import (
    AGPPruner,
    GlobalMagnitudePruner,
    LevelPruner,
    RandomPruner,
    SensitivityPruner,
    ThresholdPruner,
)
from ..pruning.pruners import resolve_values
from ..pruning.regularizers import L1Regularizer
from ..pruning.sensitivity import SensitivityResult
from ..pruning.structured import (
    BNGammaL1Regularizer,
    BNGammaPruner,
    ChannelNormPruner,
    FilterNormPruner,
    RandomChannelPruner,
)
from ..schedule.steps import PlannedPruneStep, PruneStep, StructuredPruneStep, ThinningStep


def _usable_pattern(pattern: str) -> str:
    """Reject weight patterns that would crash the regular-expression engine (not just fail)."""
    try:
        re.compile(pattern)
    except re.error:
        pass  # not a regex: still fine as an exact name or a glob
    except (OverflowError, RecursionError) as err:
        raise ValueError(f"not a usable weight name or pattern: {err}") from None
    return pattern


def _yaml_float(value: Any) -> Any:
    """YAML 1.1 reads ``1e-3`` (no dot) as text: take such text as the number it means."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


#: A finite number; in strict models (see :class:`Args`) a boolean is not one.
Number = Annotated[float, BeforeValidator(_yaml_float), Field(allow_inf_nan=False)]
Sparsity = Annotated[Number, Field(ge=0.0, lt=1.0)]
NonNegative = Annotated[Number, Field(ge=0.0)]
WeightName = Annotated[str, AfterValidator(_usable_pattern)]
WeightList = Annotated[list[WeightName], Field(min_length=1)]


class Args(BaseModel):
    """Arguments of a recipe class: unknown keys are errors, and values are not coerced (a
    boolean is not a number, a number not a name)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    #: Fields whose values (lists) or keys (mappings) are weight-name patterns.
    weight_fields: ClassVar[tuple[str, ...]] = ()


class AGPArgs(Args):
    weight_fields: ClassVar[tuple[str, ...]] = ("weights",)
    initial_sparsity: Sparsity
    final_sparsity: Sparsity
    weights: WeightList
    scope: Literal["layer", "global"] = "layer"
    steps_per_epoch: Annotated[int, Field(ge=1, le=10_000)] = 1

    @field_validator("final_sparsity")
    @classmethod
    def _not_below_initial(cls, value: float, info: ValidationInfo) -> float:
        initial = info.data.get("initial_sparsity")
        if initial is not None and value < initial:
            raise ValueError(f"must be >= initial_sparsity ({initial}), got {value}")
        return value


class LevelArgs(Args):
    weight_fields: ClassVar[tuple[str, ...]] = ("levels",)
    levels: Annotated[dict[WeightName, Sparsity], Field(min_length=1)]


class SensitivityArgs(Args):
    weight_fields: ClassVar[tuple[str, ...]] = ("sensitivities",)
    sensitivities: Annotated[dict[WeightName, NonNegative], Field(min_length=1)]


class ThresholdArgs(Args):
    weight_fields: ClassVar[tuple[str, ...]] = ("thresholds",)
    thresholds: Annotated[dict[WeightName, NonNegative], Field(min_length=1)]


class SparsityArgs(Args):
    weight_fields: ClassVar[tuple[str, ...]] = ("weights",)
    weights: WeightList
    sparsity: Sparsity


class RandomArgs(SparsityArgs):
    seed: Annotated[int, Field(ge=0, lt=2**63)] = 0


class L1RegularizerArgs(Args):
    weight_fields: ClassVar[tuple[str, ...]] = ("reg_regims",)
    reg_regims: Annotated[dict[WeightName, NonNegative], Field(min_length=1)]
    threshold_criteria: Literal["Mean_Abs", "Max"] | None = None


def _list_to_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


StructureKind = Literal["3D", "Filters", "Channels"]
Regime = Annotated[tuple[Sparsity, StructureKind], BeforeValidator(_list_to_tuple)]


class RankedStructureArgs(Args):
    """Distiller's ``reg_regims: {weight: [ratio, '3D' | 'Channels']}``."""

    weight_fields: ClassVar[tuple[str, ...]] = ("reg_regims",)
    reg_regims: Annotated[dict[WeightName, Regime], Field(min_length=1)]


class BernoulliArgs(Args):
    weight_fields: ClassVar[tuple[str, ...]] = ("weights",)
    desired_sparsity: Sparsity
    weights: WeightList
    group_type: Literal["Filters", "Channels"] = "Filters"
    seed: Annotated[int, Field(ge=0, lt=2**63)] = 0


class ChannelRankArgs(Args):
    """torchslim's structured pruners: ``weights`` picks layers (default: all)."""

    weight_fields: ClassVar[tuple[str, ...]] = ("weights",)
    sparsity: Sparsity
    weights: WeightList | None = None
    norm: Literal[1, 2] = 1
    global_ranking: bool = False
    round_to: Annotated[int, Field(ge=1, le=1024)] = 1


class BNGammaArgs(Args):
    weight_fields: ClassVar[tuple[str, ...]] = ("weights",)
    sparsity: Sparsity
    weights: WeightList | None = None
    global_ranking: bool = False


class TargetMACsArgs(Args):
    """``sensitivity``: a JSON from ``torchslim sensitivity --granularity group``."""

    sensitivity: str
    target_macs: Annotated[Number, Field(gt=0.0, lt=1.0)]
    norm: Literal[1, 2] = 1


class StrengthArgs(Args):
    strength: NonNegative


class ThinningArgs(Args):
    """No arguments of its own: Distiller's ``thinning_func_str``, ``arch`` and ``dataset`` are
    accepted and ignored (thinning follows the traced graph)."""


@dataclass(frozen=True)
class ClassSpec:
    """One class a recipe section may name."""

    name: str
    section: str
    args: type[BaseModel] | None = None
    build: Callable[[Any, nn.Module], Any] | None = None
    unsupported: str = ""
    ignored_keys: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())


_NOT_YET_QUANT = "quantization-aware training is not implemented yet (the quantization work)"

def _agp(a: AGPArgs, model: nn.Module) -> PruneStep:
    pruner = AGPPruner(a.weights, a.initial_sparsity, a.final_sparsity, a.scope)
    return PruneStep(pruner, steps_per_epoch=a.steps_per_epoch)


def _layers(model: nn.Module, patterns: list[str] | None) -> list[str] | None:
    """Module names of the weights ``patterns`` select (None = every layer)."""
    if patterns is None:
        return None
    names = resolve_values(model, dict.fromkeys(patterns, 0.0))
    return list(dict.fromkeys(name.rpartition(".")[0] for name in names))


def _ranked(a: RankedStructureArgs, model: nn.Module) -> StructuredPruneStep:
    regimes = []
    for pattern, (ratio, kind) in a.reg_regims.items():
        layers = _layers(model, [pattern])
        regimes.append((layers, FilterNormPruner(ratio, norm=1), False) if kind != "Channels"
                       else (layers, ChannelNormPruner(ratio, norm=1), True))
    return StructuredPruneStep(regimes=regimes)


def _bernoulli(a: BernoulliArgs, model: nn.Module) -> StructuredPruneStep:
    pruner = RandomChannelPruner(a.desired_sparsity, seed=a.seed)
    return StructuredPruneStep(
        regimes=[(_layers(model, a.weights), pruner, a.group_type == "Channels")]
    )


def _norm_ranked(cls, inputs: bool):
    def build(a: ChannelRankArgs, model: nn.Module) -> StructuredPruneStep:
        pruner = cls(
            a.sparsity, norm=a.norm, global_ranking=a.global_ranking, round_to=a.round_to
        )
        layers = _layers(model, a.weights)
        return StructuredPruneStep(regimes=[(layers, pruner, inputs and layers is not None)])

    return build


def _target_macs(a: TargetMACsArgs, model: nn.Module) -> PlannedPruneStep:
    rows = SensitivityResult.from_json(a.sensitivity).rows
    return PlannedPruneStep(rows, a.target_macs, norm=a.norm)


def _bn_gamma(a: BNGammaArgs, model: nn.Module) -> StructuredPruneStep:
    pruner = BNGammaPruner(a.sparsity, global_ranking=a.global_ranking)
    return StructuredPruneStep(regimes=[(_layers(model, a.weights), pruner, False)])


_PRUNERS = [
    # (names: Distiller's first, then torchslim's), arguments, builder
    (("AutomatedGradualPruner", "AGPPruner"), AGPArgs, _agp),
    (
        ("LevelParameterPruner", "SparsityLevelParameterPruner", "LevelPruner"),
        LevelArgs,
        lambda a, model: LevelPruner(a.levels),
    ),
    (("SensitivityPruner",), SensitivityArgs, lambda a, model: SensitivityPruner(a.sensitivities)),
    (
        ("MagnitudeParameterPruner", "ThresholdPruner"),
        ThresholdArgs,
        lambda a, model: ThresholdPruner(a.thresholds),
    ),
    (
        ("GlobalMagnitudePruner",),
        SparsityArgs,
        lambda a, model: GlobalMagnitudePruner(a.weights, a.sparsity),
    ),
    (("RandomPruner",), RandomArgs, lambda a, model: RandomPruner(a.weights, a.sparsity, a.seed)),
]

CLASSES: dict[str, dict[str, ClassSpec]] = {
    "pruners": {
        **{
            name: ClassSpec(name, "pruners", args, build)
            for names, args, build in _PRUNERS
            for name in names
        },
        **{
            name: ClassSpec(name, "pruners", args, build)
            for name, args, build in [
                ("L1RankedStructureParameterPruner", RankedStructureArgs, _ranked),
                ("BernoulliFilterPruner", BernoulliArgs, _bernoulli),
                ("FilterPruner", ChannelRankArgs, _norm_ranked(FilterNormPruner, False)),
                ("ChannelPruner", ChannelRankArgs, _norm_ranked(ChannelNormPruner, True)),
                ("BNGammaPruner", BNGammaArgs, _bn_gamma),
                ("TargetMACsPruner", TargetMACsArgs, _target_macs),
            ]
        },
    },
    "quantizers": {
        name: ClassSpec(name, "quantizers", unsupported=_NOT_YET_QUANT)
        for name in ("DorefaQuantizer", "PACTQuantizer", "QuantAwareTrainRangeLinearQuantization")
    },
    "regularizers": {
        "L1Regularizer": ClassSpec(
            "L1Regularizer", "regularizers", L1RegularizerArgs,
            lambda a, model: L1Regularizer(a.reg_regims),
            ignored_keys=("threshold_criteria",),
        ),
        "BNGammaL1Regularizer": ClassSpec(
            "BNGammaL1Regularizer", "regularizers", StrengthArgs,
            lambda a, model: BNGammaL1Regularizer(model, a.strength),
        ),
        "GroupLassoRegularizer": ClassSpec(
            "GroupLassoRegularizer", "regularizers",
            unsupported="group-lasso regularization is not implemented yet",
        ),
    },
    "extensions": {
        name: ClassSpec(
            name, "extensions", ThinningArgs, lambda a, model: ThinningStep(),
            ignored_keys=("thinning_func_str", "arch", "dataset"),
        )
        for name in ("FilterRemover", "ChannelRemover", "Thinning")
    },
}

_LR_EXCLUDED = {"LRScheduler", "_LRScheduler", "ReduceLROnPlateau", "LambdaLR",
                "MultiplicativeLR", "SequentialLR", "ChainedScheduler"}


def lr_scheduler_names() -> list[str]:
    """The ``torch.optim.lr_scheduler`` classes a recipe may name."""
    module = torch.optim.lr_scheduler
    return sorted(
        name for name, obj in vars(module).items()
        if inspect.isclass(obj) and issubclass(obj, module.LRScheduler)
        and name not in _LR_EXCLUDED and not name.startswith("_")
    )


def class_names(section: str) -> list[str]:
    """Every class name valid in ``section``."""
    if section == "lr_schedulers":
        return lr_scheduler_names()
    return sorted(CLASSES.get(section, {}))


def find_class(section: str, name: str) -> ClassSpec | None:
    """The :class:`ClassSpec` of ``name`` in ``section`` (None when unknown)."""
    if section == "lr_schedulers":
        return ClassSpec(name, section) if name in lr_scheduler_names() else None
    return CLASSES.get(section, {}).get(name)


def section_of(name: str) -> str | None:
    """The section a class name belongs to, for "this is a quantizer" hints."""
    for section in (*CLASSES, "lr_schedulers"):
        if name in class_names(section):
            return section
    return None
