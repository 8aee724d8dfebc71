"""Low-rank factorization: exact at full rank, promised sizes below it, edits that reload."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from torchslim.analysis import summarize
from torchslim.core.errors import UserError
from torchslim.core.storage import save_compressed
from torchslim.lowrank import (
    depthwise_separable,
    factorize,
    factorized_params,
    group_conv,
    ratio_for_macs,
    svd_conv,
    svd_linear,
    tucker2_conv,
)
from torchslim.models import create_model, load_weights


def _max_diff(a, b, x):
    with torch.no_grad():
        return (a(x) - b(x)).abs().max().item()


@pytest.mark.parametrize("kwargs", [
    {"stride": 1, "padding": 1},
    {"stride": 2, "padding": 1, "bias": False},
    {"stride": 1, "padding": 2, "dilation": 2},
])
def test_full_rank_decompositions_reproduce_the_conv(kwargs):
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 10, 3, **kwargs)
    x = torch.randn(2, 6, 9, 9)
    assert _max_diff(svd_conv(conv, 10), conv, x) < 1e-4
    assert _max_diff(tucker2_conv(conv, (6, 10)), conv, x) < 1e-4


def test_full_rank_svd_reproduces_a_linear_and_lower_rank_has_the_promised_params():
    torch.manual_seed(0)
    layer = nn.Linear(20, 12)
    x = torch.randn(5, 20)
    assert _max_diff(svd_linear(layer, 12), layer, x) < 1e-4
    low = svd_linear(layer, 4)
    assert sum(p.numel() for p in low.parameters()) == 4 * (20 + 12) + 12
    assert factorized_params(layer, "svd", 4) == 4 * 32
    conv = nn.Conv2d(16, 32, 3, bias=False)
    assert sum(p.numel() for p in svd_conv(conv, 5).parameters()) == 5 * (16 * 9 + 32)
    tucker = tucker2_conv(conv, (4, 8))
    assert sum(p.numel() for p in tucker.parameters()) == 16 * 4 + 4 * 8 * 9 + 8 * 32
    assert factorized_params(conv, "tucker2", (4, 8)) == 16 * 4 + 4 * 8 * 9 + 8 * 32


def test_truncated_svd_is_the_best_approximation_of_its_rank():
    torch.manual_seed(0)
    layer = nn.Linear(16, 16, bias=False)
    errors = [torch.linalg.norm(svd_linear(layer, r)[1].weight @ svd_linear(layer, r)[0].weight
                                - layer.weight).item() for r in (2, 8, 15)]
    s = torch.linalg.svdvals(layer.weight.detach())
    assert errors == pytest.approx([s[r:].norm().item() for r in (2, 8, 15)], rel=1e-4)


def test_depthwise_separable_and_group_forms_are_exact_when_the_weight_has_that_form():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, padding=1)
    with torch.no_grad():  # a separable weight: W[o, i] = p[o, i] * d[i]
        conv.weight.copy_(torch.randn(6, 4)[:, :, None, None] * torch.randn(4, 3, 3)[None])
    x = torch.randn(2, 4, 7, 7)
    separable = depthwise_separable(conv)
    assert separable[0].groups == 4 and _max_diff(separable, conv, x) < 1e-4
    with torch.no_grad():  # block-diagonal: two groups
        conv.weight[:3, 2:] = 0
        conv.weight[3:, :2] = 0
    grouped = group_conv(conv, 2)
    assert grouped.groups == 2 and _max_diff(grouped, conv, x) < 1e-4


@pytest.mark.parametrize("call,match", [
    (lambda: svd_conv(nn.Conv2d(4, 8, 3), 40), r"rank 40 is larger than .* \(at most 8\)"),
    (lambda: svd_linear(nn.Linear(3, 5), 0), "whole number >= 1"),
    (lambda: tucker2_conv(nn.Conv2d(4, 8, 3), (5, 2)), r"at most 4"),
    (lambda: group_conv(nn.Conv2d(6, 8, 3), 4), "dividing both"),
    (lambda: svd_conv(nn.Conv2d(4, 4, 3, groups=2), 2), "already a grouped"),
    (lambda: factorize(create_model("demo_cnn"), "svd", rank=1000), r"layer 'features.0.0'"),
    (lambda: factorize(create_model("demo_cnn"), "svd", ratio=0.5, layers=["nope"]),
     "layer 'nope' matches no layer"),
    (lambda: factorize(create_model("demo_cnn"), "svd"), "exactly one of rank, energy or ratio"),
    (lambda: factorize(create_model("demo_cnn"), "svd", rank=(2, 3)),
     r"a whole number, got \(2, 3\)"),
    (lambda: factorize(create_model("demo_cnn"), "tucker2", rank=(2, 3, 4)), "one number or two"),
    (lambda: factorize(create_model("demo_cnn"), "depthwise_separable", rank=2), "has no rank"),
])
def test_impossible_requests_are_user_errors(call, match):
    with pytest.raises(UserError, match=match):
        call()


def test_energy_picks_the_smallest_rank_that_keeps_it():
    layer = nn.Linear(8, 8, bias=False)
    u, _ = torch.linalg.qr(torch.randn(8, 8))
    v, _ = torch.linalg.qr(torch.randn(8, 8))
    s = torch.tensor([4.0, 3.0, 2.0, 1.0, 0.5, 0.1, 0.05, 0.01])
    with torch.no_grad():
        layer.weight.copy_(u @ torch.diag(s) @ v.T)
    model = nn.Sequential(layer)
    # cumulative energy: 16, 25, 29, 30, 30.25 of 30.2626
    record = factorize(model, "svd", energy=0.95)
    assert record["layers"]["0"]["rank"] == 3


def test_ratio_for_macs_reaches_the_target_and_the_model_reloads_fresh(tmp_path):
    torch.manual_seed(0)
    model = create_model("cifar_resnet20").eval()
    shape = (3, 32, 32)
    dense = summarize(model, shape).macs
    ratio = ratio_for_macs(model, shape, 1.5, "tucker2", exclude=["conv1"])
    record = factorize(model, "tucker2", ratio=ratio, exclude=["conv1"])
    assert dense / summarize(model, shape).macs >= 1.5
    assert dense / summarize(model, shape).macs < 1.6  # the largest ratio that reaches it
    path = tmp_path / "factorized.pt"
    save_compressed(model, path, meta={"edits": [record]})
    fresh = load_weights(create_model("cifar_resnet20"), path).eval()
    x = torch.randn(2, 3, 32, 32)
    assert _max_diff(fresh, model, x) == 0.0


def test_reinitialize_gives_fresh_weights_of_the_same_structure():
    torch.manual_seed(0)
    model = create_model("demo_cnn")
    trained = factorize(create_model("demo_cnn"), "depthwise_separable")
    record = factorize(model, "depthwise_separable", reinitialize=True)
    assert record == trained
    assert model.features[1][0][0].groups == 32


def test_recipe_rank_too_large_is_a_located_error_before_training():
    from torchslim.recipe import build_scheduler, parse_recipe

    recipe = parse_recipe("""
