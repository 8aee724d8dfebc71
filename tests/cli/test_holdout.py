"""Steps that act on the epoch's validation numbers (ReduceLROnPlateau) learn from images held
out of the training split (--holdout), never from the test split."""

import csv

import pytest
import torch

from torchslim.cli import main as cli_main
from torchslim.core.errors import UserError
from torchslim.data import ArrayDataset, BatchLoader, load_digits
from torchslim.models import create_model
from torchslim.pipelines.compress import compress
from torchslim.recipe import parse_recipe
from torchslim.train import TrainConfig

PLATEAU = """
lr_schedulers:
  plateau: {class: ReduceLROnPlateau, patience: 0, factor: 0.1}
policies:
  - lr_scheduler: {instance_name: plateau}
    starting_epoch: 0
    ending_epoch: 4
    frequency: 1
"""


def main(args):
    return cli_main([str(a) for a in args])


def test_hold_out_sets_aside_a_seeded_fraction_of_every_class():
    labels = torch.tensor([0] * 20 + [1] * 10)
    ds = ArrayDataset(torch.arange(30, dtype=torch.uint8).reshape(30, 1, 1, 1).expand(30, 2, 2, 1)
                      .contiguous(), labels, ["a", "b"])
    rest, held = ds.hold_out(0.2, seed=1)
    assert held.labels.tolist().count(0) == 4 and held.labels.tolist().count(1) == 2
    ids = lambda d: set(d.images[:, 0, 0, 0].tolist())  # noqa: E731
    assert ids(rest) | ids(held) == set(range(30)) and not ids(rest) & ids(held)
    assert ids(ds.hold_out(0.2, seed=1)[1]) == ids(held) != ids(ds.hold_out(0.2, seed=2)[1])
    with pytest.raises(UserError, match="leaves nothing to hold out"):
        ds.hold_out(0.01)


def _plateau_run(eval_batches, val_batches):
    torch.manual_seed(0)
    model = create_model("demo_cnn", num_classes=10)
    run = compress(model, parse_recipe(PLATEAU), BatchLoader(load_digits("train"), 64,
                                                             shuffle=True, normalization="digits"),
                   TrainConfig(epochs=4, lr=0.05, schedule="constant", device="cpu"),
                   eval_batches=eval_batches, val_batches=val_batches, num_classes=10,
                   progress=False)
    return run.history, torch.cat([p.detach().flatten() for p in run.model.parameters()])


def test_held_out_numbers_steer_the_schedule_and_the_evaluation_labels_do_not():
    test = list(BatchLoader(load_digits("test"), 256, normalization="digits"))
    relabelled = [(x, y[torch.randperm(len(y), generator=torch.Generator().manual_seed(0))])
                  for x, y in test]
    held = list(BatchLoader(load_digits("train").hold_out(0.2)[1], 256, normalization="digits"))
    history, weights = _plateau_run(test, held)
    other_history, other_weights = _plateau_run(relabelled, held)
    assert [r["lr"] for r in history] == [r["lr"] for r in other_history]
    assert torch.equal(weights, other_weights)
    assert history[-1]["val_top1"] != other_history[-1]["val_top1"]  # evaluated, not used
    assert {"holdout_loss", "holdout_top1", "val_loss", "val_top1"} <= set(history[-1])
    # Without held-out data the evaluation numbers are what the schedule sees.
    assert [r["lr"] for r in _plateau_run(relabelled, None)[0]] != [r["lr"] for r in history]


def test_compress_refuses_to_step_on_the_test_split_and_validates_on_held_out_images(
        tmp_path, capsys):
    recipe = tmp_path / "plateau.yaml"
    recipe.write_text(PLATEAU)
    common = ["compress", "--recipe", recipe, "--model", "demo_cnn", "--data", "digits",
              "--epochs", "2", "--batch-size", "64", "--repeats", "1", "--latency-batch", "8",
              "--quiet"]
    assert main([*common, "--out", tmp_path / "a"]) == 2
    err = capsys.readouterr().err.strip()
    assert "would come from the test split" in err and "--holdout 0.1" in err
    assert len(err.splitlines()) == 1 and not (tmp_path / "a").exists()
    assert main([*common, "--holdout", "0.1", "--out", tmp_path / "b"]) == 0
    with open(tmp_path / "b" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and all(float(r["holdout_top1"]) > 0 for r in rows)


@pytest.mark.parametrize("value", ["0", "1.5", "ten"])
def test_a_bad_holdout_fraction_exits_2(tmp_path, capsys, value):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--model", "demo_cnn", "--data", "digits", "--holdout", value,
              "--out", tmp_path])
    assert exit_.value.code == 2
    assert "--holdout" in capsys.readouterr().err
