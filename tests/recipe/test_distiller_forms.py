"""Distiller's current argument forms and rounding: its published thinned shapes come out."""

from __future__ import annotations

import pytest
import torch

from torchslim.analysis import summarize
from torchslim.core.errors import UserError
from torchslim.models import create_model
from torchslim.recipe import build_scheduler, parse_recipe
from torchslim.train import TrainConfig, Trainer

# Distiller's examples/pruning_filters_for_efficient_convnets/resnet56_cifar_filter_rank.yaml,
# its pruners, extension and policies (the LR schedule left out).
FILTER_RANK = """
version: 1
pruners:
  filter_pruner_60:
    class: 'L1RankedStructureParameterPruner'
    group_type: Filters
    desired_sparsity: 0.6
    weights: [
      module.layer1.0.conv1.weight, module.layer1.1.conv1.weight, module.layer1.2.conv1.weight,
      module.layer1.3.conv1.weight, module.layer1.4.conv1.weight, module.layer1.5.conv1.weight,
      module.layer1.6.conv1.weight, module.layer1.7.conv1.weight, module.layer1.8.conv1.weight]
  filter_pruner_50:
    class: 'L1RankedStructureParameterPruner'
    group_type: Filters
    desired_sparsity: 0.5
    weights: [
      module.layer2.1.conv1.weight, module.layer2.2.conv1.weight, module.layer2.3.conv1.weight,
      module.layer2.4.conv1.weight, module.layer2.6.conv1.weight, module.layer2.7.conv1.weight]
  filter_pruner_10:
    class: 'L1RankedStructureParameterPruner'
    group_type: Filters
    desired_sparsity: 0.1
    weights: [module.layer3.1.conv1.weight]
  filter_pruner_30:
    class: 'L1RankedStructureParameterPruner'
    group_type: Filters
    desired_sparsity: 0.3
    weights: [
      module.layer3.2.conv1.weight, module.layer3.3.conv1.weight, module.layer3.5.conv1.weight,
      module.layer3.6.conv1.weight, module.layer3.7.conv1.weight, module.layer3.8.conv1.weight]
extensions:
  net_thinner:
      class: 'FilterRemover'
      thinning_func_str: remove_filters
      arch: 'resnet56_cifar'
      dataset: 'cifar10'
policies:
  - pruner:
      instance_name: filter_pruner_60
    epochs: [0]
  - pruner:
      instance_name: filter_pruner_50
    epochs: [0]
  - pruner:
      instance_name: filter_pruner_30
    epochs: [0]
  - pruner:
      instance_name: filter_pruner_10
    epochs: [0]
  - extension:
      instance_name: net_thinner
    epochs: [0]
"""


def _weights(model):
    return sum(p.numel() for n, p in model.named_parameters()
               if n.endswith("weight") and p.dim() > 1)


def test_resnet56_filter_rank_gives_distillers_published_shapes_weights_and_macs():
    torch.manual_seed(0)
    model = create_model("resnet56_cifar")
    schedule = build_scheduler(parse_recipe(FILTER_RANK, "filter_rank.yaml"), model,
                               torch.zeros(1, 3, 32, 32))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    schedule.on_epoch_begin(0, optimizer=optimizer)
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    assert shapes["layer1.0.conv1.weight"] == (7, 16, 3, 3)   # floor(0.6 * 16) = 9 removed
    assert shapes["layer2.1.conv1.weight"] == (16, 32, 3, 3)
    assert shapes["layer2.5.conv1.weight"] == (32, 32, 3, 3)  # not listed
    assert shapes["layer3.1.conv1.weight"] == (58, 64, 3, 3)  # floor(0.1 * 64) = 6
    assert shapes["layer3.2.conv2.weight"] == (64, 45, 3, 3)  # floor(0.3 * 64) = 19
    assert _weights(model) == 634_640                         # as the file's comments state
    assert summarize(model, (3, 32, 32)).macs == 78_856_832


