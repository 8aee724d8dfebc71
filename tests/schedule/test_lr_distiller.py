"""Distiller's LR schedules: MultiStepMultiGammaLR, ReduceLROnPlateau on the epoch's metrics."""

from __future__ import annotations

import pytest
import torch

from torchslim.core.errors import UserError
from torchslim.models import create_model
from torchslim.recipe import build_scheduler, parse_recipe
from torchslim.schedule import CompressionScheduler, LRSchedule, Policy


def _recipe(body: str):
    return parse_recipe(f"lr_schedulers:\n  lr:\n{body}\npolicies:\n  - lr_scheduler: lr\n"
                        "    starting_epoch: 0\n", "lr.yaml")


def _lrs(schedule, optimizer, epochs, metrics=None):
    lrs = []
    for epoch in range(epochs):
        schedule.on_epoch_begin(epoch, optimizer=optimizer)
        optimizer.step()
        schedule.on_epoch_end(epoch, optimizer=optimizer, metrics=metrics)
        lrs.append(round(optimizer.param_groups[0]["lr"], 6))
    return lrs


def test_multistep_multigamma_from_a_recipe():
    model = create_model("demo_cnn")
    schedule = build_scheduler(_recipe("    class: MultiStepMultiGammaLR\n"
                                       "    milestones: [1, 3]\n    gammas: [0.1, 0.5]"), model)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    assert _lrs(schedule, optimizer, 4) == [0.1, 0.1, 0.05, 0.05]


def test_reduce_on_plateau_steps_on_the_validation_loss():
    model = create_model("demo_cnn")
    schedule = build_scheduler(_recipe("    class: ReduceLROnPlateau\n    patience: 0\n"
                                       "    factor: 0.5"), model)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    assert _lrs(schedule, optimizer, 3, {"val_loss": 1.0}) == [1.0, 0.5, 0.25]


def test_reduce_on_plateau_without_the_metric_is_one_clear_error():
    model = torch.nn.Linear(2, 2)
    schedule = CompressionScheduler(model)
    schedule.add(LRSchedule("ReduceLROnPlateau"), Policy(0), "lr")
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    with pytest.raises(UserError, match="steps on 'val_loss', which this epoch did not measure"):
        _lrs(schedule, optimizer, 1)


def test_a_resumed_run_trains_at_the_learning_rate_it_had_reached(tmp_path):
    # Building the schedule on resume set the optimizer back to the first epoch's LR.
    from torchslim.train import TrainConfig, Trainer

    data = [(torch.randn(4, 3), torch.randint(0, 2, (4,))) for _ in range(2)]

    def trainer(out):
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 2)
        schedule = build_scheduler(_recipe("    class: MultiStepMultiGammaLR\n"
                                           "    milestones: [1, 2]\n    gammas: [0.1, 0.5]"),
                                   model)
        config = TrainConfig(epochs=4, device="cpu", schedule="constant", lr=1.0)
        seen = []

        def loss_fn(outputs, targets, batch):
            seen.append(round(run.optimizer.param_groups[0]["lr"], 6))
            return torch.nn.functional.cross_entropy(outputs, targets)

        run = Trainer(model, data, config, callbacks=[schedule], out_dir=out, progress=False,
                      loss_fn=loss_fn)
        return run, seen

    straight, seen = trainer(tmp_path / "a")
    straight.fit()
    assert seen == [1.0, 1.0, 0.1, 0.1, 0.05, 0.05, 0.05, 0.05]
    trainer(tmp_path / "b")[0].fit(until=2)
    resumed, seen = trainer(tmp_path / "b")
    resumed.fit(resume=True)
    assert seen == [0.05, 0.05, 0.05, 0.05]


def test_numbers_yaml_reads_as_text_are_numbers_in_every_lr_argument():
    # YAML 1.1 reads 1e-5 as a string: it reached torch as one and failed at the first cut.
    model = create_model("demo_cnn")
    schedule = build_scheduler(_recipe("    class: ReduceLROnPlateau\n    patience: 0\n"
                                       "    min_lr: 1e-5"), model)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)
    assert _lrs(schedule, optimizer, 3, {"val_loss": 1.0}) == [1e-4, 1e-5, 1e-5]
    schedule = build_scheduler(_recipe("    class: MultiStepMultiGammaLR\n"
                                       "    milestones: [1]\n    gammas: [1e-1]"), model)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    assert _lrs(schedule, optimizer, 2) == [0.1, 0.1]
    with pytest.raises(UserError, match="gammas"):
        build_scheduler(_recipe("    class: MultiStepMultiGammaLR\n"
                                "    milestones: [1]\n    gammas: [fast]"), model)
