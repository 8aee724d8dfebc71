"""Training with compression hooks, atomic per-epoch checkpoints and resume.

The loss is any ``loss_fn(outputs, targets, batch)`` (cross entropy by default) and the per-epoch
evaluation any list of :mod:`~torchslim.train.metrics` (top-1/top-5 and the loss by default), so
distillation, regularisers and tasks other than classification need no trainer edits. Training
runs on ``TrainConfig.device`` (CUDA when available), with float16 mixed precision on CUDA.

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

import contextlib
import csv
import io
import math
import os
import random
import re
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..core.errors import UserError
from ..core.fileio import atomic_torch_save, atomic_write_text
from .metrics import MeanLoss, Metric, TopK

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
#: The values of ``TrainConfig.device`` (and ``cuda:N`` for the N-th GPU).
DEVICES = ("auto", "cpu", "cuda")

#: ``loss_fn(outputs, targets, batch)`` -> the scalar loss; ``batch`` is ``(inputs, targets)``.
LossFn = Callable[[Any, Any, tuple], torch.Tensor]


@dataclass
class TrainConfig:
    """Everything that decides how a model is trained (saved with every checkpoint).

    ``device`` is ``"auto"`` (CUDA when available, else the CPU), ``"cpu"``, ``"cuda"`` or
    ``"cuda:N"``. ``amp`` turns float16 mixed precision (autocast and loss scaling) on or off;
    None means on exactly when the device is CUDA. ``label_smoothing`` applies to the default
    cross-entropy loss. ``checkpoint_minutes`` > 0 also writes the checkpoint within an epoch,
    every that many minutes, so a crash loses minutes, not an epoch (see :class:`Trainer`).

    Example::

        >>> TrainConfig(device="cpu", amp=True).validate()  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        torchslim.core.errors.UserError: mixed precision needs a CUDA device; the device is cpu...
    """

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
    device: str = "auto"
    amp: bool | None = None
    checkpoint_minutes: float = 0.0

    def validate(self) -> None:
        """Raise :class:`UserError` for values that cannot work."""
        if self.epochs < 1:
            raise UserError(f"epochs must be at least 1, got {self.epochs}")
        if not self.checkpoint_minutes >= 0:
            raise UserError(f"checkpoint minutes must be >= 0 (0: after every epoch only), got "
                            f"{self.checkpoint_minutes}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise UserError(f"learning rate must be a number > 0, got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise UserError(f"momentum must be >= 0 and < 1, got {self.momentum}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise UserError(f"weight decay must be >= 0, got {self.weight_decay}")
        if not (math.isfinite(self.gamma) and self.gamma > 0):
            raise UserError(f"gamma (the LR factor at each step) must be > 0, got {self.gamma}")
        if any(m < 1 for m in self.milestones):
            raise UserError(f"milestones are epochs >= 1, got {list(self.milestones)}")
        if self.optimizer not in OPTIMIZERS:
            raise UserError(f"unknown optimizer '{self.optimizer}': choose one of {OPTIMIZERS}")
        if self.schedule not in SCHEDULES:
            raise UserError(f"unknown LR schedule '{self.schedule}': choose one of {SCHEDULES}")
        if self.schedule == "multistep" and not self.milestones:
            raise UserError("the multistep schedule needs milestones, e.g. --milestones 30 60")
        if not 0 <= self.label_smoothing < 1:
            raise UserError(f"label smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.amp not in (None, True, False):
            raise UserError(f"amp must be True, False or None (on with CUDA), got {self.amp!r}")
        self.resolve_amp(resolve_device(self.device))

    def resolve_amp(self, device: torch.device) -> bool:
        """Whether training on ``device`` uses mixed precision (:class:`UserError` if it cannot).

        Example::

            >>> TrainConfig().resolve_amp(torch.device("cpu"))
            False
        """
        if self.amp is None:
            return device.type == "cuda"
        if self.amp and device.type != "cuda":
            raise UserError(
                f"mixed precision needs a CUDA device; the device is {device}: turn amp off "
                "(--no-amp), or train on a GPU (--device cuda)"
            )
        return bool(self.amp)


def resolve_device(name: str) -> torch.device:
    """The device ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` stands for on this machine.

    ``"auto"`` is CUDA when ``torch.cuda.is_available()``, else the CPU; asking for CUDA on a
    machine without it is a :class:`UserError`.

    Example::

        >>> resolve_device("cpu")
        device(type='cpu')
    """
    text = name.strip().lower() if isinstance(name, str) else None
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text is None or not re.fullmatch(r"cuda(:\d+)?", text):
        raise UserError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        why = ("this torch build has no CUDA support" if torch.version.cuda is None
               else "no CUDA GPU is visible")
        raise UserError(
            f"device {name!r} needs CUDA, but {why} (torch {torch.__version__}): use --device cpu "
            "or --device auto"
        )
    device = torch.device(text)
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise UserError(f"device {name!r} does not exist: this machine has {count} CUDA "
                        f"device(s), cuda:0 to cuda:{count - 1}")
    return device


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


def align_lr_scheduler(scheduler: Any) -> None:
    """Give ``scheduler`` an entry for every group of its optimizer: a step that adds a group
    after the schedule was built (learned quantizer steps, distillation adapters) would
    otherwise make the next ``step()`` fail. New groups start from their current learning rate.

    >>> model = torch.nn.Linear(1, 1)
    >>> optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    >>> schedule = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=2)
    >>> optimizer.add_param_group({"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 0.5})
    >>> align_lr_scheduler(schedule)
    >>> optimizer.step(); schedule.step(); [round(g["lr"], 3) for g in optimizer.param_groups]
    [0.5, 0.25]
    """
    optimizer = getattr(scheduler, "optimizer", None)
    base = getattr(scheduler, "base_lrs", None)
    if optimizer is None or base is None:
        return
    for group in optimizer.param_groups[len(base):]:
        group.setdefault("initial_lr", group["lr"])
        base.append(group["initial_lr"])
        last = getattr(scheduler, "_last_lr", None)
        if isinstance(last, list):
            last.append(group["lr"])


def seed_everything(seed: int) -> None:
    """Seed Python and torch so a CPU run is repeatable."""
    random.seed(seed)
    torch.manual_seed(seed)


def _rng_state(device: torch.device) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    # Resume maps every tensor to the training device; RNG states must be CPU byte tensors.
    torch.set_rng_state(state["torch"].cpu())
    random.setstate(_as_tuple(state["python"]))
    cuda = state.get("cuda")
    if device.type == "cuda" and cuda and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])


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
    """Train a model, calling every callback's hooks, checkpointing after each epoch.

    ``train_batches`` and ``eval_batches`` are any iterables of ``(inputs, targets)``; one with a
    ``set_epoch(epoch)`` method (such as :class:`torchslim.data.BatchLoader`) is told the epoch,
    which makes shuffling repeatable after a resume. With ``out_dir``, the trainer writes
    ``checkpoint.pt`` (model, optimizer, LR scheduler, loss scaler, epoch, RNG and callback
    states) after every epoch, ``metrics.csv``, and ``model.pt`` (the final state_dict) at the end.
    With ``config.checkpoint_minutes`` it also checkpoints within an epoch (with the minibatch
    reached and the epoch's running sums) when every callback allows it (a callback's
    ``mid_epoch_checkpoint_ok()``, see :class:`~torchslim.train.Callback`; objects without the
    method say no). A run resumed from such a checkpoint calls ``on_epoch_resume`` instead of
    ``on_epoch_begin`` and skips the minibatches already trained, drawing the epoch's batches
    from the random state the epoch began with: exactly the batches an uninterrupted run sees
    when ``train_batches`` is a pure function of its epoch (as
    :class:`torchslim.data.BatchLoader` is) or shuffles with the global generator when its
    iteration starts (a ``DataLoader``).

    The numbers of every epoch reach the callbacks' ``on_epoch_end`` as ``metrics`` (an LR
    schedule stepping on the validation loss acts on them). With ``val_batches`` (images held
    out of the training data) the callbacks see those: ``val_<name>`` is then measured on
    ``val_batches``, and the history row records them as ``holdout_<name>`` beside the
    ``eval_batches`` numbers. Without it they see the ``eval_batches`` numbers: do not give
    the test split there when a callback acts on them, or the test labels steer training.

    ``loss_fn(outputs, targets, batch)`` returns the scalar loss, ``batch`` being the
    ``(inputs, targets)`` pair on the training device; default: cross entropy with
    ``config.label_smoothing``. After every epoch each of ``metrics`` (see
    :mod:`torchslim.train.metrics`) runs over ``eval_batches`` and its numbers go into the
    history row as ``val_<name>``; default: :class:`MeanLoss` (cross entropy) and
    :class:`TopK` (1, 5), i.e. ``val_loss``, ``val_top1``, ``val_top5``. ``num_classes`` is only
    used by those default metrics, to check the model's head against the data. The row also
    holds ``train_loss``, and ``train_top1`` when the outputs are class scores ``(N, C)`` for
    integer labels ``(N,)``.

    :meth:`fit` moves the model and every batch to ``config.device`` and, when it is done, moves
    the model back to the device it was on (so evaluation and benchmarks on the CPU work as
    before). On CUDA, forward pass and loss run under float16 autocast with a
    ``torch.amp.GradScaler`` unless ``config.amp`` is False.
    """

    def __init__(
        self,
        model: nn.Module,
        train_batches: Iterable,
        config: TrainConfig,
        *,
        eval_batches: Iterable | None = None,
        val_batches: Iterable | None = None,
        num_classes: int | None = None,
        callbacks: Sequence[Any] = (),
        out_dir: str | os.PathLike | None = None,
        progress: bool = True,
        model_meta: dict[str, Any] | None = None,
        loss_fn: LossFn | None = None,
        metrics: Sequence[Metric] | None = None,
    ) -> None:
        config.validate()
        self.model = model
        self.train_batches = train_batches
        self.eval_batches = eval_batches
        self.val_batches = val_batches
        self.config = config
        self.callbacks = list(callbacks)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.progress = progress
        self.model_meta = dict(model_meta or {})
        self.num_classes = num_classes
        self.loss_fn: LossFn = loss_fn if loss_fn is not None else self._cross_entropy
        if metrics is None:
            metrics = [MeanLoss(), TopK((1, 5), num_classes=num_classes)]
        self.metrics = list(metrics)
        for metric in self.metrics:
            if not all(callable(getattr(metric, m, None)) for m in ("reset", "update", "compute")):
                raise UserError(f"metrics must be Metric objects (reset, update, compute), got "
                                f"{type(metric).__name__}")
        self.device = resolve_device(config.device)
        self.amp = config.resolve_amp(self.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self._home_device = _module_device(model)
        self.optimizer = make_optimizer(model, config)
        self.lr_scheduler = make_lr_scheduler(self.optimizer, config)
        self.history: list[dict[str, Any]] = []
        self.start_epoch = 0
        self._position: dict[str, Any] | None = None  # where a mid-epoch checkpoint stopped
        self._epoch_lr = config.lr

    def _cross_entropy(self, outputs: torch.Tensor, targets: torch.Tensor, batch: tuple):
        return F.cross_entropy(outputs, targets, label_smoothing=self.config.label_smoothing)

    # -- hooks -------------------------------------------------------------------------------
    def _call(self, hook: str, *args: Any, **kwargs: Any) -> list[Any]:
        results = []
        for callback in self.callbacks:
            method = getattr(callback, hook, None)
            if method is not None:
                results.append(method(*args, optimizer=self.optimizer, **kwargs))
        return results

    # -- devices -----------------------------------------------------------------------------
    def _to_device(self, value: Any) -> Any:
        """Tensors (also inside tuples, lists and dicts) on the training device."""
        if isinstance(value, torch.Tensor):
            return value.to(self.device, non_blocking=True)
        if isinstance(value, tuple | list):
            return type(value)(self._to_device(v) for v in value)
        if isinstance(value, dict):
            return {k: self._to_device(v) for k, v in value.items()}
        return value

    def _to_training_device(self) -> None:
        """The model, and the parameters callbacks train beside it (distillation adapters), on
        the training device: before the optimizer takes them or its saved state loads."""
        self.model.to(self.device)
        for callback in self.callbacks:
            extra = getattr(callback, "extra_parameters", None)
            for param in (extra() if extra is not None else {}).values():
                if param.device != self.device:
                    param.data = param.data.to(self.device)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=torch.float16)

    # -- checkpoints -------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path | None:
        return self.out_dir / CHECKPOINT_NAME if self.out_dir is not None else None

    def _save_checkpoint(self, epoch: int, position: dict[str, Any] | None = None) -> None:
        """``epoch``: the last finished epoch; ``position``: where within the next one."""
        if self.out_dir is None:
            return
        state = {
            "format": "torchslim.train.checkpoint/1",
            "epoch": epoch,
            "position": position,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "optimizer_params": self._optimizer_param_names(),
            "lr_scheduler": self.lr_scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),  # {} unless mixed precision is on
            "rng": _rng_state(self.device),
            "callbacks": [
                cb.state_dict() if hasattr(cb, "state_dict") else {} for cb in self.callbacks
            ],
            "history": self.history,
            "config": asdict(self.config),
            "meta": self.model_meta,
        }
        atomic_torch_save(state, self.out_dir / CHECKPOINT_NAME)

    def _named_trainables(self) -> dict[str, nn.Parameter]:
        """The model's parameters by name, and the callbacks' own (``callback<i>.<name>``)."""
        named = dict(self.model.named_parameters())
        for index, callback in enumerate(self.callbacks):
            extra = getattr(callback, "extra_parameters", None)
            if extra is not None:
                named.update({f"callback{index}.{k}": p for k, p in extra().items()})
        return named

    def _optimizer_param_names(self) -> list[list[str | None]]:
        """The name of every parameter in every optimizer group (None: not found)."""
        name_of = {id(p): name for name, p in self._named_trainables().items()}
        return [[name_of.get(id(p)) for p in group["params"]]
                for group in self.optimizer.param_groups]

    def _rebuild_optimizer(self, names: list[list[str | None]] | None, path: Path) -> None:
        """A fresh optimizer (and LR schedule) whose parameter groups hold the parameters
        ``names`` lists, in that order: steps that added groups (QAT step sizes, adapters) and
        edits that reordered the model resume exactly. Without names (older checkpoints), the
        default single group."""
        self.optimizer = make_optimizer(self.model, self.config)
        if names is not None:
            named = self._named_trainables()
            missing = sorted({n for group in names for n in group if n not in named},
                             key=str)
            if missing:
                raise UserError(
                    f"the checkpoint in '{path}' trains parameters this run does not have "
                    f"({', '.join(map(str, missing[:3]))}): resume with the same model and "
                    "recipe, or use a new --out directory"
                )
            self.optimizer.param_groups = []
            for group in names:  # hyperparameters: the defaults here, the saved ones on load
                self.optimizer.add_param_group({"params": [named[n] for n in group]})
        self.lr_scheduler = make_lr_scheduler(self.optimizer, self.config)

    def resume(self) -> int:
        """Load ``checkpoint.pt`` from ``out_dir``; return the epoch training continues at."""
        path = self.checkpoint_path
        if path is None or not path.is_file():
            where = path if path is not None else "(no output directory)"
            raise UserError(f"cannot resume: no checkpoint at {where}; run without --resume first")
        # A checkpoint written on a GPU resumes on the CPU, and the other way round.
        state = torch.load(path, map_location=self.device, weights_only=True)
        if not isinstance(state, dict) or state.get("format") != "torchslim.train.checkpoint/1":
            raise UserError(f"'{path}' is not a torchslim training checkpoint")
        _check_same_training(state.get("config"), self.config, path)
        if len(state["callbacks"]) != len(self.callbacks):
            raise UserError(
                f"the checkpoint in '{path}' was written with {len(state['callbacks'])} "
                f"callbacks but this run has {len(self.callbacks)}: resume with the same "
                "schedule, or use a new --out directory"
            )
        self._to_training_device()
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
        self._rebuild_optimizer(state.get("optimizer_params"), path)
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except ValueError as err:
            raise UserError(
                f"the optimizer state in '{path}' does not fit this run ({err}): resume with "
                "the same model and recipe, or use a new --out directory"
            ) from None
        self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        if state.get("scaler") and self.scaler.is_enabled():
            # Without saved scaler state (a run without mixed precision), a fresh scale.
            self.scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"], self.device)
        self.history = list(state["history"])
        self._position = state.get("position")
        self.start_epoch = (self._position["epoch"] if self._position is not None
                            else state["epoch"] + 1)
        return self.start_epoch

    # -- the loop ----------------------------------------------------------------------------
    def _mid_epoch_ok(self) -> bool:
        return all(callable(getattr(cb, "mid_epoch_checkpoint_ok", None))
                   and cb.mid_epoch_checkpoint_ok() for cb in self.callbacks)

    def _train_epoch(self, epoch: int, position: dict[str, Any] | None = None,
                     started: float = 0.0) -> dict[str, float]:
        model, optimizer = self.model, self.optimizer
        model.train()
        # Again every epoch: thinning between epochs builds new, contiguous weights.
        model.to(self.device)
        channels_last = self.config.channels_last and channels_last_safe(model)
        if channels_last:
            model.to(memory_format=torch.channels_last)
        elif self.config.channels_last:
            model.to(memory_format=torch.contiguous_format)
        if hasattr(self.train_batches, "set_epoch"):
            self.train_batches.set_epoch(epoch)
        total = len(self.train_batches) if hasattr(self.train_batches, "__len__") else None
        steps = total if total is not None else -1
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        seen, classified, first = 0, True, 0
        if position is not None:  # resumed within this epoch: its sums so far
            loss_sum += position["loss_sum"]
            correct += position["correct"]
            seen, classified, first = position["seen"], position["classified"], position["step"]
        every = self.config.checkpoint_minutes * 60.0
        saved = time.perf_counter()
        # The random state the epoch's batches were drawn from: a loader that shuffles with the
        # global generator (a DataLoader) draws the same order again when a run resumes within
        # the epoch; the trained minibatches are skipped, then the checkpoint's state returns.
        epoch_rng = position.get("epoch_rng") if position is not None else None
        resume_rng = None
        if epoch_rng is not None:
            resume_rng = _rng_state(self.device)
            _set_rng_state(epoch_rng, self.device)
        elif every:
            epoch_rng = _rng_state(self.device)
        bar = tqdm(
            self.train_batches,
            total=total,
            desc=f"epoch {epoch + 1}/{self.config.epochs}",
            disable=not self.progress,
            leave=False,
            mininterval=0.1 if sys.stderr.isatty() else 10.0,  # few updates in log files
        )
        for step, (inputs, targets) in enumerate(bar):
            if step < first:
                continue  # trained before the checkpoint this run resumed from
            if resume_rng is not None:
                _set_rng_state(resume_rng, self.device)
                resume_rng = None
            inputs, targets = self._to_device(inputs), self._to_device(targets)
            if channels_last and _is_tensor(inputs, dim=4):
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            batch = (inputs, targets)
            self._call("on_minibatch_begin", epoch, step, steps)
            with self._autocast():
                outputs = model(inputs)
                loss = self.loss_fn(outputs, targets, batch)
            if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
                raise UserError(f"loss_fn must return the loss as a scalar tensor, got "
                                f"{_describe(loss)}")
            for adjusted in self._call(
                "before_backward_pass", epoch, step, steps, loss,
                inputs=inputs, outputs=outputs, targets=targets,
            ):
                if adjusted is not None:
                    loss = adjusted
            optimizer.zero_grad(set_to_none=True)
            # A disabled scaler (no mixed precision) passes the loss and the step straight on.
            self.scaler.scale(loss).backward()
            self.scaler.step(optimizer)
            self.scaler.update()
            self._call("on_minibatch_end", epoch, step, steps)
            count = _batch_size(inputs, targets)
            loss_sum += loss.detach().double() * count
            classified = classified and _is_classification(outputs, targets)
            if classified:
                correct += (outputs.detach().argmax(1) == targets).sum()
            seen += count
            if (every and self.out_dir is not None and step + 1 != steps
                    and time.perf_counter() - saved >= every and self._mid_epoch_ok()):
                self._save_checkpoint(epoch - 1, {
                    "epoch": epoch, "step": step + 1, "loss_sum": loss_sum.item(),
                    "correct": int(correct.item()), "seen": seen, "classified": classified,
                    "seconds": time.perf_counter() - started, "lr": self._epoch_lr,
                    "epoch_rng": epoch_rng,
                })
                saved = time.perf_counter()
            if self.progress:
                shown = {"loss": f"{loss_sum.item() / seen:.4f}"}
                if classified:
                    shown["acc"] = f"{100.0 * correct.item() / seen:.2f}"
                bar.set_postfix(shown, refresh=False)
        if seen == 0:
            raise UserError("the training data yielded no batches: is the train split empty?")
        row = {"train_loss": loss_sum.item() / seen}
        if classified:
            row["train_top1"] = 100.0 * correct.item() / seen
        return row

    def evaluate_metrics(self, data: Iterable | None = None) -> dict[str, float]:
        """Run :attr:`metrics` over ``data`` (default: ``eval_batches``):
        ``{"val_<name>": value}``."""
        data = self.eval_batches if data is None else data
        if data is None:
            raise UserError("the Trainer has no eval_batches to evaluate on")
        model = self.model
        was_training = model.training
        model.eval()
        for metric in self.metrics:
            metric.reset()
        batches = 0
        try:
            with torch.inference_mode(), self._autocast():
                for inputs, targets in data:
                    inputs, targets = self._to_device(inputs), self._to_device(targets)
                    outputs = model(inputs)
                    for metric in self.metrics:
                        metric.update(outputs, targets)
                    batches += 1
        finally:
            model.train(was_training)
        if batches == 0:
            raise UserError("the evaluation data yielded no batches: is the eval split empty?")
        values: dict[str, float] = {}
        for metric in self.metrics:
            for name, value in metric.compute().items():
                if name in values:
                    raise UserError(f"two metrics report '{name}': give one another name "
                                    "(e.g. MeanLoss(loss_fn, name='mse'))")
                values[name] = float(value)
        return {f"val_{name}": value for name, value in values.items()}

    def fit(self, resume: bool = False, until: int | None = None) -> list[dict[str, Any]]:
        """Train from ``start_epoch`` (or from the checkpoint when ``resume``) to the last epoch,
        or only until ``until`` epochs are done (a run split across time-limited jobs: the
        next job resumes; ``model.pt`` is written when the last epoch is)."""
        last = self.config.epochs if until is None else min(until, self.config.epochs)
        self._to_training_device()
        if resume:
            self.resume()
        else:
            seed_everything(self.config.seed)
        metrics_log = _MetricsLog(self.out_dir)
        for epoch in range(self.start_epoch, last):
            position, self._position = self._position, None
            # a resumed epoch counts the seconds it ran before the checkpoint
            started = time.perf_counter() - (position["seconds"] if position else 0.0)
            lr = position["lr"] if position else self.optimizer.param_groups[0]["lr"]
            self._epoch_lr = lr
            if position is None:
                self._call("on_epoch_begin", epoch)
            else:  # within an epoch: its beginning happened before the checkpoint
                self._call("on_epoch_resume", epoch)
            row: dict[str, Any] = {"epoch": epoch, "lr": lr,
                                   **self._train_epoch(epoch, position, started)}
            if self.eval_batches is not None and self.metrics:
                row.update(self.evaluate_metrics())
            held: dict[str, float] = {}
            if self.val_batches is not None and self.metrics:
                held = self.evaluate_metrics(self.val_batches)
                row.update({"holdout_" + k.removeprefix("val_"): v for k, v in held.items()})
            align_lr_scheduler(self.lr_scheduler)
            self.lr_scheduler.step()
            row["seconds"] = round(time.perf_counter() - started, 3)
            # the callbacks see the held-out numbers as the validation ones, when there are any
            self._call("on_epoch_end", epoch, metrics={**row, **held})
            self.history.append(row)
            self._save_checkpoint(epoch)
            metrics_log.write(self.history)
            if self.progress:
                shown = ", ".join(
                    f"{k} {v:.4g}" for k, v in row.items() if k != "epoch" and isinstance(v, float)
                )
                tqdm.write(f"epoch {epoch + 1}/{self.config.epochs}: {shown}")
        self.model.to(self._home_device)
        if self.out_dir is not None and last == self.config.epochs:
            atomic_torch_save(
                {"state_dict": self.model.state_dict(), "meta": self.model_meta},
                self.out_dir / FINAL_MODEL_NAME,
            )
        return self.history


#: TrainConfig fields a resumed run may change: where and how fast it runs, not what it learns.
RESUME_MAY_CHANGE = ("device", "amp", "channels_last", "checkpoint_minutes")


def _check_same_training(saved: dict[str, Any] | None, config: TrainConfig, path: Path) -> None:
    """A resumed run keeps the checkpoint's optimizer and LR schedule (its saved state and
    optimizer groups would silently win over new values) and, under the cosine schedule, its
    epochs (a new count would not stretch the schedule; the other schedules do not depend on
    it, so a run may be extended): :class:`UserError` naming what differs."""
    if not saved:
        return
    current = asdict(config)
    free = RESUME_MAY_CHANGE + (() if config.schedule == "cosine" else ("epochs",))
    changed = [f"{key} {saved[key]!r} -> {current[key]!r}" for key in current
               if key in saved and key not in free and saved[key] != current[key]]
    if changed:
        raise UserError(
            f"cannot resume from '{path}' with other training options ({', '.join(changed)}): "
            "resume with the options it was started with, or start a new run in a new --out "
            "directory (give its checkpoint.pt as --weights to go on from where it stopped)"
        )


def channels_last_safe(model: nn.Module) -> bool:
    """Whether training ``model`` in channels-last memory format is safe with this torch.

    torch 2.13's CPU backward of a strided 1x1 convolution with fewer than 8 input channels per
    group corrupts memory in channels-last format (heap errors or wrong results, most often at
    one thread); thinning makes such layers (a ResNet's downsample shortcut left with a few
    channels). Models holding one train in the default format instead.

    >>> from torch import nn
    >>> channels_last_safe(nn.Conv2d(5, 16, 1, stride=2)), channels_last_safe(nn.Conv2d(5, 16, 3))
    (False, True)
    """
    for module in model.modules():
        if (isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1)
                and module.stride != (1, 1) and module.in_channels // module.groups < 8):
            return False
    return True


def _module_device(model: nn.Module) -> torch.device:
    """Where the model's first parameter (or buffer) lives; the CPU for an empty model."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _is_tensor(value: Any, dim: int) -> bool:
    return isinstance(value, torch.Tensor) and value.dim() == dim


def _is_classification(outputs: Any, targets: Any) -> bool:
    """Class scores ``(N, C)`` for integer labels ``(N,)``."""
    return (
        _is_tensor(outputs, 2) and _is_tensor(targets, 1)
        and not targets.is_floating_point() and len(outputs) == len(targets)
    )


def _batch_size(inputs: Any, targets: Any) -> int:
    for value in (targets, inputs):
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return value.shape[0]
    return len(targets)


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    return type(value).__name__
