"""The recipe classes of the pruning package: Distiller's names and torchslim's own, each with a
strict argument model and a builder, registered with
:func:`torchslim.core.config.register_recipe_class`.

======================  ===========================================================================
section                 classes
======================  ===========================================================================
pruners, element-wise   ``AutomatedGradualPruner``/``AGPPruner``, ``LevelParameterPruner``/
                        ``SparsityLevelParameterPruner``/``LevelPruner``, ``SensitivityPruner``,
                        ``MagnitudeParameterPruner``/``ThresholdPruner``, ``GlobalMagnitudePruner``,
                        ``RandomPruner``, ``SplicingPruner``, ``BaiduRNNPruner``
pruners, structured     ``L1RankedStructureParameterPruner``, ``L2RankedStructureParameterPruner``,
                        ``RandomRankedFilterPruner``, ``ActivationAPoZRankedFilterPruner``,
                        ``ActivationMeanRankedFilterPruner``, ``GradientRankedFilterPruner``,
                        ``BernoulliFilterPruner``, ``FilterPruner``, ``ChannelPruner``,
                        ``BNGammaPruner``, ``TargetMACsPruner``,
                        ``RandomLevelStructureParameterPruner``, ``FMReconstructionChannelPruner``,
                        ``StructureParameterPruner``
pruners, depth          ``BlockPruner`` (whole residual blocks, :mod:`~torchslim.pruning.depth`)
pruners, structured     ``L1RankedStructureParameterPruner_AGP``/
AGP                     ``StructuredAutomatedGradualPruner``,
                        ``L2RankedStructureParameterPruner_AGP``, ``RandomRankedFilterPruner_AGP``/
                        ``BernoulliFilterPruner_AGP``, ``ActivationAPoZRankedFilterPruner_AGP``,
                        ``ActivationMeanRankedFilterPruner_AGP``, ``GradientRankedFilterPruner_AGP``
regularizers            ``L1Regularizer``, ``GroupLassoRegularizer``, ``GroupVarianceRegularizer``,
                        ``BNGammaL1Regularizer``
extensions              ``StructureRemover``/``FilterRemover``/``ChannelRemover``/``Thinning``
======================  ===========================================================================

Example::

    >>> from torchslim.core.config import find_recipe_class
    >>> import torchslim.pruning.recipes
    >>> spec = find_recipe_class("pruners", "AutomatedGradualPruner")
    >>> args = spec.args(initial_sparsity=0.05, final_sparsity=0.5, weights=["conv1.weight"])
    >>> args.final_sparsity
    0.5
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, ClassVar, Literal

from pydantic import BeforeValidator, Field, ValidationInfo, field_validator, model_validator
from torch import nn

from ..core.config import (
    Args,
    NoArgs,
    NonNegative,
    Number,
    Seed,
    Sparsity,
    WeightList,
    WeightName,
    list_to_tuple,
    register_recipe_class,
)
from ..core.errors import UserError
from ..core.names import resolve_values
from .activations import ActivationImportance, CollectingPruneStep, GradientImportance
from .depth import IMPORTANCES, BlockPruner, BlockRemovalStep
from .importance import Importance, RandomImportance, WeightNorm
from .pruners import (
    AGPPruner,
    GlobalMagnitudePruner,
    LevelPruner,
    RandomPruner,
    SensitivityPruner,
    ThresholdPruner,
)
from .reconstruction import ReconstructingPruneStep
from .regularizers import (
    BNGammaL1Regularizer,
    GroupLassoRegularizer,
    GroupVarianceRegularizer,
    L1Regularizer,
    StructureThresholdStep,
)
from .rnn import BaiduRNNStep
from .schedules import AGP, RandomLevel
from .sensitivity import SensitivityResult
from .splicing import SplicingStep
from .steps import PlannedPruneStep, PruneStep, StructuredPruneStep, ThinningStep
from .structured import (
    BNGammaPruner,
    ChannelNormPruner,
    FilterNormPruner,
    RandomChannelPruner,
    StructuredPruner,
)


class _GradualArgs(Args):
    """A sparsity rising from ``initial_sparsity`` to ``final_sparsity`` on ``weights``."""

    weight_fields: ClassVar[tuple[str, ...]] = ("weights",)
    initial_sparsity: Sparsity
    final_sparsity: Sparsity
    weights: WeightList

    @field_validator("final_sparsity")
    @classmethod
    def _not_below_initial(cls, value: float, info: ValidationInfo) -> float:
        initial = info.data.get("initial_sparsity")
        if initial is not None and value < initial:
            raise ValueError(f"must be >= initial_sparsity ({initial}), got {value}")
        return value


class AGPArgs(_GradualArgs):
    scope: Literal["layer", "global"] = "layer"
    steps_per_epoch: Annotated[int, Field(ge=1, le=10_000)] = 1


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
    seed: Seed = 0


GroupType = Literal["2D", "3D", "Filters", "4D", "Channels", "Rows", "Cols", "Rows+Cols",
                    "Cols+Rows", "Channels+4D", "4D+Channels"]
GroupRegime = Annotated[tuple[NonNegative, GroupType], BeforeValidator(list_to_tuple)]


class GroupLassoArgs(Args):
    """Distiller's ``reg_regims: {weight: [strength, group type]}``."""

    weight_fields: ClassVar[tuple[str, ...]] = ("reg_regims",)
    reg_regims: Annotated[dict[WeightName, GroupRegime], Field(min_length=1)]
    threshold_criteria: Literal["Mean_Abs", "Max"] | None = None


