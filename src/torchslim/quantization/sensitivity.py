"""Per-layer quantization sensitivity: which layers to keep in float (mixed precision).

:func:`quantization_sensitivity` prepares and calibrates the model once, then, for each
quantizable layer, switches quantizers on and off and measures a metric on an evaluation subset:

* ``mode="only"``: that layer alone is quantized, everything else runs in float; the impact is
  what quantizing it costs (float metric minus this one, for accuracy);
* ``mode="all_but"``: everything is quantized except that layer; the impact is what keeping it in
  float gains over the fully quantized model.

A layer's quantizers are exactly what ``QuantConfig(exclude=(layer,))`` keeps in float: its
weight quantizer and the activation quantizers that exist only because it is quantized (such as
the one on its output, unless a ReLU after it takes it, and those sharing that one's grid),
found by preparing the model once more with the layer excluded. So ``mode="all_but"`` measures
the model that excluding the layer gives (with the same scales: calibration observes float
values either way); where excluding a layer gives an op that shared a grid a quantizer of its
own, that op runs in float here instead.

Metrics: ``"top1"`` (:func:`torchslim.train.evaluate`, needs labels and ``num_classes``),
``"mse"`` (mean squared difference of the outputs from the float model's) and ``"kl"`` (KL
divergence of the output distribution from the float model's, per sample); the last two need no
labels.

Example::

    >>> import torch
    >>> from torchslim.quantization import QuantConfig
    >>> from torchslim.quantization.sensitivity import quantization_sensitivity
    >>> torch.manual_seed(0) and None
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(),
    ...                             torch.nn.Linear(16, 4)).eval()
    >>> with torch.no_grad():  # hidden unit 0 is dead: an outlier weight from it changes
    ...     model[0].bias[0] = -100.0  # nothing in float, but on a per-tensor grid every
    ...     model[2].weight[0, 0] = 50.0  # other weight of the layer rounds to zero
    >>> data = [torch.randn(32, 8) for _ in range(2)]
    >>> report = quantization_sensitivity(model, QuantConfig(weight_bits=4, per_channel=False),
    ...                                   data, data, torch.zeros(1, 8), metric="mse")
    >>> [row.layer for row in report.rows], report.most_sensitive(1)
    (['2', '0'], ('2',))
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import UserError
from ..core.names import select_names
from ..train import evaluate
from .config import QuantConfig
from .fake import Quantizer
from .prepare import activation_quantizers, calibrate, freeze, prepare, weight_quantizers

MODES = ("only", "all_but")
METRICS = ("top1", "mse", "kl")


@dataclass(frozen=True)
class SensitivityRow:
    """One layer: the metric measured with its quantizers toggled (``value``) and how much
    quantizing it hurts (``impact``, larger is more sensitive)."""

    layer: str
    value: float
    impact: float
    quantizers: tuple[str, ...] = ()


@dataclass
class SensitivityReport:
    """The rows, most sensitive first, with the float and the fully quantized metric."""

    mode: str
    metric: str
    float_value: float
    quantized_value: float
    rows: list[SensitivityRow] = field(default_factory=list)

    def most_sensitive(self, count: int) -> tuple[str, ...]:
        """The ``count`` most sensitive layers, ready for ``QuantConfig(exclude=...)``."""
        return tuple(row.layer for row in self.rows[:count])

    def format(self) -> str:
        """A text table."""
        described = {"only": "each layer quantized alone",
                     "all_but": "everything quantized but each layer"}[self.mode]
        unit = " %" if self.metric == "top1" else ""
        width = max([len("layer")] + [len(row.layer) for row in self.rows])
        lines = [f"quantization sensitivity ({described}), metric {self.metric}",
                 f"float {_number(self.float_value)}{unit}   all quantized "
                 f"{_number(self.quantized_value)}{unit}", "",
                 f"{'rank':>4}  {'layer':<{width}}  {self.metric:>10}  {'impact':>10}"]
        for rank, row in enumerate(self.rows, 1):
            lines.append(f"{rank:>4}  {row.layer:<{width}}  {_number(row.value):>10}  "
                         f"{_number(row.impact, signed=True):>10}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types."""
        return {"mode": self.mode, "metric": self.metric, "float": self.float_value,
                "quantized": self.quantized_value,
                "rows": [{"layer": row.layer, "value": row.value, "impact": row.impact,
                          "quantizers": list(row.quantizers)} for row in self.rows]}


def _number(value: float, signed: bool = False) -> str:
    text = f"{value:+.4g}" if signed else f"{value:.4g}"
    return text if abs(value) >= 1e-3 or value == 0 else (f"{value:+.2e}" if signed
                                                          else f"{value:.2e}")


