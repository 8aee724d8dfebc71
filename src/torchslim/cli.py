"""The ``torchslim`` command: a thin layer over the Python API.

Every subcommand takes ``--json`` to print one JSON object as the last line of its output.
A user's mistake ends with one line on stderr and exit code 2.

Example::

    >>> from torchslim.cli import main
    >>> main(["summary", "--model", "demo_cnn", "--quiet"])
    0
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .errors import UserError


def _emit_json(args: argparse.Namespace, payload: dict[str, Any]) -> None:
    if args.json:
        print(json.dumps(payload, sort_keys=False))


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"bad shape '{text}': write it as C,H,W, e.g. 3,32,32"
        ) from None
    if not shape or any(d < 1 for d in shape):
        raise argparse.ArgumentTypeError(f"bad shape '{text}': dimensions must be positive")
    return shape


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _levels(text: str) -> list[float]:
    try:
        levels = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"bad levels '{text}': write them as 0.1,0.5,0.9"
        ) from None
    if not levels or any(not 0 <= level < 1 for level in levels):
        raise argparse.ArgumentTypeError(f"bad levels '{text}': each must be in [0, 1)")
    return levels


def _add_model_args(parser: argparse.ArgumentParser, weights_required: bool = False) -> None:
    parser.add_argument(
        "--model", required=True,
        help="zoo name (see 'torchslim models') or your factory as package.module:function",
    )
    parser.add_argument(
        "--weights", required=weights_required,
        help="checkpoint: a state_dict, or a dict holding one under 'state_dict' or 'model'",
    )


def _add_data_args(parser: argparse.ArgumentParser, split: str) -> None:
    parser.add_argument(
        "--data", required=True,
        help="'digits', or a directory / .tar.gz laid out as <split>/<class>/<image>",
    )
    parser.add_argument("--split", default=split, help=f"split to use (default: {split})")
    parser.add_argument(
        "--normalization", default=None,
        help="normalisation preset (default: the model's own, e.g. 'cifar')",
    )
    parser.add_argument("--batch-size", type=_positive_int, default=256)
    parser.add_argument(
        "--limit", type=_positive_int, default=None,
        help="use N images drawn at random (seeded) from the split",
    )


def _add_train_args(
    parser: argparse.ArgumentParser, out: Path, schedule_default: str | None
) -> None:
    parser.add_argument("--eval-split", default="test", help="split evaluated after every epoch")
    parser.add_argument("--epochs", type=_positive_int, default=1)
    parser.add_argument("--optimizer", default="sgd", choices=["sgd", "adamw"])
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument(
        "--schedule", default=schedule_default,
        choices=["constant", "step", "multistep", "cosine"],
        help="per-epoch LR schedule (compress: 'constant' when the recipe schedules the LR, "
        "else 'cosine')",
    )
    parser.add_argument("--step-size", type=_positive_int, default=30)
    parser.add_argument("--milestones", type=int, nargs="+", default=[])
    parser.add_argument("--gamma", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-augment", action="store_true", help="no random crop / flip")
    parser.add_argument(
        "--channels-last", action=argparse.BooleanOptionalAction, default=True,
        help="train 4-D inputs in channels-last memory format (faster convolutions on CPU; "
        "the saved weights are the same either way)",
    )
    parser.add_argument("--out", type=Path, default=out)
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    parser.add_argument("--quiet", action="store_true", help="print no tables or progress")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="torchslim",
        description="Make trained PyTorch models smaller and faster, with measured numbers.",
    )
    parser.add_argument("--version", action="version", version=f"torchslim {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("models", help="list the model zoo")
    _add_common(p)

    p = sub.add_parser("summary", help="per-layer params, sparsity and MACs of a model")
    _add_model_args(p)
    p.add_argument("--input-shape", type=_shape, help="C,H,W (default: the model's own)")
    p.add_argument("--num-classes", type=_positive_int, default=None)
    _add_common(p)

    p = sub.add_parser("eval", help="top-1/top-5, per-class accuracy and confusion matrix")
    _add_model_args(p, weights_required=True)
    _add_data_args(p, "test")
    p.add_argument("--out", type=Path, help="also write report.txt, confusion.csv, eval.json here")
    _add_common(p)

    p = sub.add_parser("train", help="train or fine-tune a classifier, with resumable checkpoints")
    _add_model_args(p)
    _add_data_args(p, "train")
    _add_train_args(p, Path("runs/train"), schedule_default="cosine")
    _add_common(p)

    p = sub.add_parser(
        "compress", help="fine-tune under a YAML compression schedule (Distiller's format works)"
    )
    p.add_argument("--recipe", required=True, type=Path, help="the YAML compression schedule")
    _add_model_args(p)
    _add_data_args(p, "train")
    _add_train_args(p, Path("runs/compress"), schedule_default=None)
    p.add_argument("--latency-batch", type=_positive_int, default=256, help="the large batch")
    p.add_argument("--repeats", type=_positive_int, default=20, help="latency repeats")
    _add_common(p)

    p = sub.add_parser(
        "sensitivity", help="prune one layer at a time at several levels, evaluate each (plot)"
    )
    _add_model_args(p, weights_required=True)
    _add_data_args(p, "test")
    p.add_argument(
        "--levels", type=_levels, default=[round(0.1 * i, 1) for i in range(1, 10)],
        help="comma-separated sparsity levels (default: 0.1,0.2,...,0.9)",
    )
    p.add_argument(
        "--granularity", nargs="+", default=["element"],
        choices=["element", "filter", "channel", "group"],
        help="prune single weights, whole filters, whole input channels, or coupled channel "
        "groups as structured pruning does (several allowed)",
    )
    p.add_argument(
        "--layers", nargs="+", default=None, metavar="PATTERN",
        help="weights to analyse: names, globs or regexes (default: every conv and linear weight)",
    )
    p.add_argument("--out", type=Path, default=Path("runs/sensitivity"))
    _add_common(p)

    p = sub.add_parser("bench", help="one table: accuracy, size, MACs, latency, memory per model")
    p.add_argument(
        "--model", dest="models", action="append", required=True, metavar="NAME[=WEIGHTS]",
        help="a model to measure, with its checkpoint; repeat for more rows",
    )
    _add_data_args(p, "test")
    p.add_argument("--latency-batch", type=_positive_int, default=256, help="the large batch")
    p.add_argument("--threads", type=_positive_int, default=None, help="torch threads to time")
    p.add_argument("--repeats", type=_positive_int, default=20)
    p.add_argument("--out", type=Path, default=Path("runs/bench"))
    p.add_argument("--stem", default="bench", help="file names: STEM.md, STEM.csv, STEM.json")
    _add_common(p)

    p = sub.add_parser("demo", help="the main job: train, evaluate and benchmark on digits")
    p.add_argument("--out", type=Path, default=Path("runs/demo"))
    p.add_argument("--epochs", type=_positive_int, default=30)
    _add_common(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``torchslim`` console script; returns the exit code."""
    from . import commands

    args = build_parser().parse_args(argv)
    handler = getattr(commands, f"run_{args.command}")
    try:
        handler(args, _emit_json)
    except UserError as err:
        print(f"torchslim {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"torchslim {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
