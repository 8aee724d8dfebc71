"""Structured pruning and thinning through recipes (Distiller's classes and torchslim's)."""

from __future__ import annotations

import pytest
import torch

from torchslim.core.errors import UserError
from torchslim.models import create_model
from torchslim.recipe import build_scheduler, parse_recipe

EXAMPLE = torch.zeros(1, 1, 8, 8)


def _run_epoch0(text: str, model=None):
    model = model or create_model("demo_cnn")
    recipe = parse_recipe(text, "r.yaml")
    scheduler = build_scheduler(recipe, model, EXAMPLE)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler.on_epoch_begin(0, optimizer=optimizer)
    return model, scheduler, recipe, optimizer


def _policy(kind: str, name: str) -> str:
    return f"  - {kind}: {{instance_name: {name}}}\n    epochs: [0]\n"


def test_distiller_l1_ranked_filters_and_channels_then_remover():
    text = """
pruners:
  p:
    class: L1RankedStructureParameterPruner
    reg_regims:
      features.0.0.weight: [0.5, '3D']
      features.3.0.weight: [0.25, 'Channels']
extensions:
  thin: {class: ChannelRemover, arch: demo, dataset: digits, thinning_func_str: remove_channels}
policies:
""" + _policy("pruner", "p") + _policy("extension", "thin")
    model, scheduler, recipe, _ = _run_epoch0(text)
    assert model.features[0][0].out_channels == 16
    assert model.features[3][0].in_channels == 48  # its input channels, 64 -> 48
    assert model.features[1][0].weight.shape == (48, 16, 3, 3)
    assert len(recipe.notes) == 3 and all("ignored" in note for note in recipe.notes)
    assert scheduler.log[0]["actions"]["p"]["channels_pruned"] == {
        "features.0.0": "16/32", "features.1.0": "16/64"
    }


def test_torchslim_filter_pruner_without_weights_prunes_every_group_and_training_continues():
    text = """
pruners:
  f: {class: FilterPruner, sparsity: 0.5, norm: 2}
extensions:
  t: {class: Thinning}
policies:
""" + _policy("pruner", "f") + _policy("extension", "t")
    model, scheduler, _, optimizer = _run_epoch0(text)
    assert [m.out_channels for m in (model.features[0][0], model.features[1][0])] == [16, 32]
    assert model.classifier.in_features == 32
    loss = model(torch.randn(4, 1, 8, 8)).sum()
    loss.backward()
    assert {id(p) for group in optimizer.param_groups for p in group["params"]} == {
        id(p) for p in model.parameters()
    }  # the optimizer follows the new, thinner parameters
    optimizer.step()
    assert scheduler.edits and "features.1.0" in scheduler.edits[0]["layers"]


def test_bn_gamma_pruner_and_regularizer():
    model = create_model("demo_cnn")
    with torch.no_grad():
        model.features[0][1].weight.copy_(torch.linspace(0.01, 1.0, 32))
    text = """
pruners:
  slim: {class: BNGammaPruner, sparsity: 0.25, weights: [features.0.1.weight]}
regularizers:
  l1: {class: BNGammaL1Regularizer, strength: 0.001}
policies:
""" + _policy("pruner", "slim") + _policy("regularizer", "l1")
    model, scheduler, _, _ = _run_epoch0(text, model)
    gamma = model.features[0][1].weight
    assert (gamma[:8] == 0).all() and (gamma[8:] != 0).all()
    loss = scheduler.before_backward_pass(0, 0, 1, torch.tensor(0.0), return_loss_components=True)
    expected = 0.001 * sum(
        m.weight.abs().sum() for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)
    )
    assert torch.allclose(loss.loss_components["l1"], expected)


def test_bernoulli_filter_pruner_is_seeded():
    text = """
pruners:
  b: {class: BernoulliFilterPruner, desired_sparsity: 0.5, group_type: Filters,
      weights: [features.1.0.weight], seed: 3}
policies:
""" + _policy("pruner", "b")
    first, _, _, _ = _run_epoch0(text)
    second, _, _, _ = _run_epoch0(text)
    zeros = (first.features[1][0].weight.flatten(1).abs().sum(1) == 0)
    assert int(zeros.sum()) == 32
    assert torch.equal(zeros, second.features[1][0].weight.flatten(1).abs().sum(1) == 0)


def test_structured_step_without_example_input_says_what_to_do():
    recipe = parse_recipe("""
pruners:
  f: {class: FilterPruner, sparsity: 0.5}
policies:
""" + _policy("pruner", "f"), "r.yaml")
    scheduler = build_scheduler(recipe, create_model("demo_cnn"))
    with pytest.raises(UserError, match="example_input"):
        scheduler.on_epoch_begin(0)


def test_bad_structure_kind_is_a_located_error():
    message = (r"r.yaml:5 pruners.p.reg_regims.w\[1\]: must be one of '3D', 'Filters' or "
               r"'Channels', got '2D'")
    with pytest.raises(UserError, match=message):
        parse_recipe("""
pruners:
  p:
    class: L1RankedStructureParameterPruner
    reg_regims: {w: [0.5, '2D']}
policies:
""" + _policy("pruner", "p"), "r.yaml")


