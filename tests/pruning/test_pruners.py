"""Element-wise pruning: masks, methods, pruners, AGP."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from torchslim.core.errors import UserError
from torchslim.models import create_model
from torchslim.pruning import (
    AGPPruner,
    GlobalMagnitudePruner,
    LevelMethod,
    LevelPruner,
    Masks,
    RandomMethod,
    RandomPruner,
    SensitivityMethod,
    SensitivityPruner,
    ThresholdPruner,
    global_magnitude_masks,
)
from torchslim.pruning.regularizers import L1Regularizer


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 20), nn.ReLU(), nn.Linear(20, 3))


def _train_steps(model: nn.Module, masks: Masks, optimizer, steps: int = 5) -> None:
    for _ in range(steps):
        x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        masks.apply()


def test_level_method_prunes_exact_count_of_smallest():
    w = torch.tensor([0.5, -0.1, 0.3, -0.9, 0.05, 0.7, -0.2, 0.0])
    mask = LevelMethod(0.5).compute_mask(w)
    assert mask.tolist() == [True, False, True, True, False, True, False, False]


def test_level_method_matches_percentile_method_of_the_labs():
    torch.manual_seed(0)
    w = torch.randn(50, 40)
    mask = LevelMethod(0.7).compute_mask(w)
    cut = torch.quantile(w.abs().flatten(), 0.7)
    assert torch.equal(mask, w.abs() > cut)


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5])
def test_sparsity_outside_unit_interval_is_rejected(bad):
    with pytest.raises(UserError, match="sparsity must be in"):
        LevelMethod(bad)


def test_sensitivity_method_uses_std_threshold():
    torch.manual_seed(1)
    w = torch.randn(1000)
    mask = SensitivityMethod(0.5).compute_mask(w)
    assert torch.equal(mask, w.abs() > 0.5 * w.std())


def test_random_method_is_seeded_and_prunes_zeros_first():
    w = torch.ones(100)
    w[:10] = 0
    a = RandomMethod(0.3, torch.Generator().manual_seed(3)).compute_mask(w)
    b = RandomMethod(0.3, torch.Generator().manual_seed(3)).compute_mask(w)
    c = RandomMethod(0.3, torch.Generator().manual_seed(4)).compute_mask(w)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert int((~a).sum()) == 30 and not a[:10].any()


def test_global_masks_rank_layers_together():
    small, large = torch.full((10,), 0.01), torch.full((10,), 1.0)
    masks = global_magnitude_masks({"a": small, "b": large}, 0.5)
    assert not masks["a"].any() and masks["b"].all()


def test_masks_keep_pruned_weights_zero_through_sgd_momentum_and_adamw():
    for make in (
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-3),
        lambda p: torch.optim.AdamW(p, lr=0.01),
    ):
        model = _mlp()
        masks = Masks(model)
        LevelPruner({"0.weight": 0.6, "2.weight": 0.5}).prune(masks)
        pruned = {n: ~masks[n] for n in masks}
        _train_steps(model, masks, make(model.parameters()))
        params = dict(model.named_parameters())
        for name, where in pruned.items():
            assert (params[name][where] == 0).all()
            assert (params[name][~where] != 0).all()  # kept weights still train


def test_pruned_weights_get_no_gradient():
    model = _mlp()
    masks = Masks(model)
    LevelPruner({"0.weight": 0.5}).prune(masks)
    model(torch.randn(4, 6)).sum().backward()
    assert (model[0].weight.grad[~masks["0.weight"]] == 0).all()


def test_state_dict_round_trips_into_a_fresh_model_and_masks_recover_from_zeros():
    model = _mlp()
    masks = Masks(model)
    LevelPruner({"*": 0.75}).prune(masks)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    fresh = _mlp(seed=5)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    x = torch.randn(3, 6)
    assert torch.equal(fresh(x), model(x))
    recovered = Masks.from_zeros(fresh)
    assert sorted(recovered) == ["0.weight", "2.weight"]
    assert torch.equal(recovered["0.weight"], masks["0.weight"])


def test_masks_state_dict_restores_masks_and_hooks():
    model = _mlp()
    masks = Masks(model)
    LevelPruner({"0.weight": 0.5}).prune(masks)
    state = masks.state_dict()
    other = Masks(model)
    other.load_state_dict(state)
    model(torch.randn(4, 6)).sum().backward()
    assert other.sparsity("0.weight") == 0.5
    assert (model[0].weight.grad[~other["0.weight"]] == 0).all()


def test_remove_drops_masks_but_keeps_zeros():
    model = _mlp()
    masks = Masks(model)
    LevelPruner({"0.weight": 0.5}).prune(masks)
    masks.remove()
    assert len(masks) == 0
    assert (model[0].weight == 0).float().mean().item() == 0.5
    model(torch.randn(4, 6)).sum().backward()
    assert (model[0].weight.grad != 0).float().mean().item() > 0.5  # gradients flow again


def test_mask_shape_mismatch_and_unknown_name():
    masks = Masks(_mlp())
    with pytest.raises(ValueError, match="shape"):
        masks.set("0.weight", torch.ones(3, 3, dtype=torch.bool))
    with pytest.raises(UserError, match="did you mean '0.weight'"):
        masks.set("0.weigth", torch.ones(20, 6, dtype=torch.bool))


def test_pruning_again_never_revives_pruned_weights():
    model = _mlp()
    masks = Masks(model)
    LevelPruner({"0.weight": 0.3}).prune(masks)
    first = masks["0.weight"].clone()
    with torch.no_grad():  # an optimizer that moved pruned weights anyway
        model[0].weight.add_(10.0)
    LevelPruner({"0.weight": 0.6}).prune(masks)
    assert not (masks["0.weight"] & ~first).any()


def test_agp_schedule_formula_and_exact_final_sparsity():
    agp = AGPPruner(["0.weight"], initial_sparsity=0.1, final_sparsity=0.9)
    assert agp.target(0.0) == pytest.approx(0.1)
    assert agp.target(0.5) == pytest.approx(0.9 - 0.8 * 0.125)
    assert agp.target(1.0) == pytest.approx(0.9)
    model = _mlp()
    masks = Masks(model)
    sparsities = [agp.prune(masks, progress)["0.weight"] for progress in (0, 0.25, 0.5, 1.0)]
    assert sparsities == sorted(sparsities)
    assert sparsities[-1] == 0.9  # 120 weights: exactly 108 pruned


def test_agp_global_scope_reaches_overall_target():
    model = _mlp()
    masks = Masks(model)
    AGPPruner(["*"], 0.0, 0.5, scope="global").prune(masks, 1.0)
    total = model[0].weight.numel() + model[2].weight.numel()
    zeros = int((model[0].weight == 0).sum() + (model[2].weight == 0).sum())
    assert zeros == total // 2
    assert masks.sparsity("0.weight") != masks.sparsity("2.weight")


def test_agp_rejects_final_below_initial_and_bad_scope():
    with pytest.raises(UserError, match=r"final sparsity \(0.2\) must be >= the initial one"):
        AGPPruner(["w"], 0.5, 0.2)
    with pytest.raises(UserError, match="scope"):
        AGPPruner(["w"], 0.1, 0.2, scope="model")


def test_star_pattern_selects_conv_and_linear_weights_only():
    model = create_model("demo_cnn")
    masks = Masks(model)
    done = LevelPruner({"*": 0.5, "classifier.weight": 0.2}).prune(masks)
    assert sorted(done) == [
        "classifier.weight", "features.0.0.weight", "features.1.0.weight", "features.3.0.weight"
    ]
    assert done["classifier.weight"] == 0.2 and done["features.1.0.weight"] == 0.5


def test_threshold_sensitivity_random_and_global_pruners():
    model = _mlp()
    masks = Masks(model)
    w = model[0].weight.detach().clone()
    ThresholdPruner({"0.weight": 0.1}).prune(masks)
    assert torch.equal(masks["0.weight"], w.abs() > 0.1)
    SensitivityPruner({"2.weight": 1.0}).prune(masks)
    w2 = model[2].weight.detach()
    assert masks.sparsity("2.weight") > 0.5
    assert (w2[masks["2.weight"]].abs() > 0).all()
    model = _mlp()
    masks = Masks(model)
    assert RandomPruner(["0.weight"], 0.25, seed=1).prune(masks) == {"0.weight": 0.25}
    model = _mlp()
    masks = Masks(model)
    GlobalMagnitudePruner(["0.weight", "2.weight"], 0.5).prune(masks)
    assert masks.overall_sparsity() == 0.5


def test_unknown_weight_name_is_a_user_error_with_suggestion():
    with pytest.raises(UserError, match="did you mean 'features.1.0.weight'"):
        LevelPruner({"features.1.0.weigth": 0.5}).prune(Masks(create_model("demo_cnn")))


def test_l1_regularizer_penalty_and_gradient():
    model = _mlp()
    reg = L1Regularizer({"0.weight": 0.01})
    penalty = reg.penalty(model)
    assert penalty.item() == pytest.approx(0.01 * model[0].weight.abs().sum().item(), rel=1e-5)
    penalty.backward()
    assert torch.allclose(model[0].weight.grad, 0.01 * model[0].weight.sign())


def test_random_masks_are_made_beside_the_weight():
    # "meta" stands in for a GPU: noise drawn on the CPU could not meet a CUDA weight.
    mask = RandomMethod(0.5, torch.Generator().manual_seed(0)).compute_mask(
        torch.ones(4, 4, device="meta"))
    assert mask.device.type == "meta" and mask.shape == (4, 4)
