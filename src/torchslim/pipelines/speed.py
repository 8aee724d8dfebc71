"""Latency-aware mixed precision: keep in float the layers whose int8 kernels are slower than
fp32 on this machine, found by measuring the whole model in ONNX Runtime.

int8 is not faster everywhere. On x86 CPUs without VNNI, ONNX Runtime's uint8 x int8 kernels
work on blocks of 16 output channels while its fp32 convolutions use blocks of 8, so a thinned
layer with 8 or 24 channels runs slower in int8 than in fp32
(``benchmarks/results/thinned_speed_resnet56.md``), and which layers win depends on the CPU,
the thread count and the batch. So measure: layers of the same shape (kind, channels, kernel,
stride, groups, input size) run the same kernel and are tried together. Starting from the
all-int8 model, each group in turn (most MACs first) is kept in float; it stays float when the
whole model gets faster by more than ``margin``; then, as small losses in many groups add up,
all the groups still in int8 are tried in float together. A trial and the best model so far
run in alternating rounds, so other load on the machine slows both alike. Keeping a layer in float
never costs accuracy it had in int8; the file grows by its fp32 weights.

Example (a stand-in ``measure`` that finds every trial twice as fast; :func:`paired_latency`
measures in ONNX Runtime)::

    >>> import tempfile, torch
    >>> from torch import nn
    >>> from torchslim.quantization import QuantConfig
    >>> from torchslim.pipelines.speed import select_float_layers
    >>> model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 16, 3)).eval()
    >>> selection = select_float_layers(model, QuantConfig(observer="minmax"),
    ...                                 [torch.randn(4, 3, 8, 8)], torch.zeros(1, 3, 8, 8),
    ...                                 tempfile.mkdtemp(), measure=lambda best, trial: (2.0, 1.0))
    >>> selection.float_layers
    ('2', '0')
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..analysis import measure_latency
from ..core.errors import UserError
from ..core.fileio import make_folder
from ..export.onnx import export_onnx, session
from ..quantization import QuantConfig, quantize
from ..quantization.bias_correction import quantized_layers

#: ``measure(best, trial)``: the latency in ms of the best model so far and of a trial (ONNX
#: files), measured side by side.
Measure = Callable[[Path, Path], tuple[float, float]]


@dataclass(frozen=True)
class LayerGroup:
    """Quantized layers of one shape, which run the same kernel."""

    key: str
    layers: tuple[str, ...]
    macs: int


@dataclass
class SpeedTrial:
    """One group kept in float: the best model's latency and the trial's, in ms."""

    group: str
    layers: int
    best_ms: float
    trial_ms: float
    kept_float: bool


@dataclass
class SpeedSelection:
    """What :func:`select_float_layers` chose and measured."""

    float_layers: tuple[str, ...]
    trials: list[SpeedTrial] = field(default_factory=list)
    margin: float = 0.03

    def format(self) -> str:
        """One line per group tried, then the layers kept in float."""
        lines = [f"speed search (a group stays in float if the model gets more than "
                 f"{100 * self.margin:.0f} % faster):"]
        for t in self.trials:
            verdict = "kept in float" if t.kept_float else "int8"
            lines.append(f"  {t.group} ({t.layers} layers): int8 {t.best_ms:.1f} ms, in float "
                         f"{t.trial_ms:.1f} ms -> {verdict}")
        kept = ", ".join(self.float_layers) if self.float_layers else "none"
        lines.append(f"kept in float for speed: {kept}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"float_layers": list(self.float_layers), "margin": self.margin,
                "trials": [dataclasses.asdict(t) for t in self.trials]}


def layer_groups(model: nn.Module, example_input: torch.Tensor,
                 layers: Iterable[str]) -> list[LayerGroup]:
    """``layers`` of ``model`` grouped by shape (kind, channels, kernel, stride, groups, input
    size), most MACs first.

    >>> from torch import nn
    >>> model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1),
    ...                       nn.Conv2d(8, 8, 3, padding=1))
    >>> [(g.key, g.layers) for g in layer_groups(model, torch.zeros(1, 3, 8, 8), ["0", "1", "2"])]
    [('Conv2d 8->8 k3x3 at 8x8', ('1', '2')), ('Conv2d 3->8 k3x3 at 8x8', ('0',))]
    """
    names = list(layers)
    modules = dict(model.named_modules())
    unknown = [n for n in names if n not in modules]
    if unknown:
        raise UserError(f"no layer named '{unknown[0]}' in the model")
    seen: dict[str, tuple[tuple[int, ...], int]] = {}

    def record(name: str):
        def hook(module, inputs, output):
            weight = module.weight
            per_output = weight[0].numel() if weight.dim() > 1 else 1
            seen[name] = (tuple(inputs[0].shape[2:]), output[0].numel() * per_output)
        return hook

    handles = [modules[n].register_forward_hook(record(n)) for n in names]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()
            model(example_input[:1])
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    grouped: dict[str, list[str]] = {}
    macs: dict[str, int] = {}
    for name in names:
        if name not in seen:
            continue  # not called on this input
        size, layer_macs = seen[name]
        key = _key(modules[name], size)
        grouped.setdefault(key, []).append(name)
        macs[key] = macs.get(key, 0) + layer_macs
    order = sorted(grouped, key=lambda k: -macs[k])
    return [LayerGroup(k, tuple(grouped[k]), macs[k]) for k in order]


def _key(module: nn.Module, size: tuple[int, ...]) -> str:
    kind = type(module).__name__
    if isinstance(module, nn.Linear):
        return f"{kind} {module.in_features}->{module.out_features}"
    conv: Any = module
    text = f"{kind} {conv.in_channels}->{conv.out_channels} k{'x'.join(map(str, conv.kernel_size))}"
    if any(s != 1 for s in conv.stride):
        text += f" s{'x'.join(map(str, conv.stride))}"
    if conv.groups != 1:
        text += f" g{conv.groups}"
    if any(d != 1 for d in conv.dilation):
        text += f" d{'x'.join(map(str, conv.dilation))}"
    padding = conv.padding
    if padding != tuple(k // 2 for k in conv.kernel_size):  # other than the common "same"
        text += f" p{'x'.join(map(str, padding)) if isinstance(padding, tuple) else padding}"
    return f"{text} at {'x'.join(map(str, size))}" if size else text


def paired_latency(input_shape: Sequence[int], batch: int, *, rounds: int = 3,
                   repeats: int = 2, threads: int | None = None,
                   min_time_s: float = 0.2) -> Measure:
    """A :data:`Measure` in ONNX Runtime: the median over ``rounds`` alternating rounds of each
    model's median of at least ``repeats`` calls, and at least ``min_time_s`` seconds of them
    (so that a small model's trials are not decided by noise), on a batch of ``batch``."""

    def measure(best: Path, trial: Path) -> tuple[float, float]:
        runners = {}
        for key, path in (("best", best), ("trial", trial)):
            runtime = session(path, threads)
            runners[key] = lambda x, s=runtime: s.run(None, {"input": x.numpy()})
        times: dict[str, list[float]] = {"best": [], "trial": []}
        for _ in range(rounds):
            for key, run in runners.items():
                times[key].append(measure_latency(
                    None, input_shape, batch, warmup=1, repeats=repeats, min_time_s=min_time_s,
                    runner=run).median_ms)
        return statistics.median(times["best"]), statistics.median(times["trial"])

    return measure


def select_float_layers(
    model: nn.Module,
    config: QuantConfig,
    calibration: Sequence[Any],
    example_input: torch.Tensor,
    work_dir: str | Path,
    *,
    measure: Measure,
    margin: float = 0.03,
) -> SpeedSelection:
    """The layers to keep in float so that ``model`` quantized with ``config`` runs fastest (see
    the module docstring). Trials calibrate on the first calibration batch only (latency does
    not depend on the ranges); their ONNX files go to ``work_dir`` and are removed."""
    if not 0 <= margin < 1:
        raise UserError(f"the speed-search margin must lie in [0, 1), got {margin}")
    if not calibration:
        raise UserError("the speed search needs at least one calibration batch")
    first = calibration[:1]
    work = Path(work_dir)
    make_folder(work)
    best_path = work / "speed_best.onnx"
    trial_path = work / "speed_trial.onnx"
    kept: list[str] = []
    trials = []
    try:
        base = quantize(model, config, first, example_input)
        export_onnx(base, example_input, best_path)
        def try_in_float(group: LayerGroup) -> None:
            exclude = tuple(config.exclude) + tuple(kept) + group.layers
            trial = quantize(model, dataclasses.replace(config, exclude=exclude), first,
                             example_input)
            export_onnx(trial, example_input, trial_path)
            best_ms, trial_ms = measure(best_path, trial_path)
            faster = trial_ms < best_ms * (1 - margin)
            trials.append(SpeedTrial(group.key, len(group.layers), best_ms, trial_ms, faster))
            if faster:
                kept.extend(group.layers)
                trial_path.replace(best_path)

        groups = layer_groups(model, example_input, quantized_layers(base))
        for group in groups:
            try_in_float(group)
        left = [g for g in groups if g.layers[0] not in kept]
        if len(left) > 1:  # small losses in many groups add up: all of them in float
            try_in_float(LayerGroup(f"all {len(left)} groups left in int8",
                                    tuple(name for g in left for name in g.layers),
                                    sum(g.macs for g in left)))
    finally:
        best_path.unlink(missing_ok=True)
        trial_path.unlink(missing_ok=True)
    return SpeedSelection(tuple(kept), trials, margin)
