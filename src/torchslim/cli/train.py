"""``torchslim train`` (train or fine-tune, resumable) and ``torchslim eval`` (accuracy report)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..data import load_dataset
from ..pipelines.common import build_model, write_eval_outputs
from ..train import Trainer, evaluate, seed_everything
from .common import (
    Emit,
    add_common,
    add_data_args,
    add_model_args,
    add_train_args,
    augmentation,
    load_split,
    make_loader,
    model_meta,
    train_config,
    training_log,
)


def register(sub) -> None:
    p = sub.add_parser("eval", help="top-1/top-5, per-class accuracy and confusion matrix")
    add_model_args(p, weights_required=True)
    add_data_args(p, "test")
    p.add_argument("--out", type=Path, help="also write report.txt, confusion.csv, eval.json here")
    add_common(p)
    p.set_defaults(handler=run_eval)

    p = sub.add_parser("train", help="train or fine-tune a classifier, with resumable checkpoints")
    add_model_args(p)
    add_data_args(p, "train")
    add_train_args(p, Path("runs/train"), schedule_default="cosine")
    add_common(p)
    p.set_defaults(handler=run_train)


def run_eval(args: argparse.Namespace, emit: Emit) -> None:
    dataset = load_split(args, args.split)
    model, spec = build_model(args.model, args.weights, dataset.num_classes)
    result = evaluate(
        model, make_loader(args, spec, dataset), dataset.num_classes, dataset.classes,
        progress=not args.quiet,
    )
    if not args.quiet:
        print(result.format_report())
    payload = {"model": args.model, "weights": args.weights, "split": args.split,
               **result.to_dict()}
    if args.out is not None:
        write_eval_outputs(result, payload, args.out)
    emit(args, payload)


def run_train(args: argparse.Namespace, emit: Emit) -> None:
    train_set = load_split(args, args.split)
    eval_set = load_dataset(args.data, args.eval_split, progress=not args.quiet)
    seed_everything(args.seed)
    model, spec = build_model(args.model, args.weights, train_set.num_classes)
    config = train_config(args, args.schedule)
    train_batches = make_loader(args, spec, train_set, train=True)
    if not args.quiet:
        print(f"torchslim train: {training_log(args, config, train_set)}")
    trainer = Trainer(
        model,
        train_batches,
        config,
        eval_batches=make_loader(args, spec, eval_set),
        num_classes=train_set.num_classes,
        out_dir=args.out,
        progress=not args.quiet,
        model_meta=model_meta(args, train_set),
    )
    history = trainer.fit(resume=args.resume)
    last = history[-1]
    emit(args, {
        "epochs": len(history),
        "top1": last.get("val_top1"),
        "top5": last.get("val_top5"),
        "train_loss": last["train_loss"],
        "lr": config.lr,
        "augmentation": augmentation(args, train_set)[0],
        "device": str(trainer.device),
        "amp": trainer.amp,
        "checkpoint": str(trainer.checkpoint_path),
        "model_path": str(args.out / "model.pt"),
        "history": history,
    })
