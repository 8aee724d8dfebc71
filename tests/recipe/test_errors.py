"""Every way a recipe can be wrong gives one exact, located message: ``file:line key.path: what``.

Each case is a small YAML recipe and the full message it must produce, so a change in a line
number, a key path, the wording or the suggestions fails here.
"""

from __future__ import annotations

import json
import textwrap

import pytest

from torchslim.cli import main
from torchslim.core.errors import UserError
from torchslim.models import create_model
from torchslim.recipe import RecipeError, build_scheduler, parse_recipe

SECTIONS = (
    "valid: version, pruners, quantizers, regularizers, distillers, lr_schedulers, extensions, "
    "distillation, policies"
)
AGP_KEYS = "valid keys: initial_sparsity, final_sparsity, weights, scope, steps_per_epoch"
WEIGHT_HINT = "names may be exact, globs (layer*.conv*.weight) or regular expressions"
NOT_A_MAPPING = (
    "bad.yaml:1: a recipe must be a mapping with 'policies' and sections such as 'pruners', "
    "but the file is"
)


def yaml_text(text: str) -> str:
    """The recipe as written in a test: dedented, first line is line 1."""
    return textwrap.dedent(text).lstrip("\n")


PARSE_ERRORS = {
    "unknown_section": (
        """
        version: 1
        prunrs:
          p: {class: LevelParameterPruner, levels: {"*": 0.5}}
        policies:
          - pruner: {instance_name: p}
            epochs: [0]
        """,
        f"bad.yaml:2 prunrs: unknown section (did you mean 'pruners', 'quantizers'?); {SECTIONS}",
    ),
    "unknown_pruner_class": (
        """
        pruners:
          conv_pruner:
            class: AutomatedGradualPrunr
            initial_sparsity: 0.05
            final_sparsity: 0.5
            weights: [features.0.0.weight]
        policies:
          - pruner: {instance_name: conv_pruner}
            starting_epoch: 0
        """,
        "bad.yaml:3 pruners.conv_pruner.class: unknown pruner class 'AutomatedGradualPrunr' "
        "(did you mean 'AutomatedGradualPruner', 'StructuredAutomatedGradualPruner'?)",
    ),
    "quantizer_class_under_pruners": (
        """
        pruners:
          q:
            class: DorefaQuantizer
            bits_activations: 8
        policies:
          - pruner: {instance_name: q}
            starting_epoch: 0
        """,
        "bad.yaml:3 pruners.q.class: unknown pruner class 'DorefaQuantizer'; "
        "it belongs under 'quantizers'",
    ),
    "pruner_class_under_lr_schedulers": (
        """
        lr_schedulers:
          lr:
            class: AutomatedGradualPruner
        policies:
          - lr_scheduler: {instance_name: lr}
            starting_epoch: 0
        """,
        "bad.yaml:3 lr_schedulers.lr.class: unknown lr_scheduler class 'AutomatedGradualPruner'; "
        "it belongs under 'pruners'",
    ),
    "missing_class": (
        """
        pruners:
          p:
            levels: {"*": 0.5}
        policies:
          - pruner: {instance_name: p}
            epochs: [0]
        """,
        "bad.yaml:2 pruners.p: missing 'class': say which algorithm this instance is",
    ),
    "missing_required_argument": (
        """
        pruners:
          conv_pruner:
            class: AutomatedGradualPruner
            initial_sparsity: 0.05
            weights: [features.0.0.weight]
        policies:
          - pruner: {instance_name: conv_pruner}
            starting_epoch: 0
        """,
        "bad.yaml:2 pruners.conv_pruner.final_sparsity: required key is missing",
    ),
    "string_for_float": (
        """
        pruners:
          conv_pruner:
            class: AutomatedGradualPruner
            initial_sparsity: 0.05
            final_sparsity: high
            weights: [features.0.0.weight]
        policies:
          - pruner: {instance_name: conv_pruner}
            starting_epoch: 0
        """,
        "bad.yaml:5 pruners.conv_pruner.final_sparsity: input should be a valid number, "
        "got 'high'",
    ),
    "boolean_for_float": (
        """
        pruners:
          conv_pruner:
            class: AutomatedGradualPruner
            initial_sparsity: 0.05
            final_sparsity: true
            weights: [features.0.0.weight]
        policies:
          - pruner: {instance_name: conv_pruner}
            starting_epoch: 0
        """,
        "bad.yaml:5 pruners.conv_pruner.final_sparsity: input should be a valid number, got True",
    ),
    "nan_sparsity": (
        """
        pruners:
          p:
            class: LevelParameterPruner
            levels:
              features.0.0.weight: .nan
        policies:
          - pruner: {instance_name: p}
            epochs: [0]
        """,
        "bad.yaml:5 pruners.p.levels.features.0.0.weight: input should be a finite number, "
        "got nan",
    ),
    "number_in_weights_list": (
        """
        pruners:
          conv_pruner:
            class: AutomatedGradualPruner
            initial_sparsity: 0.05
            final_sparsity: 0.5
            weights:
              - features.0.0.weight
              - 3
        policies:
          - pruner: {instance_name: conv_pruner}
            starting_epoch: 0
        """,
        "bad.yaml:8 pruners.conv_pruner.weights[1]: input should be a valid string, got 3",
    ),
    "final_sparsity_above_one": (
        """
        version: 1
        pruners:
          conv_pruner:
            class: AutomatedGradualPruner
            initial_sparsity: 0.05
            final_sparsity: 1.2
            weights: [features.0.0.weight]
        policies:
          - pruner: {instance_name: conv_pruner}
            starting_epoch: 0
            ending_epoch: 10
            frequency: 2
        """,
        "bad.yaml:6 pruners.conv_pruner.final_sparsity: must be < 1, got 1.2",
    ),
    "final_sparsity_exactly_one": (
        """
        pruners:
          p:
            class: LevelParameterPruner
            levels: {features.0.0.weight: 1}
        policies:
          - pruner: {instance_name: p}
            epochs: [0]
        """,
        "bad.yaml:4 pruners.p.levels.features.0.0.weight: must be < 1, got 1",
    ),
    "negative_sparsity": (
        """
        pruners:
          conv_pruner:
            class: AutomatedGradualPruner
            initial_sparsity: -0.1
            final_sparsity: 0.5
            weights: [features.0.0.weight]
        policies:
          - pruner: {instance_name: conv_pruner}
            starting_epoch: 0
        """,
        "bad.yaml:4 pruners.conv_pruner.initial_sparsity: must be >= 0, got -0.1",
    ),
    "final_below_initial": (
        """
        pruners:
          conv_pruner:
            class: AutomatedGradualPruner
            initial_sparsity: 0.5
            final_sparsity: 0.2
            weights: [features.0.0.weight]
        policies:
          - pruner: {instance_name: conv_pruner}
            starting_epoch: 0
        """,
        "bad.yaml:5 pruners.conv_pruner.final_sparsity: must be >= initial_sparsity (0.5), "
        "got 0.2",
    ),
    "unknown_argument_key": (
        """
        pruners:
          conv_pruner:
            class: AutomatedGradualPruner
            initial_sparsity: 0.05
            final_sparsty: 0.5
            weights: [features.0.0.weight]
        policies:
          - pruner: {instance_name: conv_pruner}
            starting_epoch: 0
        """,
        "bad.yaml:5 pruners.conv_pruner.final_sparsty: unknown key (did you mean "
        f"'final_sparsity', 'initial_sparsity'?); {AGP_KEYS}",
    ),
    "literal_choice": (
        """
        pruners:
          conv_pruner:
            class: AutomatedGradualPruner
            initial_sparsity: 0.05
            final_sparsity: 0.5
            weights: [features.0.0.weight]
            scope: globl
        policies:
          - pruner: {instance_name: conv_pruner}
            starting_epoch: 0
        """,
        "bad.yaml:7 pruners.conv_pruner.scope: must be one of 'layer' or 'global', got 'globl'",
    ),
    "number_as_instance_name": (
        """
        pruners:
          1:
            class: LevelParameterPruner
            levels: {"*": 0.5}
        policies:
          - pruner: {instance_name: "1"}
            epochs: [0]
        """,
        "bad.yaml:2 pruners.1: keys must be text, but YAML reads '1' as int; "
        "put it in quotes if it is a name",
    ),
    "boolean_as_section_key": (
        """
        policies: []
        on: 3
        """,
        "bad.yaml:2 on: keys must be text, but YAML reads 'on' as bool; "
        "put it in quotes if it is a name",
    ),
    "line_break_in_a_key_stays_on_one_line": (
        """
        "pru\\u2028ners": {}
        policies: []
        """,
        "bad.yaml:1 pru\\u2028ners: unknown section (did you mean 'pruners', 'quantizers', "
        f"'regularizers'?); {SECTIONS}",
    ),
    "line_break_in_a_value_stays_on_one_line": (
        """
        policies:
          - pruner: {instance_name: "p\\nq"}
            epochs: [0]
        """,
        "bad.yaml:2 policies[0].pruner.instance_name: no pruner named 'p\\nq' in 'pruners'; "
        "defined pruners: none",
    ),
    "seed_too_large": (
        """
        pruners:
          p:
            class: RandomPruner
            weights: ["*"]
            sparsity: 0.5
            seed: 99999999999999999999
        policies:
          - pruner: p
            epochs: [0]
        """,
        "bad.yaml:6 pruners.p.seed: must be < 9223372036854775808, got 99999999999999999999",
    ),
    "weight_regex_too_large": (
        """
        pruners:
          p:
            class: LevelParameterPruner
            levels:
              "features.0.0.weigh{99999999999}": 0.5
        policies:
          - pruner: {instance_name: p}
            epochs: [0]
        """,
        "bad.yaml:5 pruners.p.levels.features.0.0.weigh{99999999999}: not a usable weight name "
        "or pattern: the repetition number is too large",
    ),
    "ending_before_starting": (
        """
        pruners:
          p: {class: LevelParameterPruner, levels: {"*": 0.5}}
        policies:
          - pruner: {instance_name: p}
            starting_epoch: 5
            ending_epoch: 3
            frequency: 1
        """,
        "bad.yaml:6 policies[0].ending_epoch: must be after starting_epoch (5), got 3",
    ),
    "frequency_zero": (
        """
        pruners:
          p: {class: LevelParameterPruner, levels: {"*": 0.5}}
        policies:
          - pruner: {instance_name: p}
            starting_epoch: 0
            ending_epoch: 10
            frequency: 0
        """,
        "bad.yaml:7 policies[0].frequency: must be >= 1, got 0",
    ),
    "epoch_not_an_integer": (
        """
        pruners:
          p: {class: LevelParameterPruner, levels: {"*": 0.5}}
        policies:
          - pruner: {instance_name: p}
            starting_epoch: 1.5
        """,
        "bad.yaml:5 policies[0].starting_epoch: must be an integer, got 1.5",
    ),
    "negative_epoch_in_list": (
        """
        pruners:
          p: {class: LevelParameterPruner, levels: {"*": 0.5}}
        policies:
          - pruner: {instance_name: p}
            epochs: [0, -1]
        """,
        "bad.yaml:5 policies[0].epochs: must be a non-empty list of epochs >= 0, got [0, -1]",
    ),
    "timing_inside_reference_twice": (
        """
        pruners:
          p: {class: LevelParameterPruner, levels: {"*": 0.5}}
        policies:
          - pruner:
              instance_name: p
              starting_epoch: 0
            starting_epoch: 0
        """,
        "bad.yaml:7 policies[0].starting_epoch: given twice (inside the reference and beside it)",
    ),
    "policy_missing_instance": (
        """
        pruners:
          conv_pruner: {class: LevelParameterPruner, levels: {"*": 0.5}}
        policies:
          - pruner:
              instance_name: conv_prunr
            epochs: [0]
        """,
        "bad.yaml:5 policies[0].pruner.instance_name: no pruner named 'conv_prunr' in 'pruners' "
        "(did you mean 'conv_pruner'?)",
    ),
    "policy_missing_instance_nothing_close": (
        """
        pruners:
          conv_pruner: {class: LevelParameterPruner, levels: {"*": 0.5}}
        policies:
          - pruner: {instance_name: xyz}
            epochs: [0]
        """,
        "bad.yaml:4 policies[0].pruner.instance_name: no pruner named 'xyz' in 'pruners'; "
        "defined pruners: ['conv_pruner']",
    ),
    "policy_instance_in_other_section": (
        """
        pruners:
          conv_pruner: {class: LevelParameterPruner, levels: {"*": 0.5}}
        lr_schedulers:
          lr: {class: MultiStepLR, milestones: [2, 4]}
        policies:
          - pruner: {instance_name: conv_pruner}
            epochs: [0]
          - pruner: {instance_name: lr}
            starting_epoch: 0
        """,
        "bad.yaml:8 policies[1].pruner.instance_name: no pruner named 'lr' in 'pruners'; "
        "'lr' is in 'lr_schedulers', so use 'lr_scheduler:'",
    ),
    "policy_unknown_kind": (
        """
        pruners:
          p: {class: LevelParameterPruner, levels: {"*": 0.5}}
        policies:
          - prunner: {instance_name: p}
            epochs: [0]
        """,
        "bad.yaml:4 policies[0].prunner: unknown key (did you mean 'pruner', 'quantizer'?)",
    ),
    "policy_two_kinds": (
        """
        pruners:
          p: {class: LevelParameterPruner, levels: {"*": 0.5}}
        lr_schedulers:
          lr: {class: MultiStepLR, milestones: [2, 4]}
        policies:
          - pruner: {instance_name: p}
            lr_scheduler: {instance_name: lr}
            epochs: [0]
        """,
        "bad.yaml:6 policies[0]: a policy names exactly one of pruner, quantizer, regularizer, "
        "distiller, lr_scheduler, extension; found ['pruner', 'lr_scheduler']",
    ),
    "policy_without_timing": (
        """
        pruners:
          p: {class: LevelParameterPruner, levels: {"*": 0.5}}
        policies:
          - pruner: {instance_name: p}
        """,
        "bad.yaml:4 policies[0]: say when it acts: 'starting_epoch' (with 'ending_epoch', "
        "'frequency') or 'epochs'",
    ),
    "policy_epochs_and_starting_epoch": (
        """
        pruners:
          p: {class: LevelParameterPruner, levels: {"*": 0.5}}
        policies:
          - pruner: {instance_name: p}
            epochs: [0, 2]
            starting_epoch: 0
        """,
        "bad.yaml:6 policies[0].starting_epoch: give either 'epochs' or starting/ending epochs",
    ),
    "policies_not_a_list": (
        """
        pruners:
          p: {class: LevelParameterPruner, levels: {"*": 0.5}}
        policies:
          pruner: {instance_name: p}
          epochs: [0]
        """,
        "bad.yaml:3 policies: must be a list of policies (entries start with '- ')",
    ),
    "no_policies": (
        """
        pruners:
          p: {class: LevelParameterPruner, levels: {"*": 0.5}}
        """,
        "bad.yaml: the recipe has no 'policies': nothing would ever run; to apply its one "
        "instance from the first epoch, add 'policies: [{pruner: {instance_name: \"p\"}, "
        "starting_epoch: 0}]'",
    ),
    "no_policies_two_instances": (
        """
        pruners:
          p: {class: LevelParameterPruner, levels: {"*": 0.5}}
          q: {class: LevelParameterPruner, levels: {"*": 0.7}}
        """,
        "bad.yaml: the recipe has no 'policies': nothing would ever run",
    ),
    "section_not_a_mapping": (
        """
        pruners:
          - p
        policies: []
        """,
        "bad.yaml:1 pruners: must be a mapping of named instances, got ['p']",
    ),
    "invalid_yaml_syntax": (
        """
        pruners:
          p:
            class: LevelParameterPruner
            levels: {"*": 0.5
        policies:
          - pruner: {instance_name: p}
            epochs: [0]
        """,
        "bad.yaml:5: not valid YAML: expected ',' or '}', but got ':'",
    ),
    "tab_indentation": (
        "pruners:\n\tp: 1\n",
        "bad.yaml:2: not valid YAML: found character '\\t' that cannot start any token",
    ),
    "invalid_date": (
        """
        version: 2020-13-01
        policies: []
        """,
        "bad.yaml:1: not valid YAML: '2020-13-01' is not a valid timestamp",
    ),
    "explicit_tag_that_does_not_fit": (
        """
        policies:
          - pruner:
              instance_name: !!int
            epochs: [0]
        """,
        "bad.yaml:3: not valid YAML: '' is not a valid int",
    ),
    "empty_file": ("", f"{NOT_A_MAPPING} empty"),
    "only_comments": ("# a recipe\n# to be written\n", f"{NOT_A_MAPPING} empty"),
    "a_list_not_a_mapping": ("- pruners\n- policies\n", f"{NOT_A_MAPPING} a list"),
    "not_yet_supported_pruner": (
        """
        regularizers:
          rnn:
            class: DropFilterRegularizer
        policies:
          - regularizer: {instance_name: rnn}
            starting_epoch: 0
        """,
        "bad.yaml:3 regularizers.rnn.class: 'DropFilterRegularizer' is not yet supported by "
        "torchslim: dropping random filters while training (DropFilter) is not implemented yet",
    ),
    "quantizer_bit_width_out_of_range": (
        """
        quantizers:
          dorefa_quantizer:
            class: DorefaQuantizer
            bits_activations: 8
            bits_weights: 16
        policies:
          - quantizer: {instance_name: dorefa_quantizer}
            starting_epoch: 0
        """,
        "bad.yaml:5 quantizers.dorefa_quantizer.bits_weights: must be <= 8, got 16",
    ),
    "distillation_with_torchslim_keys": (
        """
        distillation:
          teacher: resnet56
        policies: []
        """,
        "bad.yaml:2 distillation.teacher: unknown key (did you mean 'kd_teacher', "
        "'kd_teacher_wt'?); valid keys: kd_teacher, kd_resume, kd_pretrained, kd_temp, "
        "kd_distill_wt, kd_student_wt, kd_teacher_wt",
    ),
    "lr_scheduler_unknown_argument": (
        """
        lr_schedulers:
          training_lr:
            class: MultiStepLR
            milestones: [5, 8]
            gama: 0.5
        policies:
          - lr_scheduler: {instance_name: training_lr}
            starting_epoch: 0
        """,
        "bad.yaml:5 lr_schedulers.training_lr.gama: unknown key (did you mean 'gamma'?); "
        "MultiStepLR takes: milestones, gamma",
    ),
    "lr_scheduler_missing_argument": (
        """
        lr_schedulers:
          training_lr:
            class: MultiStepLR
            gamma: 0.5
        policies:
          - lr_scheduler: {instance_name: training_lr}
            starting_epoch: 0
        """,
        "bad.yaml:2 lr_schedulers.training_lr.milestones: required key is missing for MultiStepLR",
    ),
    "lr_scheduler_string_for_float": (
        """
        lr_schedulers:
          training_lr:
            class: MultiStepLR
            milestones: [5, 8]
            gamma: half
        policies:
          - lr_scheduler: {instance_name: training_lr}
            starting_epoch: 0
        """,
        "bad.yaml:5 lr_schedulers.training_lr.gamma: input should be a valid number, got 'half'",
    ),
    "lr_scheduler_bad_milestone": (
        """
        lr_schedulers:
          training_lr:
            class: MultiStepLR
            milestones: [5, eight]
        policies:
          - lr_scheduler: {instance_name: training_lr}
            starting_epoch: 0
        """,
        "bad.yaml:4 lr_schedulers.training_lr.milestones[1]: input should be a valid integer, "
        "got 'eight'",
    ),
    "lr_scheduler_infinite_number": (
        """
        lr_schedulers:
          one_cycle: {class: OneCycleLR, max_lr: .inf, total_steps: 10}
        policies:
          - lr_scheduler: one_cycle
            starting_epoch: 0
        """,
        "bad.yaml:2 lr_schedulers.one_cycle.max_lr: input should be a finite number, got inf",
    ),
    "lr_scheduler_fails_on_first_step": (
        """
        lr_schedulers:
          training_lr:
            class: StepLR
            step_size: 0
        policies:
          - lr_scheduler: {instance_name: training_lr}
            starting_epoch: 0
        """,
        "bad.yaml:2 lr_schedulers.training_lr: invalid arguments for StepLR: "
        "integer modulo by zero",
    ),
    "unknown_lr_scheduler_class": (
        """
        lr_schedulers:
          training_lr:
            class: MultiStepLr
            milestones: [5, 8]
        policies:
          - lr_scheduler: {instance_name: training_lr}
            starting_epoch: 0
        """,
        "bad.yaml:3 lr_schedulers.training_lr.class: unknown lr_scheduler class 'MultiStepLr' "
        "(did you mean 'MultiStepLR', 'MultiStepMultiGammaLR', 'StepLR'?)",
    ),
    "version_2": (
        """
        version: 2
        policies: []
        """,
        "bad.yaml:1 version: only version 1 exists, got 2",
    ),
    "version_true": (
        """
        version: true
        policies: []
        """,
        "bad.yaml:1 version: only version 1 exists, got True",
    ),
}