StructureKindThreshold = Literal["2D", "3D", "Filters", "Channels", "Rows", "Cols"]
ThresholdRegime = Annotated[tuple[NonNegative, StructureKindThreshold],
                            BeforeValidator(list_to_tuple)]


class StructureThresholdArgs(Args):
    """Distiller's ``StructureParameterPruner``: ``reg_regims: {weight: [threshold, group
    type]}`` and ``threshold_criteria``."""

    weight_fields: ClassVar[tuple[str, ...]] = ("reg_regims",)
    reg_regims: Annotated[dict[WeightName, ThresholdRegime], Field(min_length=1)]
    threshold_criteria: Literal["Mean_Abs", "Max"]


class GroupVarianceArgs(Args):
    weight_fields: ClassVar[tuple[str, ...]] = ("reg_regims",)
    reg_regims: Annotated[dict[WeightName, GroupRegime], Field(min_length=1)]


class L1RegularizerArgs(Args):
    weight_fields: ClassVar[tuple[str, ...]] = ("reg_regims",)
    reg_regims: Annotated[dict[WeightName, NonNegative], Field(min_length=1)]
    threshold_criteria: Literal["Mean_Abs", "Max"] | None = None


StructureKind = Literal["3D", "Filters", "Channels"]
Regime = Annotated[tuple[Sparsity, StructureKind], BeforeValidator(list_to_tuple)]


class RankedStructureArgs(Args):
    """Distiller's two forms: ``reg_regims: {weight: [ratio, '3D' | 'Channels']}`` (before 2019,
    seed 002's), or ``group_type``, ``desired_sparsity`` and ``weights`` (its current
    examples)."""

    weight_fields: ClassVar[tuple[str, ...]] = ("reg_regims", "weights")
    reg_regims: Annotated[dict[WeightName, Regime], Field(min_length=1)] | None = None
    group_type: Literal["Filters", "3D", "Channels", "Rows"] | None = None
    desired_sparsity: Sparsity | None = None
    weights: WeightList | None = None
    group_dependency: Literal["Leader"] | None = None

    @model_validator(mode="after")
    def _one_form(self):
        new_form = {k: getattr(self, k) for k in ("group_type", "desired_sparsity", "weights")}
        if self.reg_regims is not None:
            given = [k for k, v in new_form.items() if v is not None]
            if given:
                raise ValueError(f"give either reg_regims or group_type/desired_sparsity/"
                                 f"weights, not both (found reg_regims and {given[0]})")
            if self.group_dependency is not None:
                raise ValueError("group_dependency: Leader ties the weights listed under "
                                 "weights (with group_type and desired_sparsity), not those "
                                 "of reg_regims, which each keep their own ratio")
        else:
            missing = [k for k, v in new_form.items() if v is None]
            if missing:
                raise ValueError(f"needs {', '.join(missing)} (or the older reg_regims form)")
        return self


