"""Data that does not fit the model or the other split: one clear line and exit code 2, never
labels read in another order."""

import json
from pathlib import Path

import pytest
import torch

from tests.data.test_data import make_tree
from torchslim.cli import main as cli_main
from torchslim.models import create_model

QUICK = ["--epochs", "1", "--batch-size", "32", "--quiet"]


def main(args):
    return cli_main([str(a) for a in args])


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_splits_with_different_classes_are_refused(tmp_path, capsys):
    make_tree(tmp_path / "d", {"train": {"a": 4, "b": 4, "c": 4}, "test": {"a": 2, "c": 2}},
              size=(8, 8), mode="L")
    for command in (["train"], ["compress", "--recipe", "demo_agp"]):
        assert main([*command, "--model", "demo_cnn", "--data", tmp_path / "d",
                     "--out", tmp_path / "run", *QUICK]) == 2
        assert "the train and test splits have different classes (b in one only)" in \
            _one_line_error(capsys)


@pytest.fixture(scope="module")
def binary_model(tmp_path_factory) -> Path:
    """demo_cnn trained a little on the digits 0 and 1 (its file records the classes)."""
    out = tmp_path_factory.mktemp("binary")
    assert main(["train", "--model", "demo_cnn", "--data", "digits", "--classes", "0,1",
                 "--limit", "64", "--out", out, *QUICK]) == 0
    return out / "model.pt"


def test_a_model_evaluated_on_its_classes_in_another_order_is_refused(binary_model, capsys):
    assert main(["eval", "--model", "demo_cnn", "--weights", binary_model, "--data", "digits",
                 "--classes", "1,0", "--quiet"]) == 2
    err = _one_line_error(capsys)
    assert "was trained on the classes [0, 1], the data has [1, 0]" in err
    assert "--classes 0,1" in err
    assert main(["eval", "--model", "demo_cnn", "--weights", binary_model, "--data", "digits",
                 "--classes", "0,1", "--quiet"]) == 0


def test_a_model_made_for_other_images_is_one_line(tmp_path, capsys):
    make_tree(tmp_path / "d", {"train": {"a": 2, "b": 2}, "test": {"a": 2, "b": 2}},
              size=(32, 32), mode="RGB")
    weights = tmp_path / "lenet5.pt"
    torch.save(create_model("lenet5", num_classes=2).state_dict(), weights)
    for command in (["eval", "--weights", weights],
                    ["train", "--out", tmp_path / "run", "--epochs", "1"]):
        assert main([*command, "--model", "lenet5", "--data", tmp_path / "d", "--quiet"]) == 2
        assert "model 'lenet5' cannot run on the data's images of shape (3, 32, 32)" in \
            _one_line_error(capsys)


def test_a_student_or_a_new_head_keeps_the_classes_of_its_weights(binary_model, tmp_path):
    assert main(["distill", "--model", "demo_cnn", "--weights", binary_model,
                 "--teacher", "demo_cnn", "--teacher-weights", binary_model, "--data", "digits",
                 "--classes", "0,1", "--limit", "64", "--repeats", "1", "--latency-batch", "8",
                 "--out", tmp_path / "kd", *QUICK]) == 0
    assert main(["train", "--model", "demo_cnn", "--weights", binary_model, "--new-head",
                 "--data", "digits", "--classes", "2,3,4", "--limit", "64",
                 "--out", tmp_path / "head", *QUICK]) == 0


def test_an_input_file_with_optimizer_state_counts_as_its_weights(binary_model, tmp_path,
                                                                  capsys):
    # A training checkpoint also holds the optimizer's momentum: its size on disk is not the
    # model's, and the compressed row beside it would look twice as small.
    checkpoint = binary_model.parent / "checkpoint.pt"
    assert checkpoint.stat().st_size > 1.5 * binary_model.stat().st_size
    assert main(["bench", "--model", f"demo_cnn={checkpoint}", "--model",
                 f"demo_cnn={binary_model}", "--data", "digits", "--classes", "0,1",
                 "--repeats", "1", "--latency-batch", "8", "--out", tmp_path, "--json",
                 "--quiet"]) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["rows"]
    assert rows[0]["file_bytes"] == rows[1]["file_bytes"]


def test_a_saved_model_is_evaluated_with_the_normalization_it_was_trained_with(binary_model,
                                                                               tmp_path):
    from torchslim.models.checkpoint import checkpoint_meta, saved_normalization
    from torchslim.pipelines.common import build_model

    assert saved_normalization(checkpoint_meta(binary_model)) == "digits"
    # trained under a preset other than the model's default: the file says which
    assert main(["train", "--model", "demo_cnn", "--data", "digits", "--classes", "0,1",
                 "--limit", "64", "--normalization", "none", "--out", tmp_path / "n",
                 *QUICK]) == 0
    _, spec = build_model("demo_cnn", str(tmp_path / "n" / "model.pt"), 2)
    assert spec.normalization == "none"
    # a torchslim file from before the preset was recorded keeps the default of its time
    state = torch.load(binary_model, weights_only=True)
    state["meta"] = {"model": "resnet20_cifar", "classes": ["0", "1"]}
    torch.save(state, tmp_path / "old.pt")
    assert saved_normalization(checkpoint_meta(tmp_path / "old.pt")) == "cifar"