def test_target_macs_pruner_uses_group_sensitivity_and_meets_the_target(tmp_path):
    from torchslim.analysis import summarize
    from torchslim.pruning.sensitivity import sensitivity_analysis

    model = create_model("demo_cnn")
    dense_macs = summarize(model, (1, 8, 8)).macs

    def score(m):
        return {"top1": 100.0 * float((m.classifier.weight != 0).float().mean())}

    sensitivity_analysis(model, score, [0.25, 0.5, 0.75], granularities=["group"],
                         progress=False, example_input=EXAMPLE).write(tmp_path)
    text = f"""
pruners:
  plan: {{class: TargetMACsPruner, sensitivity: '{tmp_path / "sensitivity.json"}',
          target_macs: 0.5}}
extensions:
  t: {{class: Thinning}}
policies:
""" + _policy("pruner", "plan") + _policy("extension", "t")
    model, scheduler, _, _ = _run_epoch0(text, model)
    assert summarize(model, (1, 8, 8)).macs <= 0.5 * dense_macs
    plan = scheduler.log[0]["actions"]["plan"]["plan"]
    assert "features.3.0" not in plan  # the group the score watches is spared


def test_target_macs_pruner_round_to_keeps_multiples_and_still_meets_the_target(tmp_path):
    from torchslim.analysis import summarize
    from torchslim.pruning.sensitivity import sensitivity_analysis

    model = create_model("demo_cnn")
    dense_macs = summarize(model, (1, 8, 8)).macs

    def score(m):  # every group costs alike: the allocation goes by MACs saved
        return {"top1": 100.0 * float((m.features[0][0].weight != 0).float().mean())}

    sensitivity_analysis(model, score, [0.2, 0.4, 0.6, 0.8], granularities=["group"],
                         progress=False, example_input=EXAMPLE).write(tmp_path)
    text = f"""
pruners:
  plan: {{class: TargetMACsPruner, sensitivity: '{tmp_path / "sensitivity.json"}',
          target_macs: 0.4, round_to: 8}}
extensions:
  t: {{class: Thinning}}
policies:
""" + _policy("pruner", "plan") + _policy("extension", "t")
    model, _, _, _ = _run_epoch0(text, model)
    assert summarize(model, (1, 8, 8)).macs <= 0.4 * dense_macs
    widths = [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(width % 8 == 0 for width in widths), widths
    assert widths != [32, 64, 64]


def test_target_macs_pruner_with_a_missing_file_is_a_located_error(tmp_path):
    text = """
pruners:
  plan: {class: TargetMACsPruner, sensitivity: nowhere.json, target_macs: 0.5}
policies:
""" + _policy("pruner", "plan")
    with pytest.raises(UserError, match=r"r.yaml:3 pruners.plan: sensitivity results "
                                        r"'nowhere.json' not found"):
        _run_epoch0(text)


def test_round_to_keeps_channel_counts_at_multiples_of_eight():
    text = """
pruners:
  f: {class: FilterPruner, sparsity: 0.32, round_to: 8}
extensions:
  t: {class: Thinning}
policies:
""" + _policy("pruner", "f") + _policy("extension", "t")
    model = create_model("cifar_resnet20")
    recipe = parse_recipe(text, "r.yaml")
    scheduler = build_scheduler(recipe, model, torch.zeros(1, 3, 32, 32))
    scheduler.on_epoch_begin(0)
    widths = {m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)}
    # every group keeps a multiple of 8, so every layer (a sum of groups) has such a width
    assert all(width % 8 == 0 for width in widths) and 48 in widths
    bad = parse_recipe(text.replace("round_to: 8", "round_to: 8, global_ranking: true"), "r.yaml")
    with pytest.raises(UserError, match="r.yaml:3 pruners.f: round_to must be >= 1 and works"):
        build_scheduler(bad, create_model("cifar_resnet20"), torch.zeros(1, 3, 32, 32))


def test_target_macs_pruner_refuses_a_sensitivity_measured_on_the_test_split(tmp_path):
    from torchslim.pruning.sensitivity import sensitivity_analysis

    result = sensitivity_analysis(create_model("demo_cnn"), lambda m: {"top1": 50.0}, [0.5],
                                  granularities=["group"], progress=False,
                                  example_input=EXAMPLE)
    result.meta["split"] = "test"  # as `torchslim sensitivity` records it
    result.write(tmp_path)
    text = f"""
pruners:
  plan: {{class: TargetMACsPruner, sensitivity: '{tmp_path / "sensitivity.json"}',
          target_macs: 0.5}}
policies:
""" + _policy("pruner", "plan")
    with pytest.raises(UserError, match="measured on the test split: a plan made from it lets "
                                        "the test labels choose what is pruned"):
        _run_epoch0(text)