class FilterRankedArgs(RankedStructureArgs):
    """Distiller's one-shot filter rankings (random, APoZ, mean activation, gradient): filters
    only, in the current form; ``seed`` for the random one, ``collect_batches`` for those that
    rank from training minibatches."""

    group_type: Literal["Filters", "3D"] | None = None
    collect_batches: Annotated[int, Field(ge=1, le=100_000)] = 32
    seed: Seed = 0

    @model_validator(mode="after")
    def _current_form(self):
        if self.reg_regims is not None:
            raise ValueError("give group_type, desired_sparsity and weights (reg_regims is the "
                             "older form of L1RankedStructureParameterPruner only)")
        return self


class FMReconstructionArgs(Args):
    """Distiller's ``FMReconstructionChannelPruner``: input channels of ``weights`` ranked by L1,
    then the layers refitted on sampled feature maps (``collect_batches`` minibatches,
    ``points_per_map`` positions per image)."""

    weight_fields: ClassVar[tuple[str, ...]] = ("weights",)
    group_type: Literal["Channels"] = "Channels"
    desired_sparsity: Sparsity
    weights: WeightList
    group_dependency: Literal["Leader"] | None = None
    collect_batches: Annotated[int, Field(ge=1, le=100_000)] = 32
    points_per_map: Annotated[int, Field(ge=1, le=10_000)] = 10
    seed: Seed = 0


class StructuredAGPArgs(_GradualArgs):
    """Distiller's structured AGP pruners ranking by weight norm (``L1RankedStructureParameter
    Pruner_AGP``, ...): filters, or input channels with ``group_type: Channels``."""

    group_type: Literal["Filters", "3D", "Channels", "Rows"] = "Filters"
    group_dependency: Literal["Leader"] | None = None


class FilterAGPArgs(StructuredAGPArgs):
    """Distiller's structured AGP pruners that rank filters only (random, Bernoulli, APoZ, mean
    activation, gradient: Distiller asserts ``group_type`` is ``Filters`` or ``3D``)."""

    group_type: Literal["Filters", "3D"] = "Filters"
    collect_batches: Annotated[int, Field(ge=1, le=100_000)] = 32
    seed: Seed = 0


class RandomLevelArgs(Args):
    weight_fields: ClassVar[tuple[str, ...]] = ("weights",)
    sparsity_range: Annotated[tuple[Sparsity, Sparsity], BeforeValidator(list_to_tuple)]
    group_type: Literal["Filters", "3D", "Channels", "Rows"] = "Filters"
    weights: WeightList
    seed: Seed = 0


class BernoulliArgs(Args):
    weight_fields: ClassVar[tuple[str, ...]] = ("weights",)
    desired_sparsity: Sparsity
    weights: WeightList
    group_type: Literal["Filters", "Channels"] = "Filters"
    seed: Seed = 0


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
    round_to: Annotated[int, Field(ge=1, le=1024)] = 1


class BlockPrunerArgs(Args):
    """Depth pruning (:class:`~torchslim.pruning.depth.BlockPruner`): ``blocks`` (how many
    residual blocks to remove) or ``target_macs`` (the fraction of the MACs to keep), ranked by
    ``importance`` on the first ``collect_batches`` training minibatches of the firing epoch,
    re-ranked after each removal when ``iterative``; ``exclude``: blocks that stay."""

    blocks: Annotated[int, Field(ge=1, le=100_000)] | None = None
    target_macs: Annotated[Number, Field(gt=0.0, lt=1.0)] | None = None
    importance: Literal["loss", "cosine"] = "loss"
    iterative: bool = False
    collect_batches: Annotated[int, Field(ge=1, le=100_000)] = 4
    exclude: list[str] = []

    @model_validator(mode="after")
    def _one_size(self):
        if (self.blocks is None) == (self.target_macs is None):
            raise ValueError("give either blocks (how many to remove) or target_macs (the "
                             "fraction of the MACs to keep)")
        return self


