"""`torchslim compress` with the Distiller-format recipes under recipes/, on the demo CNN."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from torchslim.analysis import summarize
from torchslim.cli import main
from torchslim.export import read_compressed
from torchslim.models import create_model, load_weights
from torchslim.recipes import recipe_path

RECIPES = recipe_path("demo_agp").parent


def _compress(recipe: Path, out: Path, *extra: str) -> list[str]:
    return [
        "compress", "--recipe", str(recipe), "--model", "demo_cnn", "--data", "digits",
        "--batch-size", "64", "--lr", "0.05", "--out", str(out), "--repeats", "2",
        "--latency-batch", "16", "--json", "--quiet", *extra,
    ]


def _last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.mark.slow
def test_agp_recipe_runs_unchanged_and_reaches_final_sparsity(tmp_path, capsys):
    out = tmp_path / "agp"
    assert main(_compress(RECIPES / "demo_agp.yaml", out, "--epochs", "5")) == 0
    result = _last_json(capsys)
    assert set(result) >= {"top1", "params", "nonzero_params", "macs", "sparsity", "model_path"}
    assert result["top1"] > 50.0  # 5 epochs from scratch on digits, while pruning to 80 %

    model = create_model("demo_cnn")
    load_weights(model, result["model_path"])
    for name in ("features.1.0.weight", "features.3.0.weight"):
        weight = dict(model.named_parameters())[name]
        assert (weight == 0).float().mean().item() == pytest.approx(0.8, abs=1e-4)
    nonzero = sum(int((p != 0).sum()) for p in model.parameters())
    assert result["nonzero_params"] == nonzero
    assert result["params"] == sum(p.numel() for p in model.parameters())

    log = json.loads((out / "schedule.json").read_text())
    assert [entry["fired"] for entry in log] == [["conv_pruner"]] * 4 + [[]]
    final = log[3]["actions"]["conv_pruner"]["sparsity"]["features.3.0.weight"]
    assert final == pytest.approx(0.8, abs=1e-4)
    assert (out / "schedule.txt").read_text().startswith("epoch 0: fired conv_pruner")
    rows = result["rows"]
    assert [row["name"] for row in rows] == ["demo_cnn (input)", "demo_cnn (demo_agp)"]
    assert (out / "bench.md").is_file() and (out / "summary.txt").is_file()
    dense_bytes = (out / "model.pt").stat().st_size
    assert rows[1]["file_bytes"] == Path(result["model_path"]).stat().st_size < 0.6 * dense_bytes


@pytest.mark.slow
@pytest.mark.parametrize(
    ("recipe", "epochs", "killed_after"),
    [("demo_agp.yaml", 4, 2), ("demo_filters.yaml", 3, 1), ("demo_lowrank.yaml", 3, 1)],
)
def test_resumed_compression_ends_with_the_same_model(recipe, epochs, killed_after, tmp_path,
                                                      capsys):
    recipe, constant = RECIPES / recipe, ("--schedule", "constant")
    assert main(_compress(recipe, tmp_path / "a", "--epochs", str(epochs), *constant)) == 0
    straight = _last_json(capsys)
    assert main(_compress(recipe, tmp_path / "b", "--epochs", str(killed_after), *constant)) == 0
    capsys.readouterr()
    resumed_args = ("--epochs", str(epochs), "--resume", *constant)
    assert main(_compress(recipe, tmp_path / "b", *resumed_args)) == 0
    resumed = _last_json(capsys)
    a, b = read_compressed(straight["model_path"])[0], read_compressed(resumed["model_path"])[0]
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), atol=1e-5), key
    assert resumed["nonzero_params"] == straight["nonzero_params"]


@pytest.mark.slow
def test_lowrank_recipe_factorizes_and_reloads(tmp_path, capsys):
    out = tmp_path / "lowrank"
    assert main(_compress(RECIPES / "demo_lowrank.yaml", out, "--epochs", "2")) == 0
    result = _last_json(capsys)
    dense = summarize(create_model("demo_cnn"), (1, 8, 8))
    assert result["params"] < 0.65 * dense.params and result["macs"] < 0.65 * dense.macs
    assert result["top1"] > 60.0
    model = load_weights(create_model("demo_cnn"), result["model_path"])
    assert [type(m).__name__ for m in model.features[1][0]] == ["Conv2d"] * 3
    log = json.loads((out / "schedule.json").read_text())
    assert log[0]["actions"]["lowrank"]["factorized"] == 2


@pytest.mark.slow
def test_filter_recipe_thins_the_model_and_it_reloads_in_a_fresh_process(tmp_path, capsys):
    out = tmp_path / "filters"
    assert main(_compress(RECIPES / "demo_filters.yaml", out, "--epochs", "2")) == 0
    result = _last_json(capsys)
    dense_macs = summarize(create_model("demo_cnn"), (1, 8, 8)).macs
    assert result["macs"] < 0.4 * dense_macs  # 20 of 32, 39 of 64 channels left
    log = json.loads((out / "schedule.json").read_text())
    assert log[0]["fired"] == ["filter_pruner", "net_thinner"]
    assert log[0]["actions"]["filter_pruner"]["channels_pruned"]["features.1.0"] == "25/64"
    assert log[0]["actions"]["net_thinner"]["thinned"]["features.1.0"] == {"out": 39, "in": 20}
    for path in (result["model_path"], str(out / "model.pt")):
        done = subprocess.run(
            [sys.executable, "-m", "torchslim", "eval", "--model", "demo_cnn", "--weights", path,
             "--data", "digits", "--json", "--quiet"],
            capture_output=True, text=True, check=True,
        )
        top1 = json.loads(done.stdout.splitlines()[-1])["top1"]
        assert top1 == pytest.approx(result["top1"], abs=1e-3)


def test_recipe_of_a_missing_algorithm_fails_clearly(tmp_path, capsys):
    recipe = tmp_path / "rnn.yaml"
    recipe.write_text("regularizers:\n  rnn: {class: DropFilterRegularizer}\npolicies:\n"
                      "  - regularizer: {instance_name: rnn}\n    starting_epoch: 0\n")
    assert main(_compress(recipe, tmp_path, "--epochs", "1")) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "torchslim compress: error: rnn.yaml:2 regularizers.rnn.class: 'DropFilterRegularizer' "
        "is not yet supported by torchslim: dropping random filters while training (DropFilter) "
        "is not implemented yet"
    )


def test_dorefa_recipe_trains_the_demo_cnn_quantization_aware(tmp_path, capsys):
    assert main(_compress(RECIPES / "demo_dorefa.yaml", tmp_path, "--epochs", "6")) == 0
    result = _last_json(capsys)
    assert result["top1"] > 85  # 95.6 % measured; 98.4 % without quantization
    fresh = load_weights(create_model("demo_cnn"), result["model_path"])
    weights = fresh.features[1][0].quantized_weight().detach()
    assert len(torch.unique(weights)) <= 256 and weights.abs().max() <= 1.0


def test_notes_warn_when_a_policy_outlasts_training(tmp_path, capsys):
    assert main([*_compress(RECIPES / "demo_agp.yaml", tmp_path, "--epochs", "2")]) == 0
    notes = _last_json(capsys)["notes"]
    assert notes == [
        "demo_agp.yaml:15 policies[0]: 'conv_pruner' acts until epoch 3 but training has 2 "
        "epochs (0..1), so it will not finish"
    ]


@pytest.mark.slow
def test_a_thinned_model_can_be_trained_and_compressed_again(tmp_path, capsys):
    first = tmp_path / "filters"
    assert main(_compress(RECIPES / "demo_filters.yaml", first, "--epochs", "1")) == 0
    thinned = _last_json(capsys)["model_path"]
    assert main(["train", "--model", "demo_cnn", "--weights", thinned, "--data", "digits",
                 "--epochs", "1", "--out", str(tmp_path / "ft"), "--quiet"]) == 0
    assert main(_compress(RECIPES / "demo_agp.yaml", tmp_path / "agp", "--weights", thinned,
                          "--epochs", "1")) == 0
    again = _last_json(capsys)
    for path in (tmp_path / "ft" / "model.pt", Path(again["model_path"])):
        model = load_weights(create_model("demo_cnn"), path)
        assert model.features[1][0].weight.shape == (39, 20, 3, 3)
