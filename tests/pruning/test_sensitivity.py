"""Sensitivity analysis: one layer pruned at a time, restored after each evaluation."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from torchslim.cli import main
from torchslim.core.errors import UserError
from torchslim.models import create_model
from torchslim.pruning.sensitivity import (
    prunable_weights,
    prune_mask,
    sensitivity_analysis,
    structure_mask,
)


def test_structure_mask_zeroes_lowest_l1_filters_and_channels():
    w = torch.ones(4, 3, 2, 2)
    w[1] *= 0.1
    w[3] *= 0.5
    w[:, 2] *= 0.01
    filters = structure_mask(w, 0.5, 0)
    assert [bool(filters[i].all()) for i in range(4)] == [True, False, True, False]
    assert not filters[1].any() and not filters[3].any()
    channels = structure_mask(w, 0.3, 1)  # 0.9 channels rounds to 1: the weakest one
    assert [bool(channels[:, j].all()) for j in range(3)] == [True, True, False]
    assert structure_mask(w, 0.99, 0).flatten(1).all(1).sum() == 1  # one filter always kept


def test_prune_mask_element_level_is_exact():
    w = torch.arange(1.0, 101.0)
    assert int((~prune_mask(w, 0.37, "element")).sum()) == 37


def test_prunable_weights_skip_single_input_channel_convs_for_channel_pruning():
    model = create_model("demo_cnn")
    assert prunable_weights(model, "element")[0] == "features.0.0.weight"
    assert "features.0.0.weight" not in prunable_weights(model, "channel")


def test_analysis_restores_weights_and_records_every_level():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seen = []

    def score(m):
        seen.append((m[0].weight == 0).float().mean().item())
        return {"top1": 100.0 - 100.0 * seen[-1]}

    result = sensitivity_analysis(
        model, score, [0.25, 0.5], granularities=["element", "filter"], progress=False
    )
    assert [(r.granularity, r.name, r.level) for r in result.rows][:3] == [
        ("element", "0.weight", 0.25), ("element", "0.weight", 0.5), ("element", "2.weight", 0.25)
    ]
    assert len(result.rows) == 8
    assert result.rows[1].sparsity == 0.5 and result.rows[5].sparsity == 0.5
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])
    with pytest.raises(ValueError, match="granularity"):
        sensitivity_analysis(model, score, [0.5], granularities=["kernel"], progress=False)


@pytest.mark.slow
def test_cli_writes_table_json_and_plot_on_a_subset(tmp_path, capsys):
    weights = tmp_path / "w.pt"
    torch.manual_seed(0)
    torch.save(create_model("demo_cnn").state_dict(), weights)
    out = tmp_path / "sens"
    code = main([
        "sensitivity", "--model", "demo_cnn", "--weights", str(weights), "--data", "digits",
        "--limit", "100", "--levels", "0.5,0.9", "--granularity", "element", "filter",
        "--layers", "features.*.0.weight", "--out", str(out), "--json",
    ])
    assert code == 0
    printed = capsys.readouterr().out
    assert "features.1.0.weight  filter" in printed
    payload = json.loads(printed.strip().splitlines()[-1])
    assert payload["rows"] == 2 * 3 * 2
    data = json.loads((out / "sensitivity.json").read_text())
    assert data["meta"]["images"] == 100
    assert (out / "sensitivity.csv").read_text().count("\n") == 1 + 12
    assert (out / "sensitivity.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_rejects_bad_levels(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["sensitivity", "--model", "demo_cnn", "--weights", "x", "--data", "digits",
              "--levels", "0.5,1.5"])
    assert exc.value.code == 2
    assert "each must be in [0, 1)" in capsys.readouterr().err


def test_block_granularity_removes_each_residual_block_alone_and_restores_it(tmp_path):
    model = create_model("cifar_resnet20").eval()
    with torch.no_grad():  # layer2.2 adds nothing: removing it changes nothing
        model.layer2[2].bn2.weight.zero_()
        model.layer2[2].bn2.bias.zero_()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        reference = model(x)
    seen = []

    def score(m):
        with torch.no_grad():
            seen.append(sum(isinstance(module, nn.ReLU) for module in m.modules()))
            return {"top1": 100.0 - float((m(x) - reference).abs().max())}

    result = sensitivity_analysis(model, score, [0.5], granularities=["block"], progress=False,
                                  example_input=torch.zeros(1, 3, 32, 32))
    assert [r.name for r in result.rows] == ["layer1.0", "layer1.1", "layer1.2", "layer2.1",
                                             "layer2.2", "layer3.1", "layer3.2"]
    assert seen == [1] * 7  # one block replaced at a time
    assert all(r.level == 1.0 and r.granularity == "block" for r in result.rows)
    by_name = {r.name: r.top1 for r in result.rows}
    assert by_name["layer2.2"] == pytest.approx(100.0, abs=1e-4)
    assert min(by_name.values()) < 99.0
    with torch.no_grad():
        assert torch.equal(model(x), reference)  # every block is back
    result.meta["dense"] = {"top1": 100.0}  # drawn as a line over the bars
    some = sensitivity_analysis(model, score, [0.5], weights=["layer3.*"], granularities=["block"],
                                progress=False, example_input=torch.zeros(1, 3, 32, 32))
    assert [r.name for r in some.rows] == ["layer3.1", "layer3.2"]
    with pytest.raises(UserError, match="'layer9.1' names no removable block"):
        sensitivity_analysis(model, score, [0.5], weights=["layer9.1"], granularities=["block"],
                             progress=False, example_input=torch.zeros(1, 3, 32, 32))
    paths = result.write(tmp_path)
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"


def test_block_granularity_on_a_model_without_blocks_is_one_clear_line(tmp_path, capsys):
    weights = tmp_path / "w.pt"
    torch.save(create_model("demo_cnn").state_dict(), weights)
    code = main(["sensitivity", "--model", "demo_cnn", "--weights", str(weights), "--data",
                 "digits", "--limit", "20", "--granularity", "block", "--out", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no residual block to remove" in err[0]