extensions:
  lowrank: {class: LowRankFactorization, method: svd, rank: 500, layers: [features.1.0]}
policies:
  - extension: lowrank
    epochs: [0]
""", "lr.yaml")
    with pytest.raises(UserError, match=r"lr.yaml:3 extensions.lowrank: layer 'features.1.0': "
                                        r"rank 500 is larger than .* \(at most 64\)"):
        build_scheduler(recipe, create_model("demo_cnn"))


def test_excluding_a_block_excludes_the_layers_inside_it():
    from torchslim.lowrank import plan_factorization

    plan = plan_factorization(create_model("demo_cnn"), "svd", ratio=0.5,
                              exclude=["features.0", "features.1"])
    assert sorted(plan) == ["classifier", "features.3.0"]


def test_sync_optimizer_keeps_parameters_trained_outside_the_model():
    from torchslim.core.modules import sync_optimizer

    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    adapter = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.SGD([{"params": model.parameters()}, {"params": [adapter]}], lr=0.1)
    before = {id(p) for p in model.parameters()}
    factorize(model, "svd", rank=1)
    sync_optimizer(optimizer, model, before)
    assert any(p is adapter for p in optimizer.param_groups[1]["params"])
    assert {id(p) for p in optimizer.param_groups[0]["params"]} == \
        {id(p) for p in model.parameters()}


def test_factorizing_a_frozen_layer_keeps_it_frozen():
    model = create_model("demo_cnn")
    model.features.requires_grad_(False)
    factorize(model, "svd", rank=2, layers=["features.1.0", "classifier"])
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen and all(n.startswith("features.") for n in frozen)
    assert any(n.startswith("features.1.0.") for n in frozen)  # the new layers inside it
    assert all(p.requires_grad for p in model.classifier.parameters())


def test_numpy_and_tensor_ranks_are_whole_numbers_too():
    import numpy as np

    for rank in (np.int64(2), torch.tensor(2)):
        plan = factorize(create_model("demo_cnn"), "svd", rank=rank, layers=["classifier"])
        assert plan["layers"]["classifier"]["rank"] == 2
