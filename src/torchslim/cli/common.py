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
from ..data import AUGMENTATIONS, NORMALIZATION, ArrayDataset, BatchLoader, load_dataset
from ..data.load import BUILTIN_DATASETS
from ..models import ModelSpec, edit_records
from ..train import DEVICES, TrainConfig, resolve_device

#: ``--lr`` when it is not given: fine-tuning (``--weights``) and training from scratch.
FINETUNE_LR = 0.01
SCRATCH_LR = 0.1

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


def open_fraction(text: str) -> float:
    """A number strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction such as 0.1, got '{text}'") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1, got {value:g}")
    return value


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
        help="normalisation preset: " + ", ".join(NORMALIZATION) + " (default: the model's "
        "own, e.g. 'cifar' for torchslim's CIFAR ResNets, 'distiller_cifar' for Distiller's)",
    )
    parser.add_argument("--batch-size", type=positive_int, default=256,
                        help="samples per batch (default: 256)")
    parser.add_argument(
        "--limit", type=positive_int, default=None,
        help="use N images drawn at random (seeded) from the split",
    )
    parser.add_argument(
        "--classes", type=class_list, default=None, metavar="A,B,...",
        help="use only these classes, relabelled in this order (e.g. cat,dog); default: all",
    )


def add_train_args(
    parser: argparse.ArgumentParser, out: Path, schedule_default: str | None
) -> None:
    parser.add_argument("--eval-split", default="test",
                        help="split evaluated after every epoch (default: test)")
    parser.add_argument(
        "--holdout", type=open_fraction, default=None, metavar="F",
        help="set aside F of every class of the training split (seeded by --seed) and "
        "validate on it after every epoch: a recipe's ReduceLROnPlateau steps on these "
        "numbers, never on the test split's (Distiller's --validation-split; default: none)",
    )
    parser.add_argument("--epochs", type=positive_int, default=1, help="(default: 1)")
    parser.add_argument("--optimizer", default="sgd", choices=["sgd", "adamw"],
                        help="(default: sgd)")
    parser.add_argument(
        "--lr", type=float, default=None,
        help=f"learning rate (default: {FINETUNE_LR} with --weights, i.e. fine-tuning; "
        f"{SCRATCH_LR} when training from scratch)",
    )
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
    parser.add_argument("--milestones", type=int, nargs="+", default=[],
                        help="epochs at which the multistep schedule multiplies the LR by "
                        "--gamma (default: none)")
    parser.add_argument("--gamma", type=float, default=0.1, help="(default: 0.1)")
    parser.add_argument("--seed", type=int, default=0, help="(default: 0)")
    parser.add_argument(
        "--augment", default="auto", choices=["auto", *AUGMENTATIONS],
        help="training augmentation (default: auto = the data set's own: crop-flip, i.e. "
        "random crop after 4-pixel padding and horizontal flip, for image folders and "
        ".tar.gz archives; none for digits)",
    )
    # Before --augment existed: kept for old scripts, same as --augment none.
    parser.add_argument("--no-augment", dest="augment", action="store_const", const="none",
                        help=argparse.SUPPRESS)
    parser.add_argument(
        "--device", default="auto", choices=list(DEVICES),
        help="where to train (default: auto = cuda when a CUDA GPU is available, else cpu)",
    )
    parser.add_argument(
        "--amp", action=argparse.BooleanOptionalAction, default=None,
        help="float16 mixed precision (autocast and loss scaling) while training (default: on "
        "when training on cuda, off on cpu, where it is not available)",
    )
    parser.add_argument(
        "--channels-last", action=argparse.BooleanOptionalAction, default=True,
        help="train 4-D inputs in channels-last memory format (faster convolutions on CPU; "
        "the saved weights are the same either way; default: on)",
    )
    parser.add_argument("--out", type=Path, default=out, help=f"(default: {out})")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    parser.add_argument(
        "--checkpoint-minutes", type=float, default=10.0, metavar="M",
        help="also write OUT/checkpoint.pt within an epoch every M minutes, so that --resume "
        "after a crash loses minutes, not an epoch (0: after every epoch only; default: 10)",
    )


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


def class_list(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("give class names separated by commas, e.g. cat,dog")
    return names


def training_splits(args: argparse.Namespace) -> tuple[ArrayDataset, ArrayDataset | None]:
    """The training split (``--split``, ``--classes``, ``--limit``) and, with ``--holdout``,
    the images held out of it for validation."""
    train_set = load_split(args, args.split)
    if getattr(args, "holdout", None) is None:
        return train_set, None
    return train_set.hold_out(args.holdout, seed=args.seed)


def check_metric_users(schedule: Any, args: argparse.Namespace) -> None:
    """Steps that act on the epoch's validation numbers (``ReduceLROnPlateau``) need them from
    images held out of the training split, not from the test split."""
    users = schedule.metric_users()
    if users and getattr(args, "holdout", None) is None and args.eval_split == "test":
        raise UserError(
            f"'{users[0]}' acts on the validation numbers of every epoch, which would come "
            "from the test split (the test labels would steer training): add --holdout 0.1 "
            "to validate on a tenth of the training images instead"
        )


def load_split(args: argparse.Namespace, split: str, limit: bool = True) -> ArrayDataset:
    """The ``split`` of ``--data``, only the ``--classes`` asked for, subsampled to ``--limit``
    images (unless ``limit`` is False: evaluation splits are not subsampled)."""
    dataset = load_dataset(args.data, split, progress=not args.quiet)
    if getattr(args, "classes", None):
        dataset = dataset.select_classes(args.classes)
    if limit and args.limit is not None:
        dataset = dataset.subset(args.limit)
    return dataset


def make_loader(
    args: argparse.Namespace, spec: ModelSpec, dataset: ArrayDataset, train: bool = False
) -> BatchLoader:
    """Batches of ``dataset``: shuffled and augmented (``--augment``) for training."""
    return BatchLoader(
        dataset,
        args.batch_size,
        shuffle=train,
        augment=augmentation(args, dataset)[0] if train else "none",
        normalization=args.normalization or spec.normalization,
        seed=getattr(args, "seed", 0),
    )


def augmentation(args: argparse.Namespace, dataset: ArrayDataset) -> tuple[str, str]:
    """The training augmentation ``--augment`` asks for, and why: ``auto`` (or no such option)
    is the data set's own.

    Example::

        >>> import argparse
        >>> from torchslim.data import load_digits
        >>> augmentation(argparse.Namespace(augment="auto", data="digits"), load_digits("test"))
        ('none', 'the default for digits')
    """
    chosen = getattr(args, "augment", "auto")
    if chosen != "auto":
        return chosen, "--augment"
    data = getattr(args, "data", None)
    source = data if data in BUILTIN_DATASETS else "image folders"
    return dataset.augmentation, f"the default for {source}"


def learning_rate(args: argparse.Namespace) -> tuple[float, str]:
    """``--lr``, else the default for fine-tuning (``--weights``) or training from scratch,
    and why.

    Example::

        >>> import argparse
        >>> learning_rate(argparse.Namespace(lr=None, weights="model.pt"))
        (0.01, 'the default for fine-tuning --weights')
    """
    if args.lr is not None:
        return args.lr, "--lr"
    if getattr(args, "weights", None):
        return FINETUNE_LR, "the default for fine-tuning --weights"
    return SCRATCH_LR, "the default when training from scratch"


def training_log(args: argparse.Namespace, config: TrainConfig, train_set: ArrayDataset) -> str:
    """One line saying how training runs and where each choice came from (for the run's log).

    Example::

        >>> import argparse
        >>> from torchslim.data import load_digits
        >>> args = argparse.Namespace(lr=None, weights=None, augment="auto", data="digits")
        >>> line = training_log(args, TrainConfig(device="cpu"), load_digits("test"))
        >>> print(line)  # doctest: +NORMALIZE_WHITESPACE
        lr: 0.1 (the default when training from scratch), augmentation: none (the default for
        digits), device: cpu, mixed precision: off
    """
    lr, lr_why = learning_rate(args)
    augment, augment_why = augmentation(args, train_set)
    device = resolve_device(config.device)
    device_text = f"{device}" + (" (auto)" if config.device == "auto" else "")
    amp = "on" if config.resolve_amp(device) else "off"
    held = getattr(args, "holdout", None)
    return (f"lr: {config.lr:g} ({lr_why}), augmentation: {augment} ({augment_why}), "
            f"device: {device_text}, mixed precision: {amp}"
            + (f", validation: {held:g} of the training images held out (--holdout)"
               if held else ""))


def model_meta(args: argparse.Namespace, train_set: ArrayDataset,
               spec: ModelSpec) -> dict[str, Any]:
    """What a saved model needs beside its weights: name, classes, the normalisation it was
    trained with and, for an input model whose architecture was edited (thinned), its edit
    records (so the output reloads into a fresh model)."""
    edits = edit_records(args.weights) if args.weights else []
    return {"model": args.model, "classes": train_set.classes, "edits": edits,
            "normalization": args.normalization or spec.normalization}


def train_config(args: argparse.Namespace, schedule: str) -> TrainConfig:
    """The :class:`TrainConfig` the training options describe (``--lr`` resolved by
    :func:`learning_rate`)."""
    return TrainConfig(
        epochs=args.epochs, optimizer=args.optimizer, lr=learning_rate(args)[0],
        momentum=args.momentum, weight_decay=args.weight_decay, schedule=schedule,
        step_size=args.step_size, milestones=list(args.milestones), gamma=args.gamma,
        seed=args.seed, channels_last=args.channels_last,
        device=getattr(args, "device", "auto"), amp=getattr(args, "amp", None),
        checkpoint_minutes=args.checkpoint_minutes,
    )
