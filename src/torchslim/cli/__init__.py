"""The ``torchslim`` command: a thin layer over the Python API, one module per command group.

Every subcommand takes ``--json`` to print one JSON object as the last line of its output.
A user's mistake ends with one line on stderr and exit code 2.

Example::

    >>> from torchslim.cli import main
    >>> main(["summary", "--model", "demo_cnn", "--quiet"])
    0
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .. import __version__
from ..core.errors import UserError
from . import bench, compress, demo, distill, models, quantize, sensitivity, train
from .common import emit_json

#: The command groups, in the order ``--help`` lists them.
GROUPS = (models, train, compress, distill, quantize, sensitivity, bench, demo)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="torchslim",
        description="Make trained PyTorch models smaller and faster, with measured numbers.",
    )
    parser.add_argument("--version", action="version", version=f"torchslim {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``torchslim`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        args.handler(args, emit_json)
    except UserError as err:
        print(f"torchslim {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"torchslim {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0
