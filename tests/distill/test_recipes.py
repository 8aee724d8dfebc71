"""Distillation from recipes: torchslim's class, Distiller's kd_* options, errors located."""

from __future__ import annotations

import pytest
import torch

from torchslim.core.errors import UserError
from torchslim.models import create_model
from torchslim.recipe import build_scheduler, parse_recipe
from torchslim.train import TrainConfig, Trainer


@pytest.fixture
def teacher_file(tmp_path):
    torch.manual_seed(3)
    path = tmp_path / "teacher.pt"
    torch.save(create_model("demo_cnn").state_dict(), path)
    return path


def _data():
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(16, 1, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g))
            for _ in range(2)]


def test_knowledge_distillation_with_pruning_in_one_schedule(teacher_file):
    recipe = parse_recipe(f"""
version: 1
pruners:
  agp: {{class: AutomatedGradualPruner, initial_sparsity: 0.2, final_sparsity: 0.6,
        weights: [features.1.0.weight]}}
distillers:
  kd:
    class: KnowledgeDistillation
    teacher: demo_cnn
    teacher_weights: {teacher_file}
    temperature: 3
    distill_weight: 0.7
    hints: [{{student: features.1.0, teacher: features.1.0}}]
policies:
  - pruner: {{instance_name: agp}}
    starting_epoch: 0
    ending_epoch: 2
  - distiller: {{instance_name: kd}}
    starting_epoch: 0
""", "kd.yaml")
    model = create_model("demo_cnn")
    schedule = build_scheduler(recipe, model, torch.zeros(1, 1, 8, 8))
    step = schedule.entries[1].step
    assert (step.temperature, step.distill_weight, step.student_weight) == (3.0, 0.7,
                                                                            pytest.approx(0.3))
    Trainer(model, _data(), TrainConfig(epochs=2, lr=0.05, device="cpu"), callbacks=[schedule],
            progress=False).fit()
    schedule.finish()
    weight = model.features[1][0].weight
    assert (weight == 0).float().mean().item() == pytest.approx(0.6, abs=0.01)  # masks held
    assert "kd" in schedule.log[-1]["loss_components"]


def test_distillers_kd_options_as_a_top_level_mapping(teacher_file):
    recipe = parse_recipe(f"""
distillation:
  kd_teacher: demo_cnn
  kd_resume: {teacher_file}
  kd_temp: 5.0
  kd_distill_wt: 0.7
  kd_student_wt: 0.3
  kd_start_epoch: 2
policies: []
""", "kd.yaml")
    schedule = build_scheduler(recipe, create_model("demo_cnn"), torch.zeros(1, 1, 8, 8))
    (entry,) = schedule.entries
    assert entry.policy.first == 2 and entry.step.t_squared is False
    assert (entry.step.temperature, entry.step.distill_weight) == (5.0, 0.7)


@pytest.mark.parametrize("body,match", [
    ("kd_teacher: demo_cnn\n  kd_teacher_wt: 0.5",
     r"kd\.yaml:5 distillation\.kd_teacher_wt: must be 0, got 0\.5: the teacher is frozen"),
    ("kd_teacher: demo_cnn\n  kd_temprature: 2", "unknown key .*did you mean 'kd_temp'"),
    ("kd_teacher: demo_cnn\n  kd_start_epoch: -1", "kd_start_epoch: must be an epoch >= 0"),
])
def test_bad_distillation_keys_are_located(body, match):
    with pytest.raises(UserError, match=match):
        parse_recipe(f"version: 1\npolicies: []\ndistillation:\n  {body}\n", "kd.yaml")


def test_teacher_problems_are_located_errors(teacher_file, tmp_path):
    text = """
distillers:
  kd: {{class: KnowledgeDistillation, teacher: {teacher}, teacher_weights: {weights}{extra}}}
policies:
  - distiller: kd
    starting_epoch: 0
"""
    cases = [
        ({"teacher": "demo_cnn", "weights": tmp_path / "missing.pt", "extra": ""},
         "kd.yaml:3 distillers.kd: .*missing.pt"),
        ({"teacher": "demo_cnn", "weights": teacher_file,
          "extra": ", hints: [{student: nope, teacher: features.1.0}]"},
         "kd.yaml:3 distillers.kd: hint layer 'nope' matches no layer of the student"),
        ({"teacher": "lenet5", "weights": teacher_file, "extra": ""},
         "kd.yaml:3 distillers.kd: .*teacher lenet5"),
    ]
    for values, match in cases:
        recipe = parse_recipe(text.format(**values), "kd.yaml")
        with pytest.raises(UserError, match=match):
            build_scheduler(recipe, create_model("demo_cnn"), torch.zeros(1, 1, 8, 8))


def test_teacher_with_other_classes_is_a_located_error(tmp_path):
    path = tmp_path / "t4.pt"
    torch.save(create_model("demo_cnn", num_classes=4).state_dict(), path)
    recipe = parse_recipe(f"""
distillers:
  kd: {{class: KnowledgeDistillation, teacher: demo_cnn, teacher_weights: {path},
       teacher_num_classes: 4}}
policies:
  - distiller: kd
    starting_epoch: 0
""", "kd.yaml")
    with pytest.raises(UserError, match=r"kd.yaml:3 .*output shape \(1, 4\) differs"):
        build_scheduler(recipe, create_model("demo_cnn"), torch.zeros(1, 1, 8, 8))


def test_recipe_teachers_predict_the_students_classes(tmp_path):
    path = tmp_path / "t5.pt"
    torch.save(create_model("demo_cnn", num_classes=5).state_dict(), path)
    for text in (f"distillers:\n  kd: {{class: KnowledgeDistillation, teacher: demo_cnn, "
                 f"teacher_weights: {path}}}\npolicies:\n  - distiller: kd\n"
                 "    starting_epoch: 0\n",
                 f"distillation: {{kd_teacher: demo_cnn, kd_resume: {path}}}\npolicies: []\n"):
        schedule = build_scheduler(parse_recipe(text), create_model("demo_cnn", num_classes=5),
                                   torch.zeros(1, 1, 8, 8))
        assert schedule.entries[0].step.teacher.model.classifier.out_features == 5
