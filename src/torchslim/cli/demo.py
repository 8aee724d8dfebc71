"""``torchslim demo``: the main job on the bundled digits (train, evaluate, compress, bench)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..pipelines.demo import run_demo as demo
from .common import Emit, add_common, positive_int


def register(sub) -> None:
    p = sub.add_parser("demo", help="the main job: train, evaluate and benchmark on digits")
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="(default: runs/demo)")
    p.add_argument("--epochs", type=positive_int, default=30,
                   help="epochs of dense training (default: 30)")
    add_common(p)
    p.set_defaults(handler=run_demo)


def run_demo(args: argparse.Namespace, emit: Emit) -> None:
    emit(args, demo(args.out, epochs=args.epochs, quiet=args.quiet))
