"""Classification training with compression hooks, atomic per-epoch checkpoints and resume.

Example::

    >>> import torch, tempfile
    >>> from torchslim.train import Trainer, TrainConfig
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    >>> data = [(torch.randn(8, 1, 2, 2), torch.randint(0, 2, (8,))) for _ in range(3)]
    >>> trainer = Trainer(model, data, TrainConfig(epochs=2, lr=0.05, schedule="cosine"),
    ...                   eval_batches=data, out_dir=tempfile.mkdtemp(), progress=False)
    >>> history = trainer.fit()
    >>> [row["epoch"] for row in history]
    [0, 1]
"""

from __future__ import annotations

import csv
import io
import os
import random
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..core.errors import UserError
from ..core.fileio import atomic_torch_save, atomic_write_text
from .evaluation import evaluate

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("constant", "step", "multistep", "cosine")
CHECKPOINT_NAME = "checkpoint.pt"
FINAL_MODEL_NAME = "model.pt"
HOOKS = (
    "on_epoch_begin",
    "on_minibatch_begin",
    "before_backward_pass",
    "on_minibatch_end",
    "on_epoch_end",
)


@dataclass
class TrainConfig:
    """Everything that decides how a model is trained (saved with every checkpoint)."""

    epochs: int = 1
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    schedule: str = "cosine"
    step_size: int = 30
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.1
    label_smoothing: float = 0.0
    seed: int = 0
    channels_last: bool = True

    def validate(self) -> None:
        """Raise :class:`UserError` for values that cannot work."""
        if self.epochs < 1:
            raise UserError(f"epochs must be at least 1, got {self.epochs}")
        if self.lr <= 0:
            raise UserError(f"learning rate must be > 0, got {self.lr}")
        if self.optimizer not in OPTIMIZERS:
            raise UserError(f"unknown optimizer '{self.optimizer}': choose one of {OPTIMIZERS}")
        if self.schedule not in SCHEDULES:
            raise UserError(f"unknown LR schedule '{self.schedule}': choose one of {SCHEDULES}")
        if self.schedule == "multistep" and not self.milestones:
            raise UserError("the multistep schedule needs milestones, e.g. --milestones 30 60")
        if not 0 <= self.label_smoothing < 1:
            raise UserError(f"label smoothing must be in [0, 1), got {self.label_smoothing}")


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD (momentum, optional Nesterov) or AdamW over the trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(
        params,
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        nesterov=config.nesterov and config.momentum > 0,
    )


def make_lr_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig
) -> torch.optim.lr_scheduler.LRScheduler:
    """The per-epoch LR schedule named by ``config.schedule``."""
    sched = torch.optim.lr_scheduler
    if config.schedule == "step":
        return sched.StepLR(optimizer, step_size=config.step_size, gamma=config.gamma)
    if config.schedule == "multistep":
        return sched.MultiStepLR(optimizer, milestones=config.milestones, gamma=config.gamma)
    if config.schedule == "cosine":
        return sched.CosineAnnealingLR(optimizer, T_max=config.epochs)
    return sched.ConstantLR(optimizer, factor=1.0, total_iters=0)


def seed_everything(seed: int) -> None:
    """Seed Python and torch so a CPU run is repeatable."""
    random.seed(seed)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "python": random.getstate()}


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_as_tuple(state["python"]))


def _as_tuple(value):
    return tuple(_as_tuple(v) for v in value) if isinstance(value, list | tuple) else value


class _MetricsLog:
    """metrics.csv (rewritten atomically each epoch) and TensorBoard when it is installed."""

    def __init__(self, out_dir: Path | None) -> None:
        self.out_dir = out_dir
        self.writer = None
        if out_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                return
            self.writer = SummaryWriter(log_dir=str(out_dir / "tensorboard"))

    def write(self, history: list[dict[str, Any]]) -> None:
        if self.out_dir is None or not history:
            return
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(history[-1]))
        writer.writeheader()
        writer.writerows(history)
        atomic_write_text(self.out_dir / "metrics.csv", buffer.getvalue())
        if self.writer is not None:
            row = history[-1]
            for key, value in row.items():
                if key != "epoch" and isinstance(value, int | float):
                    self.writer.add_scalar(key, value, row["epoch"])
            self.writer.flush()