def quantization_sensitivity(
    model: nn.Module,
    config: QuantConfig,
    calibration: Iterable[Any],
    evaluation: Iterable[Any],
    example_input: torch.Tensor,
    *,
    mode: str = "only",
    metric: str = "top1",
    num_classes: int | None = None,
    layers: Sequence[str] | None = None,
) -> SensitivityReport:
    """Measure each quantizable layer of the float ``model`` (or those ``layers`` name:
    names, globs or regular expressions) as the module docstring says: ``config`` quantizes,
    ``calibration`` batches calibrate once, ``evaluation`` batches (``(inputs, labels)`` pairs,
    or input tensors for ``"mse"``/``"kl"``) score every variant."""
    _check(config, mode, metric, num_classes)
    prepared = prepare(model, example_input, config)
    calibrate(prepared, calibration)
    freeze(prepared)
    active = [q for q in prepared.modules() if isinstance(q, Quantizer) and q.quantizing]
    names = _chosen(list(weight_quantizers(prepared)), layers)
    groups = {name: _group(model, prepared, config, example_input, name) for name in names}
    batches = list(evaluation)
    if not batches:
        raise UserError("the evaluation data yielded no batches: is the split empty?")
    score = _scorer(prepared, batches, metric, num_classes)
    float_value = score(set())
    quantized_value = score(set(active))
    rows = []
    for name, group in groups.items():
        on = {q for q in group.values() if q in active}
        value = score(on if mode == "only" else set(active) - on)
        rows.append(SensitivityRow(name, value, _impact(value, float_value, quantized_value,
                                                          mode, metric), tuple(group)))
    rows.sort(key=lambda row: -row.impact)
    return SensitivityReport(mode, metric, float_value, quantized_value, rows)


def _check(config: QuantConfig, mode: str, metric: str, num_classes: int | None) -> None:
    if config.equalize or config.bias_correction:
        raise UserError("the sensitivity report measures plain post-training quantization: "
                        "run it with equalize=False and bias_correction=False")
    if mode not in MODES:
        raise UserError(f"unknown sensitivity mode '{mode}': choose one of {', '.join(MODES)}")
    if metric not in METRICS:
        raise UserError(f"unknown sensitivity metric '{metric}': choose one of "
                        f"{', '.join(METRICS)}")
    if metric == "top1" and not num_classes:
        raise UserError("metric 'top1' needs num_classes= (the number of classes); 'mse' and "
                        "'kl' compare with the float model and need no labels")
    if config.method != "static":
        raise UserError(f"sensitivity analysis calibrates and measures post-training "
                        f"quantization: use method 'static', not '{config.method}'")


def _chosen(names: list[str], patterns: Sequence[str] | None) -> list[str]:
    if patterns is None:
        return names
    chosen = select_names(patterns, names, "layer '{pattern}' matches no quantized layer")
    return [name for name in names if name in chosen]


def _group(
    model: nn.Module, prepared: nn.Module, config: QuantConfig, example_input: torch.Tensor,
    name: str,
) -> dict[str, Quantizer]:
    """The quantizers that ``exclude=(name,)`` keeps in float, by name."""
    kept = prepare(model, example_input, replace(config, exclude=(*config.exclude, name)))
    others = activation_quantizers(kept)
    group = {f"{name}.weight_quantizer": weight_quantizers(prepared)[name]}
    for value, quantizer in activation_quantizers(prepared).items():
        if type(others.get(value)) is not type(quantizer):
            group[f"quant_{value}"] = quantizer
    return group


def _scorer(
    model: nn.Module, batches: list[Any], metric: str, num_classes: int | None
) -> Callable[[set[Quantizer]], float]:
    """A function that runs the evaluation with exactly the given quantizers on."""
    quantizers = [q for q in model.modules() if isinstance(q, Quantizer)]
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    inputs = [(b[0] if isinstance(b, tuple | list) else b).to(device) for b in batches]
    reference: list[torch.Tensor] = []

    def switch(on: set[Quantizer]) -> None:
        for quantizer in quantizers:
            quantizer.quantizing = quantizer in on

    def outputs() -> list[torch.Tensor]:
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                return [model(x).float() for x in inputs]
        finally:
            model.train(was_training)

    def score(on: set[Quantizer]) -> float:
        switch(on)
        if metric == "top1":
            labelled = [(x, b[1].to(device)) for x, b in zip(inputs, batches, strict=True)]
            return evaluate(model, labelled, num_classes).top1
        if not reference:
            switch(set())
            reference.extend(outputs())
            switch(on)
        return _distance(outputs(), reference, metric)

    if metric == "top1" and not all(isinstance(b, tuple | list) and len(b) > 1
                                    for b in batches):
        raise UserError("metric 'top1' needs (inputs, labels) evaluation batches")
    return score


def _distance(outputs: list[torch.Tensor], reference: list[torch.Tensor], metric: str) -> float:
    total, count = 0.0, 0
    for out, ref in zip(outputs, reference, strict=True):
        if metric == "mse":
            total += float((out - ref).pow(2).sum())
            count += out.numel()
        else:  # KL(float || quantized) of the class distributions, summed over the classes
            logp, logq = F.log_softmax(ref.flatten(1), 1), F.log_softmax(out.flatten(1), 1)
            total += float((logp.exp() * (logp - logq)).sum())
            count += out.shape[0]
    return total / count


def _impact(value: float, float_value: float, quantized_value: float, mode: str,
            metric: str) -> float:
    """Larger is more sensitive: lost accuracy or added error when quantizing the layer alone,
    regained accuracy or removed error when keeping it in float."""
    if metric == "top1":
        return float_value - value if mode == "only" else value - quantized_value
    return value - float_value if mode == "only" else quantized_value - value