class SplicingArgs(Args):
    """Distiller's ``SplicingPruner`` (dynamic network surgery)."""

    weight_fields: ClassVar[tuple[str, ...]] = ("sensitivities",)
    sensitivities: Annotated[dict[WeightName, NonNegative], Field(min_length=1)]
    low_thresh_mult: Annotated[Number, Field(gt=0.0)]
    hi_thresh_mult: Annotated[Number, Field(gt=0.0)]
    sensitivity_multiplier: NonNegative = 0.0


class BaiduRNNArgs(Args):
    """Distiller's ``BaiduRNNPruner`` (Narang et al. 2017): ``q`` for every weight named."""

    weight_fields: ClassVar[tuple[str, ...]] = ("weights",)
    q: Annotated[Number, Field(gt=0.0)]
    ramp_epoch_offset: Annotated[int, Field(ge=0)]
    ramp_slope_mult: NonNegative
    weights: WeightList


class StrengthArgs(Args):
    strength: NonNegative


def _agp(a: AGPArgs, model: nn.Module) -> PruneStep:
    pruner = AGPPruner(a.weights, a.initial_sparsity, a.final_sparsity, a.scope)
    return PruneStep(pruner, steps_per_epoch=a.steps_per_epoch)


def _layers(model: nn.Module, patterns: list[str] | None) -> list[str] | None:
    """Module names of the weights ``patterns`` select (None = every layer)."""
    if patterns is None:
        return None
    names = resolve_values(model, dict.fromkeys(patterns, 0.0))
    return list(dict.fromkeys(name.rpartition(".")[0] for name in names))


def _ranked(importance: Callable[[RankedStructureArgs, bool], Importance]):
    """A builder for one of Distiller's one-shot ranked pruners (``L1RankedStructureParameter
    Pruner``, ...): floor(ratio x channels) of each weight's channels removed, ranked by
    ``importance``."""

    def pruner(a: RankedStructureArgs, ratio: float, kind: str, layers: list[str],
               leader: str | None = None):
        inputs = kind in ("Channels", "Rows")
        return StructuredPruner(ratio, importance(a, inputs), rounding="floor", leader=leader,
                                consumers=layers if inputs else None), inputs

    def build(a: RankedStructureArgs, model: nn.Module) -> StructuredPruneStep:
        if a.reg_regims is None and a.group_dependency == "Leader":
            layers = _layers(model, a.weights)
            chosen, inputs = pruner(a, a.desired_sparsity, a.group_type, layers, layers[0])
            regimes = [(layers, chosen, inputs)]
        else:
            if a.reg_regims is None:
                wanted = {pattern: (a.desired_sparsity, a.group_type) for pattern in a.weights}
            else:
                wanted = dict(a.reg_regims)
            regimes = []
            for pattern, (ratio, kind) in wanted.items():
                layers = _layers(model, [pattern])
                regimes.append((layers, *pruner(a, ratio, kind, layers)))
        if any(isinstance(p.importance, ActivationImportance | GradientImportance)
               for _, p, _ in regimes):
            return CollectingPruneStep(regimes, collect_batches=a.collect_batches)
        return StructuredPruneStep(regimes=regimes)

    return build


def _structured_agp(importance: Callable[[StructuredAGPArgs, bool], Importance]):
    """A builder for one of Distiller's structured AGP classes, ranking by ``importance``."""

    def build(a: StructuredAGPArgs, model: nn.Module) -> StructuredPruneStep:
        inputs = a.group_type in ("Channels", "Rows")
        strategy = importance(a, inputs)
        layers = _layers(model, a.weights)
        leader = layers[0] if a.group_dependency == "Leader" else None
        pruner = StructuredPruner(AGP(a.initial_sparsity, a.final_sparsity), strategy,
                                  rounding="floor", leader=leader,
                                  consumers=layers if inputs else None)
        regimes = [(layers, pruner, inputs)]
        if isinstance(strategy, ActivationImportance | GradientImportance):
            return CollectingPruneStep(regimes, collect_batches=a.collect_batches)
        return StructuredPruneStep(regimes=regimes)

    return build