def test_old_reg_regims_form_rounds_down_like_distiller():
    recipe = parse_recipe("""
pruners:
  p:
    class: L1RankedStructureParameterPruner
    reg_regims: {layer1.0.conv1.weight: [0.6, '3D']}
extensions:
  t: {class: FilterRemover}
policies:
  - pruner: p
    epochs: [0]
  - extension: t
    epochs: [0]
""")
    model = create_model("resnet20_cifar")
    schedule = build_scheduler(recipe, model, torch.zeros(1, 3, 32, 32))
    schedule.on_epoch_begin(0, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    assert model.layer1[0].conv1.out_channels == 7


def test_one_weight_name_instead_of_a_list_is_accepted():
    recipe = parse_recipe("""
pruners:
  agp: {class: AutomatedGradualPruner, initial_sparsity: 0.05, final_sparsity: 0.5,
        weights: module.fc.weight}
policies:
  - pruner: agp
    starting_epoch: 0
    ending_epoch: 2
""")
    assert recipe.instances[("pruners", "agp")].args.weights == ["module.fc.weight"]
    build_scheduler(recipe, create_model("resnet20_cifar"))


@pytest.mark.parametrize("body,match", [
    ("reg_regims: {fc.weight: [0.5, '3D']}\n    desired_sparsity: 0.5",
     "either reg_regims or group_type"),
    ("group_type: Filters\n    weights: [conv1.weight]", "needs desired_sparsity"),
])
def test_ranked_structure_form_mistakes(body, match):
    text = f"pruners:\n  p:\n    class: L1RankedStructureParameterPruner\n    {body}\n" \
           "policies:\n  - pruner: p\n    epochs: [0]\n"
    with pytest.raises(UserError, match=match):
        parse_recipe(text, "r.yaml")


# Distiller's examples/network_trimming/resnet56_cifar_activation_apoz.yaml: the same shapes as
# the filter-rank schedule, reached gradually (AGP) with filters ranked by APoZ.
APOZ = FILTER_RANK.replace(
    "class: 'L1RankedStructureParameterPruner'\n    group_type: Filters\n    desired_sparsity:",
    "class: ActivationAPoZRankedFilterPruner_AGP\n    group_type: Filters\n"
    "    initial_sparsity: 0.10\n    final_sparsity:",
).replace("epochs: [0]", "starting_epoch: 1\n    ending_epoch: 20\n    frequency: 2")
APOZ = APOZ.replace("""  - extension:
      instance_name: net_thinner
    starting_epoch: 1
    ending_epoch: 20
    frequency: 2""", """  - extension:
      instance_name: net_thinner
    epochs: [20]""")


@pytest.mark.slow
@pytest.mark.parametrize("ranking", ["ActivationAPoZRankedFilterPruner_AGP",
                                     "GradientRankedFilterPruner_AGP"])
def test_structured_agp_schedules_reach_distillers_shapes(ranking):
    torch.manual_seed(0)
    recipe = parse_recipe(APOZ.replace("ActivationAPoZRankedFilterPruner_AGP", ranking),
                          "apoz.yaml")
    model = create_model("resnet56_cifar")
    schedule = build_scheduler(recipe, model, torch.zeros(1, 3, 32, 32))
    data = [(torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))) for _ in range(2)]
    Trainer(model, data, TrainConfig(epochs=21, lr=0.01, device="cpu"), callbacks=[schedule],
            progress=False).fit()
    schedule.finish()
    assert _weights(model) == 634_640
    assert summarize(model, (3, 32, 32)).macs == 78_856_832
    first = schedule.log[1]["actions"]["filter_pruner_60"]
    assert first["channels_pruned"]["layer1.0.conv1"] == "1/16"  # floor(0.10 * 16)
    assert not any(m._forward_hooks for m in model.modules())  # the statistics' hooks are gone


@pytest.mark.parametrize("cls", ["L1RankedStructureParameterPruner_AGP",
                                 "StructuredAutomatedGradualPruner",
                                 "L2RankedStructureParameterPruner_AGP",
                                 "BernoulliFilterPruner_AGP",
                                 "ActivationMeanRankedFilterPruner_AGP"])
