"""``torchslim distill``: a student trained on a teacher's soft targets, and one-line errors."""

import re

import pytest

from torchslim.cli import main as cli_main
from torchslim.models import create_model, load_weights

from .test_cli import last_json


def main(args):
    return cli_main([str(a) for a in args])


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher")
    assert main(["train", "--model", "demo_cnn", "--data", "digits", "--epochs", "6",
                 "--batch-size", "64", "--lr", "0.05", "--out", out, "--quiet"]) == 0
    return out / "model.pt"


def _distill(teacher, out, *extra):
    return ["distill", "--model", "demo_cnn", "--teacher", "demo_cnn", "--teacher-weights",
            teacher, "--data", "digits", "--batch-size", "64", "--repeats", "2",
            "--latency-batch", "16", "--out", out, "--json", "--quiet", *extra]


def test_distill_trains_a_student_that_reloads(teacher, tmp_path, capsys):
    out = tmp_path / "student"
    assert main(_distill(teacher, out, "--epochs", "4", "--lr", "0.05",
                         "--hint", "features.1.0:features.1.0:0.5")) == 0
    payload = last_json(capsys.readouterr().out)
    assert payload["rows"][1]["name"] == "demo_cnn (distilled from demo_cnn)"
    assert payload["top1"] > 80.0  # 4 epochs from scratch on digits, taught by a good teacher
    assert payload["device"] == "cpu"  # --device auto, no GPU in the tests' machines
    student = load_weights(create_model("demo_cnn"), payload["model_path"])
    assert not any("adapter" in key for key in student.state_dict())  # adapters stay outside
    log = (out / "schedule.txt").read_text()
    assert "fired distillation" in log and "loss term" in log


@pytest.mark.parametrize("extra,match", [
    (("--hint", "features.9:features.1.0"), "hint layer 'features.9' matches no layer of the "
                                            "student"),
    (("--teacher", "lenet5"), "the teacher cannot run on the student's inputs|teacher lenet5"),
    (("--alpha", "1.5"), r"--alpha must be in \[0, 1\], got 1.5"),
    (("--teacher-weights", "nope.pt"), "teacher checkpoint 'nope.pt' does not exist"),
    (("--teacher", "resnet9000"), "resnet9000"),
])
def test_user_mistakes_are_one_line_and_exit_2(teacher, tmp_path, capsys, extra, match):
    args = _distill(teacher, tmp_path / "s", "--epochs", "1", "--limit", "64")
    for flag, value in zip(extra[::2], extra[1::2], strict=True):
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("torchslim distill: error: ")
    assert re.search(match, err), err


def test_compress_with_a_teacher_adds_distillation_to_the_recipe(teacher, tmp_path, capsys):
    out = tmp_path / "agp_kd"
    args = ["compress", "--recipe", "demo_agp", "--model", "demo_cnn", "--weights", teacher,
            "--data", "digits", "--epochs", "2", "--batch-size", "64", "--teacher", "demo_cnn",
            "--teacher-weights", teacher, "--temperature", "2", "--repeats", "2",
            "--latency-batch", "16", "--out", out, "--json", "--quiet"]
    assert main(args) == 0
    payload = last_json(capsys.readouterr().out)
    assert payload["rows"][1]["name"] == "demo_cnn (demo_agp, distilled from demo_cnn)"
    assert payload["sparsity"] > 0.5
    log = (out / "schedule.txt").read_text()
    assert "fired conv_pruner, distillation" in log


def test_compress_teacher_weights_without_a_teacher_is_one_line(teacher, tmp_path, capsys):
    assert main(["compress", "--recipe", "demo_agp", "--model", "demo_cnn", "--data", "digits",
                 "--teacher-weights", teacher, "--out", tmp_path, "--quiet"]) == 2
    assert "name it with --teacher" in capsys.readouterr().err


def test_compress_recipe_with_hints_an_lr_schedule_and_a_teacher_flag(teacher, tmp_path, capsys):
    recipe = tmp_path / "kd.yaml"
    recipe.write_text(f"""
distillers:
  distillation:
    class: KnowledgeDistillation
    teacher: demo_cnn
    teacher_weights: {teacher}
    hints: [{{student: features.1.0, teacher: features.1.0}}]
lr_schedulers:
  lr: {{class: MultiStepMultiGammaLR, milestones: [1], gammas: [0.5]}}
policies:
  - distiller: distillation
    starting_epoch: 0
  - lr_scheduler: lr
    starting_epoch: 0
""")
    args = ["compress", "--recipe", recipe, "--model", "demo_cnn", "--data", "digits",
            "--epochs", "2", "--batch-size", "64", "--limit", "256", "--teacher", "demo_cnn",
            "--teacher-weights", teacher, "--hint", "features.3.0:features.3.0",
            "--distill-from-epoch", "1", "--repeats", "2", "--latency-batch", "16",
            "--out", tmp_path / "out", "--json", "--quiet"]
    assert main(args) == 0
    log = (tmp_path / "out" / "schedule.txt").read_text()
    assert "epoch 1: fired distillation, lr, distillation#2" in log
