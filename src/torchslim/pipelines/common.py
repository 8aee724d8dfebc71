"""What every pipeline writes or needs: a model with its weights, the machine a table was measured
on, and the evaluation and summary files.

Example::

    >>> from torchslim.pipelines.common import build_model
    >>> model, spec = build_model("cifar_resnet20")
    >>> spec.input_shape
    (3, 32, 32)
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..analysis import ModelSummary
from ..core.fileio import atomic_write_text, make_folder
from ..models import ModelSpec, create_model, get_model_spec, load_weights
from ..train import EvalResult


def build_model(
    name: str, weights: str | None = None, num_classes: int | None = None
) -> tuple[nn.Module, ModelSpec]:
    """Create a zoo (or ``package.module:function``) model and load ``weights`` into it."""
    spec = get_model_spec(name)
    model = create_model(name, num_classes=num_classes)
    if weights:
        load_weights(model, weights, name=name)
    return model, spec


def machine_meta() -> dict[str, Any]:
    """Machine, torch version and thread count, stored beside every benchmark table."""
    return {
        "torch": torch.__version__,
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def write_eval_outputs(result: EvalResult, payload: dict[str, Any], out: Path) -> None:
    """``report.txt``, ``confusion.csv`` and ``eval.json`` under ``out``."""
    make_folder(out)
    atomic_write_text(out / "report.txt", result.format_report() + "\n")
    header = "true\\predicted," + ",".join(result.class_names)
    rows = [f"{name}," + ",".join(map(str, row))
            for name, row in zip(result.class_names, result.confusion, strict=True)]
    atomic_write_text(out / "confusion.csv", "\n".join([header, *rows]) + "\n")
    atomic_write_text(out / "eval.json", json.dumps(payload, indent=2) + "\n")


def write_summary(summary: ModelSummary, out: Path) -> dict[str, Path]:
    """``summary.txt`` and ``summary.json`` under ``out``."""
    paths = {"summary_txt": out / "summary.txt", "summary_json": out / "summary.json"}
    atomic_write_text(paths["summary_txt"], summary.format_table() + "\n")
    atomic_write_text(paths["summary_json"], json.dumps(summary.to_dict(), indent=2) + "\n")
    return paths