def test_structured_agp_classes_prune_gradually(cls):
    recipe = parse_recipe(f"""
pruners:
  p: {{class: {cls}, initial_sparsity: 0.1, final_sparsity: 0.5, group_type: Filters,
      weights: module.layer1.0.conv1.weight}}
policies:
  - pruner: p
    starting_epoch: 0
    ending_epoch: 3
""")
    model = create_model("resnet20_cifar")
    schedule = build_scheduler(recipe, model, torch.zeros(1, 3, 32, 32))
    data = [(torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))) for _ in range(2)]
    Trainer(model, data, TrainConfig(epochs=3, lr=0.01, device="cpu"), callbacks=[schedule],
            progress=False).fit()
    pruned = [entry["actions"]["p"]["channels_pruned"]["layer1.0.conv1"]
              for entry in schedule.log]
    assert pruned == ["1/16", "7/16", "8/16"]  # AGP: 0.1, 0.45, 0.5 of 16, rounded down


@pytest.mark.parametrize("cls", ["L1RankedStructureParameterPruner",
                                 "L2RankedStructureParameterPruner",
                                 "RandomRankedFilterPruner",
                                 "ActivationAPoZRankedFilterPruner",
                                 "ActivationMeanRankedFilterPruner",
                                 "GradientRankedFilterPruner"])
def test_one_shot_ranked_classes_remove_floor_of_the_ratio(cls):
    recipe = parse_recipe(f"""
pruners:
  p: {{class: {cls}, desired_sparsity: 0.6, group_type: Filters,
      weights: [module.layer1.0.conv1.weight, module.layer2.0.conv1.weight]}}
policies:
  - pruner: p
    epochs: [1]
""")
    model = create_model("resnet20_cifar")
    schedule = build_scheduler(recipe, model, torch.zeros(1, 3, 32, 32))
    data = [(torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))) for _ in range(2)]
    Trainer(model, data, TrainConfig(epochs=2, lr=0.01, device="cpu"), callbacks=[schedule],
            progress=False).fit()
    pruned = schedule.log[-1]["actions"]["p"]["channels_pruned"]
    assert pruned == {"layer1.0.conv1": "9/16", "layer2.0.conv1": "19/32"}  # floor(0.6 x n)
    zeros = (model.layer1[0].conv1.weight.detach().flatten(1).abs().sum(1) == 0).sum()
    assert int(zeros) == 9


def test_l2_ranking_differs_from_l1_where_the_norms_disagree():
    """A filter with one large weight has the larger L2 norm, one spread out the larger L1."""
    model = create_model("resnet20_cifar")
    with torch.no_grad():
        weight = model.layer1[0].conv1.weight
        weight.fill_(1.0)
        weight[0].fill_(0.0)
        weight[0, 0, 0, 0] = 30.0  # L1 30 < 144 of the others, L2 30 > 12
        weight[1].fill_(0.5)  # L1 72, L2 6: the smallest by both
    kept = {}
    for cls in ("L1RankedStructureParameterPruner", "L2RankedStructureParameterPruner"):
        candidate = create_model("resnet20_cifar")
        candidate.load_state_dict(model.state_dict())
        recipe = parse_recipe(f"""
pruners:
  p: {{class: {cls}, desired_sparsity: 0.125, group_type: Filters,
      weights: [layer1.0.conv1.weight]}}
policies:
  - pruner: p
    epochs: [0]
""")
        build_scheduler(recipe, candidate, torch.zeros(1, 3, 32, 32)).on_epoch_begin(0)
        norms = candidate.layer1[0].conv1.weight.detach().flatten(1).abs().sum(1)
        kept[cls] = (norms == 0).nonzero().flatten().tolist()
    assert kept == {"L1RankedStructureParameterPruner": [0, 1],
                    "L2RankedStructureParameterPruner": [1, 2]}