def _fm_reconstruction(a: FMReconstructionArgs, model: nn.Module) -> ReconstructingPruneStep:
    layers = _layers(model, a.weights)
    leader = layers[0] if a.group_dependency == "Leader" else None
    pruner = StructuredPruner(a.desired_sparsity, WeightNorm(1, "in"), rounding="floor",
                              leader=leader, consumers=layers)
    return ReconstructingPruneStep([(layers, pruner, True)], layers, a.collect_batches,
                                   a.points_per_map, a.seed)


def _random_level(a: RandomLevelArgs, model: nn.Module) -> StructuredPruneStep:
    inputs = a.group_type in ("Channels", "Rows")
    pruner = StructuredPruner(RandomLevel(*a.sparsity_range, seed=a.seed),
                              WeightNorm(1, "in" if inputs else "out"), rounding="floor")
    return StructuredPruneStep(regimes=[(_layers(model, a.weights), pruner, inputs)])


def _bernoulli(a: BernoulliArgs, model: nn.Module) -> StructuredPruneStep:
    pruner = RandomChannelPruner(a.desired_sparsity, seed=a.seed, rounding="floor")
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
    result = SensitivityResult.from_json(a.sensitivity)
    if result.meta.get("split") == "test":
        raise UserError(
            f"the sensitivity in '{a.sensitivity}' was measured on the test split: a plan made "
            "from it lets the test labels choose what is pruned; measure it on training "
            "images (torchslim sensitivity --split train --limit 5000 ...)"
        )
    return PlannedPruneStep(result.rows, a.target_macs, norm=a.norm, round_to=a.round_to)


def _block_pruner(a: BlockPrunerArgs, model: nn.Module) -> BlockRemovalStep:
    pruner = BlockPruner(a.blocks, target_macs=a.target_macs,
                         importance=IMPORTANCES[a.importance](), iterative=a.iterative,
                         exclude=a.exclude)
    return BlockRemovalStep(pruner, collect_batches=a.collect_batches)


def _bn_gamma(a: BNGammaArgs, model: nn.Module) -> StructuredPruneStep:
    pruner = BNGammaPruner(a.sparsity, global_ranking=a.global_ranking)
    return StructuredPruneStep(regimes=[(_layers(model, a.weights), pruner, False)])