class Trainer:
    """Train a classifier, calling every callback's hooks, checkpointing after each epoch.

    ``train_batches`` and ``eval_batches`` are any iterables of ``(inputs, labels)``; one with a
    ``set_epoch(epoch)`` method (such as :class:`torchslim.data.BatchLoader`) is told the epoch,
    which makes shuffling repeatable after a resume. With ``out_dir``, the trainer writes
    ``checkpoint.pt`` (model, optimizer, LR scheduler, epoch, RNG and callback states) after every
    epoch, ``metrics.csv``, and ``model.pt`` (the final state_dict) at the end.
    """

    def __init__(
        self,
        model: nn.Module,
        train_batches: Iterable,
        config: TrainConfig,
        *,
        eval_batches: Iterable | None = None,
        num_classes: int | None = None,
        callbacks: Sequence[Any] = (),
        out_dir: str | os.PathLike | None = None,
        progress: bool = True,
        model_meta: dict[str, Any] | None = None,
    ) -> None:
        config.validate()
        self.model = model
        self.train_batches = train_batches
        self.eval_batches = eval_batches
        self.config = config
        self.callbacks = list(callbacks)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.progress = progress
        self.model_meta = dict(model_meta or {})
        self.num_classes = num_classes
        self.optimizer = make_optimizer(model, config)
        self.lr_scheduler = make_lr_scheduler(self.optimizer, config)
        self.history: list[dict[str, Any]] = []
        self.start_epoch = 0

    # -- hooks -------------------------------------------------------------------------------
    def _call(self, hook: str, *args: Any, **kwargs: Any) -> list[Any]:
        results = []
        for callback in self.callbacks:
            method = getattr(callback, hook, None)
            if method is not None:
                results.append(method(*args, optimizer=self.optimizer, **kwargs))
        return results

    # -- checkpoints -------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path | None:
        return self.out_dir / CHECKPOINT_NAME if self.out_dir is not None else None

    def _save_checkpoint(self, epoch: int) -> None:
        if self.out_dir is None:
            return
        state = {
            "format": "torchslim.train.checkpoint/1",
            "epoch": epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.lr_scheduler.state_dict(),
            "rng": _rng_state(),
            "callbacks": [
                cb.state_dict() if hasattr(cb, "state_dict") else {} for cb in self.callbacks
            ],
            "history": self.history,
            "config": asdict(self.config),
            "meta": self.model_meta,
        }
        atomic_torch_save(state, self.out_dir / CHECKPOINT_NAME)

    def resume(self) -> int:
        """Load ``checkpoint.pt`` from ``out_dir``; return the epoch training continues at."""
        path = self.checkpoint_path
        if path is None or not path.is_file():
            where = path if path is not None else "(no output directory)"
            raise UserError(f"cannot resume: no checkpoint at {where}; run without --resume first")
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or state.get("format") != "torchslim.train.checkpoint/1":
            raise UserError(f"'{path}' is not a torchslim training checkpoint")
        if len(state["callbacks"]) != len(self.callbacks):
            raise UserError(
                f"the checkpoint in '{path}' was written with {len(state['callbacks'])} "
                f"callbacks but this run has {len(self.callbacks)}: resume with the same "
                "schedule, or use a new --out directory"
            )
        # Callbacks first: a compression schedule may reshape the model (thinning) before its
        # weights load; the optimizer is rebuilt over the parameters the model has now.
        for callback, cb_state in zip(self.callbacks, state["callbacks"], strict=True):
            if hasattr(callback, "load_state_dict"):
                callback.load_state_dict(cb_state)
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError as err:
            raise UserError(
                f"the checkpoint in '{path}' belongs to a different model "
                f"({str(err).splitlines()[0]}); use a new --out directory"
            ) from None
        self.optimizer = make_optimizer(self.model, self.config)
        self.lr_scheduler = make_lr_scheduler(self.optimizer, self.config)
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        _set_rng_state(state["rng"])
        self.history = list(state["history"])
        self.start_epoch = state["epoch"] + 1
        return self.start_epoch

    # -- the loop ----------------------------------------------------------------------------
    def _train_epoch(self, epoch: int) -> dict[str, float]:
        model, optimizer = self.model, self.optimizer
        model.train()
        if self.config.channels_last:
            # Again every epoch: thinning between epochs builds new, contiguous weights.
            model.to(memory_format=torch.channels_last)
        if hasattr(self.train_batches, "set_epoch"):
            self.train_batches.set_epoch(epoch)
        total = len(self.train_batches) if hasattr(self.train_batches, "__len__") else None
        steps = total if total is not None else -1
        loss_sum, correct, seen = 0.0, 0, 0
        bar = tqdm(
            self.train_batches,
            total=total,
            desc=f"epoch {epoch + 1}/{self.config.epochs}",
            disable=not self.progress,
            leave=False,
            mininterval=0.1 if sys.stderr.isatty() else 10.0,  # few updates in log files
        )
        for step, (inputs, targets) in enumerate(bar):
            if self.config.channels_last and inputs.dim() == 4:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            self._call("on_minibatch_begin", epoch, step, steps)
            outputs = model(inputs)
            loss = F.cross_entropy(outputs, targets, label_smoothing=self.config.label_smoothing)
            for adjusted in self._call(
                "before_backward_pass", epoch, step, steps, loss,
                inputs=inputs, outputs=outputs, targets=targets,
            ):
                if adjusted is not None:
                    loss = adjusted
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            self._call("on_minibatch_end", epoch, step, steps)
            batch = targets.numel()
            loss_sum += loss.item() * batch
            correct += (outputs.detach().argmax(1) == targets).sum().item()
            seen += batch
            bar.set_postfix(
                loss=f"{loss_sum / seen:.4f}", acc=f"{100.0 * correct / seen:.2f}", refresh=False
            )
        if seen == 0:
            raise UserError("the training data yielded no batches: is the train split empty?")
        return {"train_loss": loss_sum / seen, "train_top1": 100.0 * correct / seen}

    def fit(self, resume: bool = False) -> list[dict[str, Any]]:
        """Train from ``start_epoch`` (or from the checkpoint when ``resume``) to the last epoch."""
        if resume:
            self.resume()
        else:
            seed_everything(self.config.seed)
        metrics_log = _MetricsLog(self.out_dir)
        for epoch in range(self.start_epoch, self.config.epochs):
            started = time.perf_counter()
            lr = self.optimizer.param_groups[0]["lr"]
            self._call("on_epoch_begin", epoch)
            row: dict[str, Any] = {"epoch": epoch, "lr": lr, **self._train_epoch(epoch)}
            if self.eval_batches is not None:
                result = evaluate(self.model, self.eval_batches, self._num_classes())
                row.update(val_loss=result.loss, val_top1=result.top1, val_top5=result.top5)
            self.lr_scheduler.step()
            row["seconds"] = round(time.perf_counter() - started, 3)
            self._call("on_epoch_end", epoch, metrics=row)
            self.history.append(row)
            self._save_checkpoint(epoch)
            metrics_log.write(self.history)
            if self.progress:
                shown = ", ".join(
                    f"{k} {v:.4g}" for k, v in row.items() if k != "epoch" and isinstance(v, float)
                )
                tqdm.write(f"epoch {epoch + 1}/{self.config.epochs}: {shown}")
        if self.out_dir is not None:
            atomic_torch_save(
                {"state_dict": self.model.state_dict(), "meta": self.model_meta},
                self.out_dir / FINAL_MODEL_NAME,
            )
        return self.history

    def _num_classes(self) -> int:
        if self.num_classes is None:
            last = [m for m in self.model.modules() if isinstance(m, nn.Linear)]
            if not last:
                raise UserError("pass num_classes to the Trainer: the model has no Linear head")
            self.num_classes = last[-1].out_features
        return self.num_classes