def test_random_level_pruner_draws_its_level_in_range():
    recipe = parse_recipe("""
pruners:
  drop: {class: RandomLevelStructureParameterPruner, sparsity_range: [0.25, 0.5],
         group_type: Filters, weights: [module.layer1.0.conv1.weight]}
policies:
  - pruner: drop
    starting_epoch: 0
""")
    model = create_model("resnet20_cifar")
    schedule = build_scheduler(recipe, model, torch.zeros(1, 3, 32, 32))
    schedule.on_epoch_begin(0, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    removed = int(schedule.log[0]["actions"]["drop"]["channels_pruned"]["layer1.0.conv1"]
                  .split("/")[0])
    assert 4 <= removed <= 8


def test_duplicate_keys_keep_the_last_with_a_note_naming_both_lines():
    recipe = parse_recipe("""
pruners:
  p:
    class: LevelParameterPruner
    levels: {"*": 0.5}
    levels: {"*": 0.7}
policies:
  - pruner: {instance_name: p}
    epochs: [0]
""", "dup.yaml")
    assert recipe.instances[("pruners", "p")].args.levels == {"*": 0.7}
    assert recipe.notes[0] == ("dup.yaml:6 pruners.p.levels: duplicate key (first on line 5); "
                               "the last one counts, as in Distiller")


def test_distillers_policy_args_are_accepted_with_a_note():
    recipe = parse_recipe("""
pruners:
  p: {class: LevelParameterPruner, levels: {"*": 0.5}}
policies:
  - pruner:
      instance_name: p
      args:
        mini_batch_pruning_frequency: 16
        mask_on_forward_only: True
    epochs: [0]
""", "args.yaml")
    assert "args.yaml:7 policies[0].pruner.args: Distiller's mask options" in recipe.notes[0]
    with pytest.raises(UserError, match="unknown policy argument .*did you mean 'keep_mask'"):
        parse_recipe("pruners:\n  p: {class: LevelParameterPruner, levels: {'*': 0.5}}\n"
                     "policies:\n  - pruner: p\n    args: {keep_masks: true}\n    epochs: [0]\n")


def test_another_zoos_classifier_name_suggests_this_models_head_first():
    recipe = parse_recipe("""
pruners:
  fc: {class: AutomatedGradualPruner, initial_sparsity: 0.1, final_sparsity: 0.5,
       weights: [module.fc.weight]}
policies:
  - pruner: fc
    starting_epoch: 0
    ending_epoch: 2
""", "fc.yaml")
    build_scheduler(recipe, create_model("resnet20_cifar"))  # Distiller's own names: fine
    with pytest.raises(UserError, match=r"fc.yaml:4 pruners.fc.weights\[0\]: weight name "
                                        r"'module.fc.weight' matches no parameter of the model "
                                        r"\(did you mean 'linear.weight', "):
        build_scheduler(recipe, create_model("cifar_resnet20"))


def test_leader_prunes_the_same_channels_in_every_listed_weight():
    recipe = parse_recipe("""
pruners:
  p:
    class: L1RankedStructureParameterPruner
    group_type: Filters
    desired_sparsity: 0.5
    group_dependency: Leader
    weights: [module.layer1.0.conv1.weight, module.layer1.1.conv1.weight]
policies:
  - pruner: p
    epochs: [0]
""")
    torch.manual_seed(0)
    model = create_model("resnet20_cifar")
    with torch.no_grad():  # the leader's filters 0..7 are the smallest
        model.layer1[0].conv1.weight[:8] *= 0.01
    schedule = build_scheduler(recipe, model, torch.zeros(1, 3, 32, 32))
    schedule.on_epoch_begin(0, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    for block in (0, 1):
        zero = model.layer1[block].conv1.weight.flatten(1).abs().sum(1) == 0
        assert zero.nonzero().flatten().tolist() == list(range(8))


def test_leader_with_the_older_reg_regims_form_is_refused():
    with pytest.raises(UserError, match="group_dependency: Leader ties the weights listed "
                                        "under weights"):
        parse_recipe("""
pruners:
  p:
    class: L1RankedStructureParameterPruner
    group_dependency: Leader
    reg_regims:
      module.layer1.0.conv1.weight: [0.5, '3D']
      module.layer1.1.conv1.weight: [0.5, '3D']
policies:
  - pruner: p
    epochs: [0]
""", "r.yaml")


# Distiller's examples/agp-pruning/resnet20_filters.schedule_agp_4.yaml, pruners and policies:
# structured AGP (one group following its leader), fine-grained AGP on the same layers, row
# pruning of the classifier, thinning in between.
AGP_4 = """
version: 1
pruners:
  low_pruner:
    class: L1RankedStructureParameterPruner_AGP
    initial_sparsity : 0.10
    final_sparsity: 0.50
    group_type: Filters
    weights: [module.layer2.0.conv1.weight, module.layer2.0.conv2.weight,
              module.layer2.0.downsample.0.weight,
              module.layer2.1.conv2.weight, module.layer2.2.conv2.weight,
              module.layer2.1.conv1.weight, module.layer2.2.conv1.weight]
  low_pruner_2:
    class: L1RankedStructureParameterPruner_AGP
    initial_sparsity : 0.10
    final_sparsity: 0.50
    group_type: Filters
    group_dependency: Leader
    weights: [module.layer3.0.conv2.weight, module.layer3.0.downsample.0.weight,
              module.layer3.1.conv2.weight,  module.layer3.2.conv2.weight]
  fine_pruner:
    class:  AutomatedGradualPruner
    initial_sparsity : 0.05
    final_sparsity: 0.70
    weights: [module.layer3.1.conv1.weight,  module.layer3.1.conv2.weight,
              module.layer3.2.conv1.weight,  module.layer3.2.conv2.weight]
  fc_pruner:
    class: L1RankedStructureParameterPruner_AGP
    initial_sparsity : 0.05
    final_sparsity: 0.50
    group_type: Rows
    weights: [module.fc.weight]
extensions:
  net_thinner:
      class: 'FilterRemover'
      thinning_func_str: remove_filters
      arch: 'resnet20_cifar'
      dataset: 'cifar10'
policies:
  - pruner:
      instance_name : low_pruner
    starting_epoch: 0
    ending_epoch: 30
    frequency: 2
  - pruner:
      instance_name : low_pruner_2
    starting_epoch: 0
    ending_epoch: 30
    frequency: 2
  - pruner:
      instance_name : fine_pruner
    starting_epoch: 30
    ending_epoch: 50
    frequency: 2
  - pruner:
      instance_name : fc_pruner
    starting_epoch: 30
    ending_epoch: 50
    frequency: 2
  - extension:
      instance_name: net_thinner
    epochs: [32]
"""


@pytest.mark.slow
def test_hybrid_agp_schedule_reaches_distillers_published_size():
    torch.manual_seed(0)
    model = create_model("resnet20_cifar")
    schedule = build_scheduler(parse_recipe(AGP_4, "agp_4.yaml"), model,
                               torch.zeros(1, 3, 32, 32))
    data = [(torch.randn(2, 3, 32, 32), torch.randint(0, 10, (2,))) for _ in range(2)]
    Trainer(model, data, TrainConfig(epochs=49, lr=1e-3, device="cpu"), callbacks=[schedule],
            progress=False).fit()
    # The file's comments: 130,544 weights (dense) and 24,723,776 MACs after thinning.
    assert _weights(model) == 130_544
    assert summarize(model, (3, 32, 32)).macs == 24_723_776
    assert tuple(model.fc.weight.shape) == (10, 32)
    fc_zero_columns = int((model.fc.weight.abs().sum(0) == 0).sum())
    assert fc_zero_columns == 16  # floor(0.5 * 32) input columns masked, not thinned


# Distiller's examples/pruning_filters_for_efficient_convnets/resnet56_cifar_channel_rank.yaml:
# input channels ranked by L1 norm, the first group following its leader.
CHANNEL_RANK = """
version: 1
pruners:
  filter_pruner_70:
    class: 'L1RankedStructureParameterPruner'
    group_type: Channels
    desired_sparsity: 0.7
    group_dependency: Leader
    weights: [
      module.layer1.1.conv1.weight, module.layer1.0.conv1.weight, module.layer1.2.conv1.weight,
      module.layer1.3.conv1.weight, module.layer1.4.conv1.weight, module.layer1.5.conv1.weight,
      module.layer1.6.conv1.weight, module.layer1.7.conv1.weight, module.layer1.8.conv1.weight,
      module.layer2.0.conv1.weight, module.layer2.0.downsample.0.weight]
  filter_pruner_60:
    class: 'L1RankedStructureParameterPruner'
    group_type: Channels
    desired_sparsity: 0.6
    weights: [
      module.layer2.1.conv2.weight, module.layer2.2.conv2.weight, module.layer2.3.conv2.weight,
      module.layer2.4.conv2.weight, module.layer2.6.conv2.weight, module.layer2.7.conv2.weight]
  filter_pruner_20:
    class: 'L1RankedStructureParameterPruner'
    group_type: Channels
    desired_sparsity: 0.2
    weights: [module.layer3.1.conv2.weight]
  filter_pruner_40:
    class: 'L1RankedStructureParameterPruner'
    group_type: Channels
    desired_sparsity: 0.4
    weights: [
      module.layer3.2.conv2.weight, module.layer3.3.conv2.weight, module.layer3.5.conv2.weight,
      module.layer3.6.conv2.weight, module.layer3.7.conv2.weight, module.layer3.8.conv2.weight]
extensions:
  net_thinner:
      class: StructureRemover
      thinning_func_str: remove_channels
      arch: resnet56_cifar
      dataset: cifar10
policies:
  - pruner:
      instance_name: filter_pruner_70
    epochs: [0]
  - pruner:
      instance_name: filter_pruner_60
    epochs: [0]
  - pruner:
      instance_name: filter_pruner_40
    epochs: [0]
  - pruner:
      instance_name: filter_pruner_20
    epochs: [0]
  - extension:
      instance_name: net_thinner
    epochs: [0]
"""


def test_resnet56_channel_rank_gives_distillers_published_size():
    torch.manual_seed(0)
    model = create_model("resnet56_cifar")
    schedule = build_scheduler(parse_recipe(CHANNEL_RANK, "channel_rank.yaml"), model,
                               torch.zeros(1, 3, 32, 32))
    schedule.on_epoch_begin(0, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    # The file's comments: 566,887 weights and 66,592,384 MACs (1.89x fewer).
    assert _weights(model) == 566_887
    assert summarize(model, (3, 32, 32)).macs == 66_592_384
    assert model.layer1[0].conv1.in_channels == 5  # the stream: floor(0.7 * 16) = 11 removed


@pytest.mark.slow
def test_distillers_channel_rank_file_runs_unchanged_through_torchslim_compress(tmp_path, capsys):
    import json

    from torchslim.cli import main

    from ..data.test_data import make_tree

    layout = {split: {f"c{i}": 3 for i in range(10)} for split in ("train", "test")}
    make_tree(tmp_path / "data", layout, size=(32, 32))
    recipe = tmp_path / "resnet56_cifar_channel_rank.yaml"
    recipe.write_text(CHANNEL_RANK)
    args = ["compress", "--recipe", str(recipe), "--model", "resnet56_cifar", "--data",
            str(tmp_path / "data"), "--epochs", "1", "--batch-size", "16", "--repeats", "1",
            "--latency-batch", "4", "--out", str(tmp_path / "out"), "--json", "--quiet"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["macs"] == 66_592_384
    log = json.loads((tmp_path / "out" / "schedule.json").read_text())
    assert log[0]["fired"] == ["filter_pruner_70", "filter_pruner_60", "filter_pruner_40",
                               "filter_pruner_20", "net_thinner"]


@pytest.mark.parametrize("cls,body,match", [
    ("ActivationAPoZRankedFilterPruner", "desired_sparsity: 0.5, group_type: Channels",
     "group_type"),
    ("RandomRankedFilterPruner_AGP", "initial_sparsity: 0.1, final_sparsity: 0.5, "
     "group_type: Rows", "group_type"),
    ("L1RankedStructureParameterPruner", "desired_sparsity: 0.5, group_type: Filters, seed: 3",
     "seed: unknown key"),
    ("GradientRankedFilterPruner", "reg_regims: {conv1.weight: [0.5, '3D']}",
     "reg_regims is the older form of L1RankedStructureParameterPruner only"),
])
def test_filter_rankings_take_filters_only_and_no_foreign_keys(cls, body, match):
    weights = "" if "reg_regims" in body else ", weights: [conv1.weight]"
    text = (f"pruners:\n  p: {{class: {cls}, {body}{weights}}}\n"
            "policies:\n  - pruner: p\n    starting_epoch: 0\n    ending_epoch: 2\n")
    with pytest.raises(UserError, match=match):
        parse_recipe(text, "r.yaml")


@pytest.mark.parametrize("cls", ["ActivationAPoZRankedFilterPruner",
                                 "ActivationMeanRankedFilterPruner"])
def test_activation_ranking_never_sees_the_evaluation(cls):
    # An epoch of one minibatch ends before collect_batches: the ranking must use that training
    # batch, not the evaluation that runs after it (the test split would choose the filters).
    recipe = parse_recipe(f"""
pruners:
  p: {{class: {cls}, desired_sparsity: 0.5, group_type: Filters,
      weights: [module.layer1.0.conv1.weight, module.layer2.0.conv1.weight]}}
policies:
  - pruner: p
    epochs: [0]
""")

    assert _pruned_filters(recipe, list, _shifted()) == _pruned_filters(recipe, list, None)


def _shifted():
    """Evaluation batches unlike the training ones (they would rank filters differently)."""
    torch.manual_seed(1)
    return [(torch.randn(64, 3, 32, 32) * 3 - 2, torch.randint(0, 10, (64,))) for _ in range(4)]


def _pruned_filters(recipe, loader, eval_batches):
    """The filters of layer2.0.conv1 that one epoch of one training minibatch prunes."""
    torch.manual_seed(0)
    model = create_model("resnet20_cifar")
    schedule = build_scheduler(recipe, model, torch.zeros(1, 3, 32, 32))
    train = loader([(torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,)))])
    Trainer(model, train, TrainConfig(epochs=1, lr=1e-9, device="cpu"), callbacks=[schedule],
            eval_batches=eval_batches, progress=False).fit()
    schedule.finish()
    weight = model.layer2[0].conv1.weight
    return [int(c) for c in torch.nonzero(weight.flatten(1).abs().sum(1) == 0)]


class _Stream:
    """Training batches of unknown number (no len()), as a streaming loader yields them."""

    def __init__(self, batches):
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)


def test_activation_ranking_of_a_stream_never_sees_the_evaluation():
    # Batches of unknown number: the step prunes at the epoch's end, after the evaluation
    # ran; the ranking records training passes only.
    recipe = parse_recipe("""
pruners:
  p: {class: ActivationAPoZRankedFilterPruner, desired_sparsity: 0.5, group_type: Filters,
      weights: [module.layer2.0.conv1.weight]}
policies:
  - pruner: p
    epochs: [0]
""")

    assert _pruned_filters(recipe, _Stream, _shifted()) == _pruned_filters(recipe, _Stream, None)


@pytest.mark.parametrize("policy", ["starting_epoch: 2", "starting_epoch: 2\n    ending_epoch: 3",
                                    "epochs: [4]"])
@pytest.mark.parametrize("cls", ["AutomatedGradualPruner", "L1RankedStructureParameterPruner_AGP"])
def test_a_gradual_pruner_needs_a_policy_that_spans_two_firing_epochs(cls, policy):
    extra = ", group_type: Filters" if "Structure" in cls else ""
    text = f"""
pruners:
  agp: {{class: {cls}, initial_sparsity: 0.1, final_sparsity: 0.5{extra},
        weights: [module.layer1.0.conv1.weight]}}
policies:
  - pruner: agp
    {policy}
"""
    with pytest.raises(UserError, match="would prune to 0.5 at once: give its policy an "
                                        "ending_epoch"):
        build_scheduler(parse_recipe(text, "r.yaml"), create_model("resnet20_cifar"),
                        torch.zeros(1, 3, 32, 32))