@pytest.mark.parametrize(
    "text,expected", list(PARSE_ERRORS.values()), ids=list(PARSE_ERRORS)
)
def test_parse_error_message(text, expected):
    with pytest.raises(RecipeError) as info:
        parse_recipe(yaml_text(text), "bad.yaml")
    assert str(info.value) == expected


BUILD_ERRORS = {
    "weight_list_entry": (
        """
        pruners:
          conv_pruner:
            class: AutomatedGradualPruner
            initial_sparsity: 0.05
            final_sparsity: 0.5
            weights:
              - features.0.0.weight
              - features.1.0.weigth
        policies:
          - pruner: {instance_name: conv_pruner}
            starting_epoch: 0
            ending_epoch: 10
            frequency: 2
        """,
        "bad.yaml:8 pruners.conv_pruner.weights[1]: weight name 'features.1.0.weigth' matches "
        "no parameter of the model (did you mean 'features.1.0.weight', 'features.3.0.weight', "
        f"'features.1.1.weight'?); {WEIGHT_HINT}",
    ),
    "levels_key": (
        """
        pruners:
          p:
            class: LevelParameterPruner
            levels:
              features.0.0.weight: 0.5
              features.9.0.weight: 0.5
        policies:
          - pruner: {instance_name: p}
            epochs: [0]
        """,
        "bad.yaml:6 pruners.p.levels.features.9.0.weight: weight name 'features.9.0.weight' "
        "matches no parameter of the model (did you mean 'features.3.0.weight', "
        f"'features.1.0.weight', 'features.0.0.weight'?); {WEIGHT_HINT}",
    ),
    "glob_matching_nothing": (
        """
        regularizers:
          l1:
            class: L1Regularizer
            reg_regims:
              "layer*.conv*.weight": 0.0001
        policies:
          - regularizer: {instance_name: l1}
            starting_epoch: 0
        """,
        "bad.yaml:5 regularizers.l1.reg_regims.layer*.conv*.weight: weight name "
        "'layer*.conv*.weight' matches no parameter of the model (did you mean "
        f"'classifier.weight', 'features.3.1.weight', 'features.3.0.weight'?); {WEIGHT_HINT}",
    ),
}


