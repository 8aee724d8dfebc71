"""Post-training quantization from model to int8 ONNX, measured on this machine (what
``torchslim quantize`` runs).

:func:`quantize_and_export` quantizes a model on calibration batches (training data, never the
test split), exports the fp32 and the int8 model to ONNX, and runs both in ONNX Runtime. Whether
int8 is faster depends on the CPU and on the layout, and int8 gains are easy to lose (a node
left in float, an int8 kernel that saturates), so it first tries each layout in ``layouts``:

=========  =========================================================================================
``u8s8``   int8 weights, uint8 activations: ONNX Runtime's default and fastest on most CPUs, but
           on x86 CPUs without VNNI (AVX2, AVX-512 without VNNI) its int16 intermediate sums
           (``uint8 * int8 + uint8 * int8``) can saturate, and the int8 model then computes
           something else than it was calibrated for
``u8s7``   the same kernels with 7-bit weights (-63..63; ONNX Runtime's own "reduce range"
           uses -64..64): the pair sums cannot saturate, at the cost of one bit of weight
           precision
``u8u8``   uint8 weights and activations: no saturation, a slower kernel on x86
``s8s8``   int8 weights and activations
=========  =========================================================================================

For each, the predictions of ONNX Runtime are compared with the PyTorch simulation on the
calibration images (agreement below 99 % means the runtime does not compute what the model was
quantized for) and the latency is measured; the fastest faithful layout wins. The report says
which nodes ONNX Runtime still runs in float and why, and says plainly when int8 is not faster
than fp32 here.

Example::

    >>> import tempfile, torch
    >>> from torchslim.models import create_model
    >>> from torchslim.pipelines.quantize import quantize_and_export
    >>> from torchslim.quantization import QuantConfig
    >>> batches = [(torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))) for _ in range(2)]
    >>> run = quantize_and_export(create_model("demo_cnn").eval(), QuantConfig(observer="minmax"),
    ...                           batches, batches, torch.zeros(1, 1, 8, 8), tempfile.mkdtemp(),
    ...                           num_classes=10, layouts=("u8u8",), latency_batch=8, repeats=2)
    >>> run.chosen, [row.runtime for row in run.rows]
    ('u8u8', ['pytorch', 'pytorch', 'onnxruntime', 'onnxruntime'])
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..analysis import measure_latency, summarize
from ..bench import BenchRow, BenchTable
from ..bench.measure import measure_onnx_row, measure_row
from ..core.errors import UserError
from ..core.fileio import atomic_write_text, make_folder
from ..core.storage import save_compressed
from ..export.onnx import RuntimeReport, export_onnx, runtime_report, session
from ..quantization import QuantConfig, SensitivityReport, quantization_sensitivity, quantize
from ..quantization.bias_correction import quantized_layers
from ..quantization.record import quantization_record
from ..train import evaluate
from .speed import SpeedSelection, paired_latency, select_float_layers

#: Weight and activation signedness of each layout (see the module docstring).
LAYOUTS = {
    "u8s8": {"signed_weights": True, "signed_activations": False},
    "u8s7": {"signed_weights": True, "signed_activations": False, "weight_bits": 7},
    "u8u8": {"signed_weights": False, "signed_activations": False},
    "s8s8": {"signed_weights": True, "signed_activations": True},
}


def layout_config(config: QuantConfig, layout: str) -> QuantConfig:
    """``config`` in ``layout`` (a narrower weight grid than the layout's is kept)."""
    changes = dict(LAYOUTS[layout])
    if "weight_bits" in changes:
        changes["weight_bits"] = min(changes["weight_bits"], config.weight_bits)
    return dataclasses.replace(config, **changes)
FAITHFUL = 0.99


@dataclass
class LayoutTrial:
    """One layout tried: agreement of ONNX Runtime with the simulation, latency, float nodes."""

    layout: str
    agreement: float
    latency_b1_ms: float
    latency_bn_ms: float
    float_nodes: list[str]
    quantize_seconds: float

    @property
    def faithful(self) -> bool:
        return self.agreement >= FAITHFUL


@dataclass
class QuantizeRun:
    """What :func:`quantize_and_export` produced and measured."""

    model: nn.Module
    config: QuantConfig
    chosen: str
    trials: list[LayoutTrial]
    rows: list[BenchRow]
    report: RuntimeReport
    verdict: str
    files: dict[str, str] = field(default_factory=dict)
    speed: SpeedSelection | None = None
    #: agreement of ONNX Runtime with the simulation after the speed search kept layers in float
    speed_agreement: float | None = None

    @property
    def quantize_seconds(self) -> float:
        return next(t.quantize_seconds for t in self.trials if t.layout == self.chosen)


def _inputs(batches: Iterable[Any], limit: int) -> list[torch.Tensor]:
    found = []
    for batch in batches:
        found.append(batch[0] if isinstance(batch, tuple | list) else batch)
        if sum(len(x) for x in found) >= limit:
            break
    return found


def _agreement(model: nn.Module, path: Path, inputs: list[torch.Tensor]) -> float:
    runtime = session(path)
    same = total = 0
    with torch.no_grad():
        for x in inputs:
            expected = model(x).argmax(1).numpy()
            got = runtime.run(None, {"input": np.ascontiguousarray(x.numpy())})[0].argmax(1)
            same += int((expected == got).sum())
            total += len(x)
    return same / max(total, 1)


def _latency(path: Path, input_shape: tuple[int, ...], batch: int, repeats: int,
             threads: int | None) -> float:
    runtime = session(path, threads)
    return measure_latency(
        None, input_shape, batch, repeats=repeats,
        runner=lambda x: runtime.run(None, {"input": x.numpy()}),
    ).median_ms


def _verdict(fp32: BenchRow, int8: BenchRow, config: QuantConfig) -> str:
    speed_n = fp32.latency_bn_ms / int8.latency_bn_ms
    speed_1 = fp32.latency_b1_ms / int8.latency_b1_ms
    text = (f"int8 in ONNX Runtime is {speed_1:.2f}x the speed of fp32 at batch 1 and "
            f"{speed_n:.2f}x at batch {int8.batch_n}")
    if speed_n < 1.0 and speed_1 < 1.0:
        text = f"int8 is not faster than fp32 on this machine: {text}"
    elif speed_n < 1.0 or speed_1 < 1.0:
        slower = f"batch {int8.batch_n}" if speed_n < 1.0 else "batch 1"
        text = f"int8 is not faster than fp32 at {slower} on this machine: {text}"
    if config.activation_bits < 8:
        text += (f"; {config.activation_bits}-bit activations export as a clip before an 8-bit "
                 "QuantizeLinear, which ONNX Runtime runs in float")
    return text


def quantize_and_export(
    model: nn.Module,
    config: QuantConfig,
    calibration: Iterable[Any],
    evaluation: Iterable[Any] | None,
    example_input: torch.Tensor,
    out_dir: str | Path,
    *,
    num_classes: int,
    layouts: Sequence[str] = ("u8s8", "u8s7"),
    check_images: int = 1000,
    latency_batch: int = 256,
    repeats: int = 20,
    threads: int | None = None,
    meta: dict[str, Any] | None = None,
    speed_search: bool = False,
) -> QuantizeRun:
    """Quantize ``model``, export fp32 and int8 ONNX under ``out_dir`` and measure them (see
    the module docstring). With ``speed_search``, the layers whose int8 kernels make the model
    slower here are then kept in float (:mod:`torchslim.pipelines.speed`)."""
    unknown = [layout for layout in layouts if layout not in LAYOUTS]
    if unknown or not layouts:
        raise UserError(f"unknown layout {unknown or layouts}: choose from {', '.join(LAYOUTS)}")
    out = make_folder(out_dir)
    calibration = list(calibration)
    input_shape = tuple(example_input.shape[1:])
    fp32_path = export_onnx(model, example_input, out / "model_fp32.onnx")
    check = _inputs(calibration, check_images)
    trials, models = [], {}
    for layout in layouts:
        config_here = layout_config(config, layout)
        started = time.perf_counter()
        quantized = quantize(model, config_here, calibration, example_input)
        seconds = time.perf_counter() - started
        path = export_onnx(quantized, example_input, out / f"model_int8_{layout}.onnx")
        trials.append(LayoutTrial(
            layout, _agreement(quantized, path, check),
            _latency(path, input_shape, 1, max(repeats, 20), threads),
            _latency(path, input_shape, latency_batch, max(3, repeats // 4), threads),
            runtime_report(path, out).float_nodes, seconds,
        ))
        models[layout] = (quantized, config_here, path)
    faithful = [t for t in trials if t.faithful] or [max(trials, key=lambda t: t.agreement)]
    chosen = min(faithful, key=lambda t: t.latency_bn_ms).layout
    quantized, chosen_config, int8_path = models[chosen]
    speed = agreement = None
    if speed_search:
        speed = select_float_layers(
            model, chosen_config, calibration, example_input, out,
            measure=paired_latency(input_shape, latency_batch, threads=threads))
        if speed.float_layers:
            chosen_config = dataclasses.replace(
                chosen_config, exclude=tuple(chosen_config.exclude) + speed.float_layers)
            quantized = quantize(model, chosen_config, calibration, example_input)
            export_onnx(quantized, example_input, int8_path)
            agreement = _agreement(quantized, int8_path, check)
    final = out / "model_int8.onnx"
    os.replace(int8_path, final)
    for layout in layouts:
        if layout != chosen:
            (out / f"model_int8_{layout}.onnx").unlink(missing_ok=True)
    measure = {"num_classes": num_classes, "latency_batch": latency_batch, "repeats": repeats}
    weights = chosen_config.weight_spec().describe()
    int8_notes = f"QDQ, {weights} weights"
    if speed is not None and speed.float_layers:
        int8_notes += f", {len(speed.float_layers)} layers kept in float for speed"
    summary = summarize(quantized, input_shape)
    simulated = evaluate(quantized, evaluation, num_classes) if evaluation is not None else None
    torch_file = out / "quantized.pt"
    earlier = list((meta or {}).get("edits") or [])  # e.g. the input model was thinned
    save_compressed(quantized, torch_file, meta={**(meta or {}), "edits": earlier + [
        quantization_record(quantized)]})
    rows = [
        measure_row("fp32 (PyTorch)", model, input_shape, evaluation, threads=threads,
                    **measure),
        BenchRow(name=f"int8 {chosen} (PyTorch simulation)",
                 top1=simulated.top1 if simulated else None,
                 top5=simulated.top5 if simulated else None, params=summary.params,
                 nonzero_params=summary.nonzero_params, macs=summary.macs,
                 sparsity=summary.sparsity, file_bytes=torch_file.stat().st_size,
                 notes="fake quantization: accuracy only; its file is quantized.pt, float "
                       "weights with the quantizers' ranges and statistics, not an int8 file"),
        measure_onnx_row("fp32 (ONNX Runtime)", fp32_path, model, input_shape, evaluation,
                         threads=threads, **measure),
        measure_onnx_row(f"int8 {chosen} (ONNX Runtime)", final, model, input_shape,
                         evaluation, threads=threads, notes=int8_notes, **measure),
    ]
    report = runtime_report(final, out)
    verdict = _verdict(rows[2], rows[3], chosen_config)
    if speed is not None and speed.float_layers and not quantized_layers(quantized):
        measured = verdict.split(": ", 1)[-1]  # without "int8 is not faster ...: "
        verdict = ("the speed search kept every layer in float: int8 is not faster than fp32 "
                   f"for any layer of this model on this machine ({measured})")
    run = QuantizeRun(quantized, chosen_config, chosen, trials, rows, report, verdict,
                      speed=speed, speed_agreement=agreement)
    table = BenchTable(rows, meta=dict(meta or {}))
    run.files = {kind: str(path) for kind, path in table.write(out).items()}
    run.files.update(fp32_onnx=str(fp32_path), int8_onnx=str(final), model=str(torch_file))
    report_path = out / "report.txt"
    atomic_write_text(report_path, format_report(run) + "\n")
    atomic_write_text(out / "report.json", json.dumps(report_dict(run), indent=2) + "\n")
    run.files["report"] = str(report_path)
    return run


def sensitivity_report(
    model: nn.Module,
    config: QuantConfig,
    calibration: Sequence[Any],
    example_input: torch.Tensor,
    out_dir: str | Path,
    *,
    keep_float: int = 0,
    score_batches: int = 4,
) -> tuple[SensitivityReport, QuantConfig]:
    """Rank the layers by how much keeping each in float brings the quantized model's outputs
    back to the float model's (KL divergence on the first ``score_batches`` calibration batches:
    training data, no labels needed), write ``sensitivity.txt``/``.json`` under ``out_dir``, and
    return the report with ``config`` keeping the ``keep_float`` most sensitive layers in float."""
    plain = dataclasses.replace(config, equalize=False, bias_correction=False)
    report = quantization_sensitivity(model, plain, calibration, calibration[:score_batches],
                                      example_input, mode="all_but", metric="kl")
    out = Path(out_dir)
    make_folder(out)
    atomic_write_text(out / "sensitivity.txt", report.format() + "\n")
    atomic_write_text(out / "sensitivity.json", json.dumps(report.to_dict(), indent=2) + "\n")
    if keep_float:
        config = dataclasses.replace(
            config, exclude=tuple(config.exclude) + report.most_sensitive(keep_float))
    return report, config


def format_report(run: QuantizeRun) -> str:
    """The layouts tried, the one chosen, what runs in float, and the verdict, as text."""
    lines = ["layouts tried (ONNX Runtime vs the PyTorch simulation, latency in ONNX Runtime):"]
    for trial in run.trials:
        flag = "" if trial.faithful else "  <- does not compute what was calibrated"
        lines.append(
            f"  {trial.layout}: agreement {100 * trial.agreement:.2f} %, batch 1 "
            f"{trial.latency_b1_ms:.2f} ms, batch N {trial.latency_bn_ms:.1f} ms, quantized in "
            f"{trial.quantize_seconds:.1f} s{flag}"
        )
    lines.append(f"chosen: {run.chosen} ({run.config.weight_spec().describe()} weights, "
                 f"{run.config.activation_spec().describe()} activations, observer "
                 f"{run.config.observer})")
    if run.speed is not None:
        lines.append(run.speed.format())
        if run.speed_agreement is not None:
            lines.append(f"  agreement with the simulation after: "
                         f"{100 * run.speed_agreement:.2f} %")
    lines.append(run.report.format())
    lines.append(run.verdict)
    return "\n".join(lines)


def report_dict(run: QuantizeRun) -> dict[str, Any]:
    """The report as JSON types."""
    return {
        "chosen": run.chosen,
        "config": run.config.to_dict(),
        "quantize_seconds": round(run.quantize_seconds, 3),
        "trials": [dataclasses.asdict(t) | {"faithful": t.faithful} for t in run.trials],
        "runtime_ops": dict(run.report.ops),
        "float_nodes": run.report.float_nodes,
        "verdict": run.verdict,
        "rows": [row.to_dict() for row in run.rows],
        "speed_search": None if run.speed is None else {
            **run.speed.to_dict(), "agreement": run.speed_agreement},
    }
