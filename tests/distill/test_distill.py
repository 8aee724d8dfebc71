"""Knowledge distillation: the loss by hand, the frozen teacher, hints, the schedule step."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from torchslim.core.errors import UserError
from torchslim.distill import (
    DistillationLoss,
    Hint,
    HintLoss,
    KnowledgeDistillation,
    Teacher,
    kd_loss,
)
from torchslim.schedule import CompressionScheduler, Policy
from torchslim.train import TrainConfig, Trainer


def test_kd_loss_matches_a_hand_computation():
    s = torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.5, 2.0]])
    t = torch.tensor([[3.0, 1.0, 0.0], [0.0, 1.0, 1.0]])
    T = 2.0
    expected = 0.0
    for srow, trow in zip(s.tolist(), t.tolist(), strict=True):
        zs = [math.exp(v / T) for v in srow]
        zt = [math.exp(v / T) for v in trow]
        ps = [v / sum(zs) for v in zs]
        pt = [v / sum(zt) for v in zt]
        expected += sum(p * math.log(p / q) for p, q in zip(pt, ps, strict=True))
    expected = expected / 2 * T**2
    assert float(kd_loss(s, t, T)) == pytest.approx(expected, rel=1e-5)
    assert float(kd_loss(s, t, T, t_squared=False)) == pytest.approx(expected / T**2, rel=1e-5)


def test_distillation_loss_is_alpha_weighted_sum():
    teacher = nn.Linear(4, 3)
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    out = torch.randn(8, 3)
    loss = DistillationLoss(teacher, temperature=3.0, alpha=0.25)(out, y, (x, y))
    expected = 0.25 * kd_loss(out, teacher(x), 3.0) + 0.75 * nn.functional.cross_entropy(out, y)
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)


def test_teacher_gets_no_gradient_and_stays_in_eval_mode():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.Linear(8, 3))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    teacher = Teacher(model)
    student = nn.Sequential(nn.Linear(4, 3))
    data = [(torch.randn(16, 4), torch.randint(0, 3, (16,))) for _ in range(4)]
    schedule = CompressionScheduler(student, example_input=torch.zeros(2, 4))
    schedule.add(KnowledgeDistillation(teacher), Policy(0), "kd")
    teacher.train()
    Trainer(student, data, TrainConfig(epochs=2, lr=0.1, device="cpu"), callbacks=[schedule],
            progress=False).fit()
    assert not model.training
    assert all(p.grad is None and not p.requires_grad for p in model.parameters())
    for key, value in model.state_dict().items():  # BatchNorm statistics untouched too
        assert torch.equal(value, before[key]), key


def test_distillation_moves_the_student_towards_the_teacher():
    torch.manual_seed(0)
    teacher = nn.Linear(6, 4)
    x = torch.randn(256, 6)
    y = torch.randint(0, 4, (256,))  # labels unrelated to the teacher
    data = [(x[i:i + 32], y[i:i + 32]) for i in range(0, 256, 32)]

    def agreement(distill_weight):
        torch.manual_seed(1)
        student = nn.Linear(6, 4)
        schedule = CompressionScheduler(student, example_input=x[:1])
        schedule.add(KnowledgeDistillation(teacher, distill_weight=distill_weight), Policy(0))
        Trainer(student, data, TrainConfig(epochs=10, lr=0.1, device="cpu"),
                callbacks=[schedule], progress=False).fit()
        return (student(x).argmax(1) == teacher(x).argmax(1)).float().mean().item()

    assert agreement(1.0) > agreement(0.0) + 0.2


def test_teacher_with_other_outputs_is_one_clear_error():
    schedule = CompressionScheduler(nn.Linear(4, 3), example_input=torch.zeros(1, 4))
    with pytest.raises(UserError, match=r"teacher's output shape \(1, 10\) differs .* \(1, 3\)"):
        schedule.add(KnowledgeDistillation(nn.Linear(4, 10)), Policy(0))


@pytest.mark.parametrize("kwargs,match", [
    ({"temperature": 0}, "temperature must be > 0"),
    ({"distill_weight": 1.5}, "at most 1"),
    ({"distill_weight": 0.5, "student_weight": -1}, "student_weight must be >= 0"),
])
def test_bad_settings_are_user_errors(kwargs, match):
    with pytest.raises(UserError, match=match):
        KnowledgeDistillation(nn.Linear(2, 2), **kwargs)


def _convnet(width):
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 5))


def test_hint_layer_that_matches_nothing_is_one_clear_error():
    with pytest.raises(UserError, match=r"hint layer '2x' matches no layer of the student "
                                        r"\(did you mean '2'"):
        HintLoss(_convnet(4), Teacher(_convnet(8)), [Hint("2x", "1")], torch.zeros(1, 3, 8, 8))


def test_hints_train_their_adapter_and_resume_with_it(tmp_path):
    torch.manual_seed(0)
    teacher = Teacher(_convnet(8))
    data = [(torch.randn(8, 3, 8, 8), torch.randint(0, 5, (8,))) for _ in range(3)]

    def run(out, epochs, resume=False):
        torch.manual_seed(0)
        student = _convnet(4)
        step = KnowledgeDistillation(teacher, hints=[Hint("1", "1", 0.5)])
        schedule = CompressionScheduler(student, example_input=torch.zeros(1, 3, 8, 8))
        schedule.add(step, Policy(0), "kd")
        trainer = Trainer(student, data, TrainConfig(epochs=3, lr=0.05, device="cpu"),
                          callbacks=[schedule], out_dir=out, progress=False)
        initial = step.hints.adapters["1"].weight.detach().clone()
        trainer.fit(resume=resume, until=epochs)
        schedule.finish()
        return student, step, trainer, initial

    student, step, trainer, initial = run(tmp_path / "a", 3)
    adapter = step.hints.adapters["1"].weight
    assert adapter.shape == (8, 4, 1, 1)
    assert not torch.equal(adapter, initial)  # the adapter learned
    assert any(adapter is p for g in trainer.optimizer.param_groups for p in g["params"])
    assert not student[1]._forward_hooks  # finish() removed the hooks
    run(tmp_path / "b", 1)
    resumed, resumed_step, _, _ = run(tmp_path / "b", 3, resume=True)
    assert torch.allclose(resumed_step.hints.adapters["1"].weight, adapter, atol=1e-6)
    for key, value in student.state_dict().items():
        assert torch.allclose(resumed.state_dict()[key], value, atol=1e-6), key


def test_hint_feature_maps_of_other_resolutions_are_refused():
    teacher = Teacher(nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU()))
    with pytest.raises(UserError, match="same resolution"):
        HintLoss(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1)), teacher, [Hint("0", "0")],
                 torch.zeros(1, 3, 8, 8))


def test_hints_follow_a_layer_that_factorization_replaces():
    from torchslim.lowrank.steps import FactorizationStep
    from torchslim.models import create_model

    torch.manual_seed(0)
    student = create_model("demo_cnn")
    teacher = Teacher(create_model("demo_cnn"))
    schedule = CompressionScheduler(student, example_input=torch.zeros(1, 1, 8, 8))
    schedule.add(KnowledgeDistillation(teacher, hints=[Hint("features.1.0", "features.1.0")]),
                 Policy(0), "kd")
    schedule.add(FactorizationStep("svd", ratio=0.5, layers=["features.1.0"]),
                 Policy(epochs=[1]), "lowrank")
    data = [(torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))) for _ in range(2)]
    Trainer(student, data, TrainConfig(epochs=3, lr=0.05, device="cpu"), callbacks=[schedule],
            progress=False).fit()
    schedule.finish()
    assert isinstance(student.features[1][0], nn.Sequential)  # factorized at epoch 1
    assert "kd" in schedule.log[2]["loss_components"]  # and the hint term still computed