def _register() -> None:
    pruners = [
        # (names: Distiller's first, then torchslim's), arguments, builder
        (("AutomatedGradualPruner", "AGPPruner"), AGPArgs, _agp),
        (("LevelParameterPruner", "SparsityLevelParameterPruner", "LevelPruner"), LevelArgs,
         lambda a, model: LevelPruner(a.levels)),
        (("SensitivityPruner",), SensitivityArgs,
         lambda a, model: SensitivityPruner(a.sensitivities)),
        (("MagnitudeParameterPruner", "ThresholdPruner"), ThresholdArgs,
         lambda a, model: ThresholdPruner(a.thresholds)),
        (("GlobalMagnitudePruner",), SparsityArgs,
         lambda a, model: GlobalMagnitudePruner(a.weights, a.sparsity)),
        (("RandomPruner",), RandomArgs,
         lambda a, model: RandomPruner(a.weights, a.sparsity, a.seed)),
        (("L1RankedStructureParameterPruner",), RankedStructureArgs,
         _ranked(lambda a, inputs: WeightNorm(1, "in" if inputs else "out"))),
        (("L2RankedStructureParameterPruner",), RankedStructureArgs,
         _ranked(lambda a, inputs: WeightNorm(2, "in" if inputs else "out"))),
        (("RandomRankedFilterPruner",), FilterRankedArgs,
         _ranked(lambda a, inputs: RandomImportance(a.seed))),
        (("ActivationAPoZRankedFilterPruner",), FilterRankedArgs,
         _ranked(lambda a, inputs: ActivationImportance("apoz"))),
        (("ActivationMeanRankedFilterPruner",), FilterRankedArgs,
         _ranked(lambda a, inputs: ActivationImportance("mean"))),
        (("GradientRankedFilterPruner",), FilterRankedArgs,
         _ranked(lambda a, inputs: GradientImportance())),
        (("BernoulliFilterPruner",), BernoulliArgs, _bernoulli),
        (("FilterPruner",), ChannelRankArgs, _norm_ranked(FilterNormPruner, False)),
        (("ChannelPruner",), ChannelRankArgs, _norm_ranked(ChannelNormPruner, True)),
        (("BNGammaPruner",), BNGammaArgs, _bn_gamma),
        (("TargetMACsPruner",), TargetMACsArgs, _target_macs),
        (("BlockPruner",), BlockPrunerArgs, _block_pruner),
        (("L1RankedStructureParameterPruner_AGP", "StructuredAutomatedGradualPruner"),
         StructuredAGPArgs,
         _structured_agp(lambda a, inputs: WeightNorm(1, "in" if inputs else "out"))),
        (("L2RankedStructureParameterPruner_AGP",), StructuredAGPArgs,
         _structured_agp(lambda a, inputs: WeightNorm(2, "in" if inputs else "out"))),
        (("RandomRankedFilterPruner_AGP", "BernoulliFilterPruner_AGP"), FilterAGPArgs,
         _structured_agp(lambda a, inputs: RandomImportance(a.seed))),
        (("ActivationAPoZRankedFilterPruner_AGP",), FilterAGPArgs,
         _structured_agp(lambda a, inputs: ActivationImportance("apoz"))),
        (("ActivationMeanRankedFilterPruner_AGP",), FilterAGPArgs,
         _structured_agp(lambda a, inputs: ActivationImportance("mean"))),
        (("GradientRankedFilterPruner_AGP",), FilterAGPArgs,
         _structured_agp(lambda a, inputs: GradientImportance())),
        (("RandomLevelStructureParameterPruner",), RandomLevelArgs, _random_level),
        (("FMReconstructionChannelPruner",), FMReconstructionArgs, _fm_reconstruction),
        (("StructureParameterPruner",), StructureThresholdArgs,
         lambda a, model: StructureThresholdStep(a.reg_regims, a.threshold_criteria)),
        (("SplicingPruner",), SplicingArgs,
         lambda a, model: SplicingStep(a.sensitivities, a.low_thresh_mult, a.hi_thresh_mult,
                                       a.sensitivity_multiplier)),
        (("BaiduRNNPruner",), BaiduRNNArgs,
         lambda a, model: BaiduRNNStep(dict.fromkeys(a.weights, a.q), a.ramp_epoch_offset,
                                       a.ramp_slope_mult)),
    ]
    for names, args, build in pruners:
        register_recipe_class("pruners", names, args, build)
    register_recipe_class(
        "regularizers", ["L1Regularizer"], L1RegularizerArgs,
        lambda a, model: L1Regularizer(a.reg_regims), ignored_keys=("threshold_criteria",),
    )
    register_recipe_class(
        "regularizers", ["GroupLassoRegularizer"], GroupLassoArgs,
        lambda a, model: GroupLassoRegularizer(a.reg_regims, a.threshold_criteria),
    )
    register_recipe_class(
        "regularizers", ["GroupVarianceRegularizer"], GroupVarianceArgs,
        lambda a, model: GroupVarianceRegularizer(a.reg_regims),
    )
    register_recipe_class(
        "regularizers", ["BNGammaL1Regularizer"], StrengthArgs,
        lambda a, model: BNGammaL1Regularizer(model, a.strength),
    )
    register_recipe_class(
        "extensions", ["StructureRemover", "FilterRemover", "ChannelRemover", "Thinning"],
        NoArgs, lambda a, model: ThinningStep(),
        ignored_keys=("thinning_func_str", "arch", "dataset"),
    )


_register()