@pytest.mark.parametrize(
    "text,expected", list(BUILD_ERRORS.values()), ids=list(BUILD_ERRORS)
)
def test_weight_name_error_message(text, expected):
    recipe = parse_recipe(yaml_text(text), "bad.yaml")  # valid until bound to a model
    with pytest.raises(RecipeError) as info:
        build_scheduler(recipe, create_model("demo_cnn"))
    assert str(info.value) == expected


def test_exponent_without_a_dot_is_still_a_number():
    """YAML 1.1 reads ``5e-1`` as text; numbers are strict (no booleans) but take it as 0.5."""
    recipe = parse_recipe(yaml_text("""
        pruners:
          p: {class: LevelParameterPruner, levels: {"*": 5e-1}}
        lr_schedulers:
          lr: {class: StepLR, step_size: 2, gamma: 1e-1}
        policies:
          - pruner: p
            epochs: [0]
          - lr_scheduler: lr
            starting_epoch: 0
        """), "ok.yaml")
    assert recipe.instances[("pruners", "p")].args.levels == {"*": 0.5}
    assert recipe.instances[("lr_schedulers", "lr")].args == {"step_size": 2, "gamma": 0.1}


def test_recipe_error_is_a_user_error():
    assert issubclass(RecipeError, UserError)


def test_alias_bomb_is_rejected_quickly():
    """Seven levels of nine aliases stand for 9**7 nodes: each must be walked once, not 9**7
    times (that took minutes)."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 7)]
    lines += ["policies: [*a6]"]
    with pytest.raises(RecipeError) as info:
        parse_recipe("\n".join(lines) + "\n", "bad.yaml")
    assert str(info.value).startswith("bad.yaml:1 a0: unknown section; valid: ")


def _compress(recipe, tmp_path):
    return main([
        "compress", "--recipe", str(recipe), "--model", "demo_cnn", "--data", "digits",
        "--epochs", "1", "--out", str(tmp_path / "o"),
    ])


def test_cli_bad_recipe_is_one_line_exit_2(tmp_path, capsys):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(yaml_text(PARSE_ERRORS["final_sparsity_above_one"][0]), encoding="utf-8")
    assert _compress(recipe, tmp_path) == 2
    err = capsys.readouterr().err
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith("torchslim compress: error: ")
    assert "bad.yaml:" in err and "Traceback" not in err
    assert err == (
        "torchslim compress: error: "
        f"{PARSE_ERRORS['final_sparsity_above_one'][1]}\n"
    )
    assert not (tmp_path / "o").exists()


def test_cli_weight_name_error_is_one_line_exit_2(tmp_path, capsys):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(yaml_text(BUILD_ERRORS["levels_key"][0]), encoding="utf-8")
    assert _compress(recipe, tmp_path) == 2
    err = capsys.readouterr().err
    assert err == f"torchslim compress: error: {BUILD_ERRORS['levels_key'][1]}\n"


def test_cli_missing_recipe_file(tmp_path, capsys):
    missing = tmp_path / "nope.yaml"
    assert _compress(missing, tmp_path) == 2
    err = capsys.readouterr().err
    assert err == (
        f"torchslim compress: error: recipe file '{missing}' not found: "
        "check the path given to --recipe\n"
    )


def test_cli_binary_recipe_file(tmp_path, capsys):
    recipe = tmp_path / "bad.yaml"
    recipe.write_bytes(b"\xff\xfe\x00policies")
    assert _compress(recipe, tmp_path) == 2
    err = capsys.readouterr().err
    assert err == "torchslim compress: error: bad.yaml: not a text file (expected YAML)\n"


@pytest.mark.parametrize("name", ["p", "p, q", "p: q", "yes"])
def test_the_policy_a_recipe_without_policies_is_told_to_add_works(name):
    text = (f"pruners:\n  {json.dumps(name)}: "
            "{class: LevelParameterPruner, levels: {'*': 0.5}}\n")
    with pytest.raises(RecipeError) as caught:
        parse_recipe(text, "bad.yaml")
    message = str(caught.value)
    assert "\n" not in message
    suggestion = message.split("add '", 1)[1].rstrip("'")
    recipe = parse_recipe(text + suggestion + "\n", "fixed.yaml")
    assert [p.instance for p in recipe.policies] == [name]
