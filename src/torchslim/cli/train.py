"""``torchslim train`` (train or fine-tune, resumable) and ``torchslim eval`` (accuracy report)."""

from __future__ import annotations

import argparse
from pathlib import Path

from torch import nn

from ..core.errors import UserError
from ..models.checkpoint import checkpoint_meta, saved_classes
from ..pipelines.common import build_model, check_same_classes, write_eval_outputs
from ..schedule import CompressionScheduler, Policy
from ..train import Trainer, evaluate, seed_everything
from ..transfer import Freeze, Unfreeze, replace_head
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
    training_splits,
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
    transfer = p.add_argument_group("transfer learning (a pretrained model, a new task)")
    transfer.add_argument(
        "--new-head", action="store_true",
        help="load --weights, then replace the classifier (the last Linear) with a new one for "
        "the data's classes (e.g. with --classes cat,dog); the saved model reloads fresh",
    )
    transfer.add_argument(
        "--freeze-backbone", action="store_true",
        help="train only the classifier: every other layer frozen (BatchNorm statistics too)",
    )
    transfer.add_argument(
        "--unfreeze-epoch", type=int, default=None, metavar="N",
        help="with --freeze-backbone: fine-tune every layer from epoch N (0-based) on "
        "(default: frozen throughout)",
    )
    add_common(p)
    p.set_defaults(handler=run_train)


def run_eval(args: argparse.Namespace, emit: Emit) -> None:
    dataset = load_split(args, args.split)
    model, spec = build_model(args.model, args.weights, dataset.num_classes, dataset.classes,
                              dataset.image_shape)
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


def _transfer(args: argparse.Namespace, model, meta: dict) -> list:
    """The new head (recorded in ``meta``) and the freezing schedule the options ask for."""
    head = None
    if args.new_head:
        record = replace_head(model, len(meta["classes"]))
        meta["edits"] = [*meta.get("edits", []), record]
        head = record["layer"]
    if args.unfreeze_epoch is not None and not args.freeze_backbone:
        raise UserError("--unfreeze-epoch needs --freeze-backbone (what would it unfreeze?)")
    if not args.freeze_backbone:
        return []
    if args.unfreeze_epoch is not None and not 0 < args.unfreeze_epoch < args.epochs:
        raise UserError(f"--unfreeze-epoch must be between 1 and {args.epochs - 1} (the last "
                        f"epoch), got {args.unfreeze_epoch}")
    schedule = CompressionScheduler(model)
    schedule.add(Freeze(["*"], exclude=[head or _last_linear(model)]), Policy(epochs=[0]),
                 "freeze_backbone")
    if args.unfreeze_epoch is not None:
        schedule.add(Unfreeze(["*"]), Policy(epochs=[args.unfreeze_epoch]), "unfreeze")
    return [schedule]


def _last_linear(model) -> str:
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise UserError("--freeze-backbone keeps the classifier training, but the model has no "
                        "Linear layer")
    return linears[-1]


def run_train(args: argparse.Namespace, emit: Emit) -> None:
    if args.new_head and not args.weights:
        raise UserError("--new-head replaces the classifier of a pretrained model: give its "
                        "--weights")
    train_set, held_set = training_splits(args)
    eval_set = load_split(args, args.eval_split, limit=False)
    check_same_classes(train_set, eval_set, f"{args.split} and {args.eval_split}")
    seed_everything(args.seed)
    if args.new_head:  # the pretrained head first: as many classes as the file says
        saved = saved_classes(checkpoint_meta(args.weights))
        model, spec = build_model(args.model, args.weights, len(saved) if saved else None)
    else:
        model, spec = build_model(args.model, args.weights, train_set.num_classes,
                                  train_set.classes, train_set.image_shape)
    meta = model_meta(args, train_set, spec)
    callbacks = _transfer(args, model, meta)
    config = train_config(args, args.schedule)
    train_batches = make_loader(args, spec, train_set, train=True)
    if not args.quiet:
        print(f"torchslim train: {training_log(args, config, train_set)}")
    trainer = Trainer(
        model,
        train_batches,
        config,
        eval_batches=make_loader(args, spec, eval_set),
        val_batches=make_loader(args, spec, held_set) if held_set is not None else None,
        num_classes=train_set.num_classes,
        out_dir=args.out,
        progress=not args.quiet,
        model_meta=meta,
        callbacks=callbacks,
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
