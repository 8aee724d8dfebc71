"""Group lasso (SSL) and group variance: penalties by hand, thresholding into masks."""

from __future__ import annotations

import pytest
import torch

from torchslim.core.errors import UserError
from torchslim.models import create_model
from torchslim.pruning.masks import Masks
from torchslim.pruning.regularizers import GroupLassoRegularizer, GroupVarianceRegularizer
from torchslim.recipe import build_scheduler, parse_recipe
from torchslim.train import TrainConfig, Trainer


def _conv(weight):
    conv = torch.nn.Conv2d(weight.shape[1], weight.shape[0], weight.shape[2], bias=False)
    with torch.no_grad():
        conv.weight.copy_(weight)
    return torch.nn.Sequential(conv)


@pytest.mark.parametrize("grouping,expected", [
    ("Filters", lambda w: sum(w[i].norm() for i in range(w.shape[0]))),
    ("Channels", lambda w: sum(w[:, j].norm() for j in range(w.shape[1]))),
    ("2D", lambda w: sum(w[i, j].norm() for i in range(w.shape[0]) for j in range(w.shape[1]))),
    ("4D", lambda w: w.norm()),
    ("Channels+4D", lambda w: sum(w[:, j].norm() for j in range(w.shape[1])) + w.norm()),
])
def test_group_lasso_penalty_by_hand(grouping, expected):
    torch.manual_seed(0)
    weight = torch.randn(3, 2, 2, 2)
    model = _conv(weight)
    got = GroupLassoRegularizer({"0.weight": (0.5, grouping)}).penalty(model)
    assert float(got.detach()) == pytest.approx(0.5 * float(expected(weight)), rel=1e-5)


def test_threshold_zeroes_the_small_groups_through_the_masks():
    weight = torch.ones(3, 2, 1, 1)
    weight[1] *= 0.01
    model = _conv(weight)
    masks = Masks(model)
    lasso = GroupLassoRegularizer({"0.weight": (0.1, "Filters")}, "Mean_Abs")
    assert lasso.threshold(model, masks) == {"0.weight": 1}
    assert model[0].weight[1].abs().sum() == 0 and model[0].weight[0].abs().sum() > 0


def test_ssl_recipe_shrinks_groups_and_thresholds():
    recipe = parse_recipe("""
regularizers:
  ssl:
    class: GroupLassoRegularizer
    reg_regims:
      module.layer1.0.conv1.weight: [0.05, Filters]
      module.fc.weight: [0.05, Cols]
    threshold_criteria: Mean_Abs
policies:
  - regularizer: ssl
    starting_epoch: 0
    ending_epoch: 2
""")
    torch.manual_seed(0)
    model = create_model("resnet20_cifar")
    before = model.layer1[0].conv1.weight.detach().flatten(1).norm(dim=1).sum()
    schedule = build_scheduler(recipe, model)
    data = [(torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))) for _ in range(2)]
    Trainer(model, data, TrainConfig(epochs=2, lr=0.1, weight_decay=0.0, device="cpu"),
            callbacks=[schedule], progress=False).fit()
    after = model.layer1[0].conv1.weight.detach().flatten(1).norm(dim=1).sum()
    assert after < before
    assert "zero_groups" in schedule.log[0]["actions"]["ssl"]


def test_group_variance_and_bad_groupings():
    torch.manual_seed(0)
    model = _conv(torch.randn(3, 4, 3, 3))
    norms = model[0].weight.detach().transpose(0, 1).reshape(4, -1).norm(dim=1)
    got = GroupVarianceRegularizer({"0.weight": (2.0, "Channels")}).penalty(model)
    assert float(got.detach()) == pytest.approx(2.0 / float(norms.var()), rel=1e-4)
    with pytest.raises(UserError, match="group variance works on 'Channels'"):
        GroupVarianceRegularizer({"0.weight": (1.0, "Filters")})
    with pytest.raises(UserError, match="'Rows' groups need a 2-D"):
        GroupLassoRegularizer({"0.weight": (1.0, "Rows")}).penalty(model)


