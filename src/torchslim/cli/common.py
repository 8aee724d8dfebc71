"""Argument types and options shared by the subcommands, and the translation of parsed options
into the objects of the Python API.

Example::

    >>> from torchslim.cli.common import positive_int
    >>> positive_int("8")
    8
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..core.errors import UserError
from ..data import ArrayDataset, BatchLoader, load_dataset
from ..models import ModelSpec, thinning_records
from ..train import TrainConfig

Emit = Callable[[argparse.Namespace, dict[str, Any]], None]


def emit_json(args: argparse.Namespace, payload: dict[str, Any]) -> None:
    """Print ``payload`` as one JSON line when ``--json`` was given."""
    if args.json:
        print(json.dumps(payload, sort_keys=False))


# -- argument types -----------------------------------------------------------------------------
def shape(text: str) -> tuple[int, ...]:
    """``"3,32,32"`` -> ``(3, 32, 32)``."""
    try:
        dims = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"bad shape '{text}': write it as C,H,W, e.g. 3,32,32"
        ) from None
    if not dims or any(d < 1 for d in dims):
        raise argparse.ArgumentTypeError(f"bad shape '{text}': dimensions must be positive")
    return dims


def positive_int(text: str) -> int:
    """A whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def levels(text: str) -> list[float]:
    """``"0.1,0.5"`` -> ``[0.1, 0.5]``, each in [0, 1)."""
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"bad levels '{text}': write them as 0.1,0.5,0.9"
        ) from None
    if not values or any(not 0 <= level < 1 for level in values):
        raise argparse.ArgumentTypeError(f"bad levels '{text}': each must be in [0, 1)")
    return values


# -- shared options -----------------------------------------------------------------------------
def add_model_args(parser: argparse.ArgumentParser, weights_required: bool = False) -> None:
    parser.add_argument(
        "--model", required=True,
        help="zoo name (see 'torchslim models') or your factory as package.module:function",
    )
    parser.add_argument(
        "--weights", required=weights_required,
        help="checkpoint: a state_dict, or a dict holding one under 'state_dict' or 'model'",
    )


def add_data_args(parser: argparse.ArgumentParser, split: str) -> None:
    parser.add_argument(
        "--data", required=True,
        help="'digits', or a directory / .tar.gz laid out as <split>/<class>/<image>",
    )
    parser.add_argument("--split", default=split, help=f"split to use (default: {split})")
    parser.add_argument(
        "--normalization", default=None,
        help="normalisation preset (default: the model's own, e.g. 'cifar')",
    )
    parser.add_argument("--batch-size", type=positive_int, default=256,
                        help="samples per batch (default: 256)")
    parser.add_argument(
        "--limit", type=positive_int, default=None,
        help="use N images drawn at random (seeded) from the split",
    )


def add_train_args(
    parser: argparse.ArgumentParser, out: Path, schedule_default: str | None
) -> None:
    parser.add_argument("--eval-split", default="test",
                        help="split evaluated after every epoch (default: test)")
    parser.add_argument("--epochs", type=positive_int, default=1, help="(default: 1)")
    parser.add_argument("--optimizer", default="sgd", choices=["sgd", "adamw"],
                        help="(default: sgd)")
    parser.add_argument("--lr", type=float, default=0.1, help="learning rate (default: 0.1)")
    parser.add_argument("--momentum", type=float, default=0.9, help="(default: 0.9)")
    parser.add_argument("--weight-decay", type=float, default=5e-4, help="(default: 5e-4)")
    parser.add_argument(
        "--schedule", default=schedule_default,
        choices=["constant", "step", "multistep", "cosine"],
        help="per-epoch LR schedule (compress: 'constant' when the recipe schedules the LR, "
        "else 'cosine')" if schedule_default is None else
        f"per-epoch LR schedule (default: {schedule_default})",
    )
    parser.add_argument("--step-size", type=positive_int, default=30, help="(default: 30)")
    parser.add_argument("--milestones", type=int, nargs="+", default=[])
    parser.add_argument("--gamma", type=float, default=0.1, help="(default: 0.1)")
    parser.add_argument("--seed", type=int, default=0, help="(default: 0)")
    parser.add_argument("--no-augment", action="store_true", help="no random crop / flip")
    parser.add_argument(
        "--channels-last", action=argparse.BooleanOptionalAction, default=True,
        help="train 4-D inputs in channels-last memory format (faster convolutions on CPU; "
        "the saved weights are the same either way)",
    )
    parser.add_argument("--out", type=Path, default=out, help=f"(default: {out})")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    parser.add_argument("--quiet", action="store_true", help="print no tables or progress")


# -- from options to objects --------------------------------------------------------------------
def input_shape(spec: ModelSpec, dataset: ArrayDataset | None, given=None) -> tuple[int, ...]:
    """The given shape, else the data's, else the model's own."""
    chosen = given or (dataset.image_shape if dataset is not None else spec.input_shape)
    if not chosen:
        raise UserError(f"model '{spec.name}' has no default input shape: pass --input-shape C,H,W")
    return tuple(chosen)


def load_split(args: argparse.Namespace, split: str) -> ArrayDataset:
    """The ``split`` of ``--data``, subsampled to ``--limit`` images."""
    dataset = load_dataset(args.data, split, progress=not args.quiet)
    if args.limit is not None:
        dataset = dataset.subset(args.limit)
    return dataset


def make_loader(
    args: argparse.Namespace, spec: ModelSpec, dataset: ArrayDataset, train: bool = False
) -> BatchLoader:
    """Batches of ``dataset``: shuffled and augmented for training."""
    return BatchLoader(
        dataset,
        args.batch_size,
        shuffle=train,
        augment=train and not getattr(args, "no_augment", False),
        normalization=args.normalization or spec.normalization,
        seed=getattr(args, "seed", 0),
    )


def model_meta(args: argparse.Namespace, train_set: ArrayDataset) -> dict[str, Any]:
    """What a saved model needs beside its weights: name, classes and, for a thinned input
    model, its thinning records (so the output reloads into a fresh model)."""
    thinning = thinning_records(args.weights) if args.weights else []
    return {"model": args.model, "classes": train_set.classes, "thinning": thinning}


def train_config(args: argparse.Namespace, schedule: str) -> TrainConfig:
    """The :class:`TrainConfig` the training options describe."""
    return TrainConfig(
        epochs=args.epochs, optimizer=args.optimizer, lr=args.lr, momentum=args.momentum,
        weight_decay=args.weight_decay, schedule=schedule, step_size=args.step_size,
        milestones=list(args.milestones), gamma=args.gamma, seed=args.seed,
        channels_last=args.channels_last,
    )
