"""What every pipeline writes or needs: a model with its weights, the machine a table was measured
on, and the evaluation and summary files.

Example::

    >>> from torchslim.pipelines.common import build_model
    >>> model, spec = build_model("cifar_resnet20")
    >>> spec.input_shape
    (3, 32, 32)
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..analysis import ModelSummary, file_size_bytes
from ..core.errors import UserError
from ..core.fileio import atomic_write_text, make_folder
from ..core.storage import is_compressed
from ..data import ArrayDataset
from ..models import ModelSpec, create_model, get_model_spec, load_weights
from ..models.checkpoint import (
    checkpoint_meta,
    read_checkpoint,
    saved_classes,
    saved_normalization,
)
from ..train import EvalResult


def build_model(
    name: str, weights: str | None = None, num_classes: int | None = None,
    classes: list[str] | None = None, image_shape: tuple[int, ...] | None = None,
) -> tuple[nn.Module, ModelSpec]:
    """Create a zoo (or ``package.module:function``) model and load ``weights`` into it;
    with ``classes`` (the data's), a file that records other classes, or the same in another
    order, is a :class:`UserError` (its outputs would be read as the wrong labels); with
    ``image_shape`` (the data's, no batch), so is a model that cannot run on those images or
    gives another number of scores than ``num_classes``."""
    spec = get_model_spec(name)
    meta = checkpoint_meta(weights) if weights else {}
    if classes is not None:
        saved = saved_classes(meta)
        if saved is not None and saved != list(classes):
            raise UserError(
                f"'{weights}' was trained on the classes {_shown(saved, classes)}, the data has "
                f"{_shown(list(classes), saved)}: give data with the same classes (--classes "
                f"{','.join(saved)} picks and orders them)"
            )
    model = create_model(name, num_classes=num_classes)
    if weights:
        load_weights(model, weights, name=name)
        normalization = saved_normalization(meta)
        if normalization is not None and normalization != spec.normalization:
            spec = dataclasses.replace(spec, normalization=normalization)  # as it was trained
    if image_shape is not None:
        check_fits(model, name, image_shape, num_classes)
    return model, spec


def check_fits(model: nn.Module, name: str, image_shape: tuple[int, ...],
               num_classes: int | None) -> None:
    """One image of ``image_shape`` through ``model``: a :class:`UserError` when it cannot run
    on it, or gives other than ``num_classes`` scores."""
    reference = next(iter(model.parameters()), None)
    x = torch.zeros(1, *image_shape, device=reference.device if reference is not None else None)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x)
    except (RuntimeError, ValueError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(f"model '{name}' cannot run on the data's images of shape "
                        f"{tuple(image_shape)} ({first}): choose a model made for this data"
                        ) from None
    finally:
        model.train(was_training)
    scores = out.shape[1] if isinstance(out, torch.Tensor) and out.dim() == 2 else None
    if num_classes is not None and scores is not None and scores != num_classes:
        raise UserError(f"model '{name}' gives {scores} scores per image, the data has "
                        f"{num_classes} classes: give the model's weights for this data")


def weights_file_bytes(model: nn.Module, path: str | os.PathLike | None) -> int:
    """The size an input model's weights take, the same way for every row: a file torchslim
    compressed (sparse or packed) as it is on disk; any other (a training checkpoint with
    optimizer state, say) as the plain ``state_dict`` of ``model``."""
    if path is not None and is_compressed(read_checkpoint(path)):
        return os.path.getsize(path)
    return file_size_bytes(model)


def _shown(classes: list[str], other: list[str]) -> str:
    """``classes`` around the first place they differ from ``other``."""
    first = next((i for i, (a, b) in enumerate(zip(classes, other, strict=False)) if a != b),
                 min(len(classes), len(other)))
    start = max(0, first - 2)
    shown = classes[start:start + 6]
    return ("[" + ("..., " if start else "") + ", ".join(shown)
            + (", ..." if start + 6 < len(classes) else "") + "]")


def check_same_classes(first: ArrayDataset, second: ArrayDataset, names: str) -> None:
    """Two splits of one data set must hold the same classes in the same order (labels follow
    the sorted class folders of each split): a :class:`UserError` naming the difference."""
    if first.classes != second.classes:
        only = sorted(set(first.classes) ^ set(second.classes))
        detail = (f"{', '.join(only[:6])} in one only" if only else "in another order")
        raise UserError(f"the {names} splits have different classes ({detail}): every split "
                        "needs the same class folders, or pick them with --classes")


#: CPU flags of int8 dot-product instructions: with them ONNX Runtime's int8 convolutions
#: accumulate in int32 and run several times faster than fp32; without them (AVX2 alone) the
#: uint8 x int8 kernels sum pairs in int16 (``u8s7`` needed) and are often no faster.
INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp")


def cpu_meta(cpuinfo: str | None = None) -> dict[str, Any]:
    r"""The CPU's model name, torch's vector capability and its int8 dot-product flags (from
    ``/proc/cpuinfo`` where there is one): int8 speed depends on them more than on anything else.

    >>> cpu_meta("model name : Test CPU\nflags : fpu avx2 avx512_vnni\n")["int8_dot"]
    ['avx512_vnni']
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip().lower(), value.strip())
    flags = set(fields.get("flags", fields.get("features", "")).split())
    return {"cpu": fields.get("model name") or platform.processor() or platform.machine(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "int8_dot": [flag for flag in INT8_DOT_FLAGS if flag in flags]}


def machine_meta() -> dict[str, Any]:
    """Machine, CPU (:func:`cpu_meta`), torch version and thread count, stored beside every
    benchmark table."""
    return {
        "torch": torch.__version__,
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        **cpu_meta(),
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