def test_random_level_draws_resume_where_they_stopped():
    from torchslim.pruning.schedules import RandomLevel

    straight = RandomLevel(0.1, 0.5, seed=3)
    draws = [straight(1.0) for _ in range(4)]
    first = RandomLevel(0.1, 0.5, seed=3)
    _ = [first(1.0) for _ in range(2)]
    resumed = RandomLevel(0.1, 0.5, seed=3)
    resumed.load_state_dict(first.state_dict())
    assert [resumed(1.0), resumed(1.0)] == draws[2:]
    assert len(set(draws)) == 4


def test_structure_parameter_pruner_zeroes_small_structures_then_thinning_removes_them():
    """Distiller's StructureParameterPruner: ``reg_regims: {weight: [threshold, group type]}``
    with ``Max`` or ``Mean_Abs``; the input channels no layer reads any more are thinned away
    with the filters producing them."""
    model = create_model("demo_cnn")
    with torch.no_grad():
        weight = model.features[1][0].weight  # (64, 32, 3, 3)
        weight.uniform_(0.5, 1.0)
        weight[:, :5] *= 0.01  # 5 input channels, all small: Max and Mean_Abs below 0.02
        weight[:, 5, 0, 0] = 0.9  # one large element: Mean_Abs 0.1 but Max 0.9
        weight[:, 5, 1:] = 0.0
        weight[:, 5, 0, 1:] = 0.0
    text = """
pruners:
  structures:
    class: StructureParameterPruner
    reg_regims:
      features.1.0.weight: [0.2, Channels]
    threshold_criteria: {criterion}
extensions:
  thin: {{class: ChannelRemover}}
policies:
  - pruner: {{instance_name: structures}}
    epochs: [0]
  - extension: {{instance_name: thin}}
    epochs: [1]
"""
    zeroed = {}
    for criterion in ("Max", "Mean_Abs"):
        candidate = create_model("demo_cnn")
        candidate.load_state_dict(model.state_dict())
        schedule = build_scheduler(parse_recipe(text.format(criterion=criterion), "s.yaml"),
                                   candidate, torch.zeros(1, 1, 8, 8))
        schedule.on_epoch_begin(0)
        zeroed[criterion] = schedule.log[0]["actions"]["structures"]["zero_groups"]
        kept = candidate.features[1][0].weight.detach().abs().sum((0, 2, 3)) > 0
        assert int((~kept).sum()) == zeroed[criterion]["features.1.0.weight"]
        assert not bool(kept[:5].any()) and bool(kept[6:].all())
        with torch.no_grad():  # the masks hold the zeros through training
            candidate.features[1][0].weight.add_(1.0)
        schedule.on_minibatch_end(0, 0, 1)
        assert not bool(candidate.features[1][0].weight[:, :5].any())
        schedule.on_epoch_end(0)
        schedule.on_epoch_begin(1)
        removed = zeroed[criterion]["features.1.0.weight"]
        assert candidate.features[1][0].in_channels == 32 - removed
        assert candidate.features[0][0].out_channels == 32 - removed
    assert zeroed == {"Max": {"features.1.0.weight": 5}, "Mean_Abs": {"features.1.0.weight": 6}}
    with pytest.raises(UserError, match="threshold_criteria"):
        parse_recipe(text.format(criterion="Median"), "s.yaml")


def test_filter_thresholds_take_conv1d_weights_as_distiller_does():
    from torchslim.pruning.regularizers import threshold_groups

    conv = torch.nn.Sequential(torch.nn.Conv1d(2, 3, 3))
    with torch.no_grad():
        conv[0].weight.fill_(1.0)
        conv[0].weight[2] = 0.01
    masks = Masks(conv)
    weights = [("0.weight", conv[0].weight, 0.1, "Filters")]
    assert threshold_groups(weights, masks, "Max") == {"0.weight": 1}
    assert not bool(conv[0].weight[2].any()) and bool(conv[0].weight[:2].all())
