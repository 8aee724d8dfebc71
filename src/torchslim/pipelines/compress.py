"""Train a model under a compression schedule and save the compressed result.

:func:`compress` is what ``torchslim compress`` runs: the :class:`~torchslim.train.Trainer`
with a :class:`~torchslim.schedule.CompressionScheduler` as its callback, then the masks baked
in, the result saved as ``compressed.pt`` (sparse tensors stored by their non-zeros, see
:mod:`torchslim.core.storage`; ``model.pt`` holds the same weights densely), and the schedule
log written beside the checkpoints as ``schedule.json`` and ``schedule.txt``.

Example::

    >>> import tempfile
    >>> from torchslim.pipelines.compress import compress
    >>> from torchslim.data import BatchLoader, load_digits
    >>> from torchslim.models import create_model
    >>> from torchslim.recipe import parse_recipe
    >>> from torchslim.train import TrainConfig
    >>> recipe = parse_recipe('''
    ... pruners:
    ...   level: {class: LevelPruner, levels: {"*": 0.5}}
    ... policies:
    ...   - pruner: {instance_name: level}
    ...     epochs: [0]
    ... ''')
    >>> data = BatchLoader(load_digits("train"), 256, normalization="digits")
    >>> run = compress(create_model("demo_cnn"), recipe, data, TrainConfig(epochs=1, lr=0.01),
    ...                out_dir=tempfile.mkdtemp(), progress=False)
    >>> round(run.scheduler.log[0]["sparsity"]["classifier.weight"], 2)
    0.5
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..analysis import ModelSummary, summarize
from ..bench import BenchRow, BenchTable
from ..bench.measure import measure_row
from ..core.fileio import atomic_torch_save, atomic_write_text
from ..core.storage import save_compressed
from ..recipe import Recipe, build_scheduler
from ..schedule import CompressionScheduler
from ..train import TrainConfig, Trainer
from .common import weights_file_bytes, write_summary

COMPRESSED_NAME = "compressed.pt"


@dataclass
class CompressionRun:
    """What :func:`compress` leaves: the compressed model, its scheduler and the history."""

    model: nn.Module
    scheduler: CompressionScheduler
    history: list[dict[str, Any]]
    out_dir: Path | None

    @property
    def model_path(self) -> Path | None:
        """The compressed model file (sparse tensors stored by their non-zeros)."""
        return self.out_dir / COMPRESSED_NAME if self.out_dir is not None else None


def schedule_notes(recipe: Recipe, epochs: int) -> list[str]:
    """The recipe's notes plus a warning for each policy that outlasts the training run."""
    notes = list(recipe.notes)
    for entry in recipe.policies:
        last = entry.policy.last
        if last is not None and last >= epochs:
            notes.append(
                f"{recipe.source.where(entry.path)}: '{entry.instance}' acts until epoch {last} "
                f"but training has {epochs} epochs (0..{epochs - 1}), so it will not finish"
            )
    return notes


def write_schedule_log(scheduler: CompressionScheduler, out_dir: Path) -> None:
    """``schedule.json`` and ``schedule.txt`` (per epoch: what fired, per-layer sparsity)."""
    atomic_write_text(out_dir / "schedule.json", json.dumps(scheduler.log, indent=2) + "\n")
    atomic_write_text(out_dir / "schedule.txt", scheduler.format_log() + "\n")


def compress(
    model: nn.Module,
    recipe: Recipe | CompressionScheduler,
    train_batches: Iterable,
    config: TrainConfig,
    *,
    eval_batches: Iterable | None = None,
    val_batches: Iterable | None = None,
    num_classes: int | None = None,
    out_dir: str | os.PathLike | None = None,
    progress: bool = True,
    model_meta: dict[str, Any] | None = None,
    resume: bool = False,
    example_input: torch.Tensor | None = None,
) -> CompressionRun:
    """Fine-tune ``model`` under ``recipe`` (or a ready scheduler) for ``config.epochs``.

    Steps acting on the epoch's validation numbers (``ReduceLROnPlateau``) see those of
    ``val_batches`` (images held out of the training data) when given, else those of
    ``eval_batches`` (see :class:`~torchslim.train.Trainer`).

    ``example_input`` (one batch the model accepts) is needed when the recipe prunes structures
    or thins the model. The saved files carry the architecture edits (thinning) in their
    ``meta["edits"]``, so :func:`torchslim.models.load_weights` reshapes a fresh model before
    loading them.
    """
    scheduler = recipe if isinstance(recipe, CompressionScheduler) else build_scheduler(
        recipe, model, example_input
    )
    out = Path(out_dir) if out_dir is not None else None
    trainer = Trainer(
        model, train_batches, config, eval_batches=eval_batches, val_batches=val_batches,
        num_classes=num_classes, callbacks=[scheduler], out_dir=out, progress=progress,
        model_meta=model_meta,
    )
    history = trainer.fit(resume=resume)
    scheduler.finish()
    if out is not None:
        write_schedule_log(scheduler, out)
        earlier = list((model_meta or {}).get("edits") or [])  # the input was edited before
        meta = {**(model_meta or {}), "edits": earlier + scheduler.edits}
        save_compressed(trainer.model, out / COMPRESSED_NAME, meta=meta)
        # Again after finish(): the dense copy says how to reshape a fresh model (edits), and
        # holds the weights as the steps left them (splicing bakes its masks in).
        atomic_torch_save(
            {"state_dict": trainer.model.state_dict(), "meta": meta}, out / "model.pt"
        )
    return CompressionRun(trainer.model, scheduler, history, out)


@dataclass
class CompressionReport:
    """What :func:`report` measured: the compressed model's summary, the two bench rows (input
    model, compressed model), their table, and the files written."""

    summary: ModelSummary
    rows: list[BenchRow]
    table: BenchTable
    files: dict[str, str]


def report(
    run: CompressionRun,
    baseline: nn.Module,
    input_shape: tuple[int, ...],
    eval_batches: Iterable,
    *,
    num_classes: int,
    labels: tuple[str, str],
    input_file: str | os.PathLike | None = None,
    latency_batch: int = 256,
    repeats: int = 20,
    meta: dict[str, Any] | None = None,
) -> CompressionReport:
    """Summarise the compressed model and measure it beside ``baseline`` (the input model); write
    ``summary.*`` and ``bench.*`` into the run's output folder (``labels`` name the two rows)."""
    summary = summarize(run.model, input_shape)
    measure = {"num_classes": num_classes, "latency_batch": latency_batch, "repeats": repeats}
    rows = [
        measure_row(labels[0], baseline, input_shape, eval_batches, **measure,
                    file_bytes=weights_file_bytes(baseline, input_file)),
        measure_row(labels[1], run.model, input_shape, eval_batches, **measure,
                    file_bytes=run.model_path.stat().st_size if run.model_path else None),
    ]
    table = BenchTable(rows, meta=dict(meta or {}))
    files: dict[str, str] = {}
    if run.out_dir is not None:
        files.update({k: str(v) for k, v in write_summary(summary, run.out_dir).items()})
        files.update({kind: str(path) for kind, path in table.write(run.out_dir).items()})
    return CompressionReport(summary, rows, table, files)
