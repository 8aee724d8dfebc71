"""Policies and the compression scheduler, alone and inside the Trainer (incl. resume)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from torchslim.core.errors import UserError
from torchslim.data import ArrayDataset, BatchLoader
from torchslim.pruning import AGPPruner, LevelPruner
from torchslim.pruning.regularizers import L1Regularizer
from torchslim.schedule import CompressionScheduler, LRSchedule, Policy, Step
from torchslim.train import TrainConfig, Trainer


class Recorder(Step):
    """A scheduled step that records the epochs it was called on."""

    kind = "recorder"

    def __init__(self) -> None:
        self.begin: list[int] = []
        self.end: list[int] = []

    def on_epoch_begin(self, ctx):
        self.begin.append(ctx.epoch)
        return {"progress": ctx.progress}

    def on_epoch_end(self, ctx):
        self.end.append(ctx.epoch)


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (Policy(0, 10, 2), [0, 2, 4, 6, 8]),
        (Policy(1, 4), [1, 2, 3]),
        (Policy(3), [3, 4, 5, 6, 7, 8, 9, 10, 11]),
        (Policy(2, None, 3), [2, 5, 8, 11]),
        (Policy(epochs=[5, 0, 5]), [0, 5]),
    ],
)
def test_policy_fires_exactly_on_its_epochs(policy, expected):
    assert [e for e in range(12) if policy.fires(e)] == expected


def test_policy_progress_is_zero_then_one_on_last_firing_epoch():
    policy = Policy(0, 10, 3)  # fires 0, 3, 6, 9
    assert policy.last == 9
    assert [policy.progress(e) for e in (0, 3, 6, 9)] == [0.0, 1 / 3, 2 / 3, 1.0]
    assert Policy(epochs=[4]).progress(4) == 1.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"starting_epoch": 5, "ending_epoch": 5}, "must be after"),
        ({"starting_epoch": -1}, ">= 0"),
        ({"frequency": 0}, "frequency"),
        ({"epochs": []}, "non-empty"),
    ],
)
def test_policy_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Policy(**kwargs)


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 20), nn.ReLU(), nn.Linear(20, 3))


def _data(n: int = 96, seed: int = 0) -> ArrayDataset:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 2, 3, 1), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 3, (n,), generator=g)
    return ArrayDataset(images, labels, ["a", "b", "c"])


class _Flat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = _mlp()

    def forward(self, x):
        return self.net(x.flatten(1))


def _scheduler(model: nn.Module) -> tuple[CompressionScheduler, Recorder]:
    scheduler = CompressionScheduler(model)
    recorder = Recorder()
    scheduler.add(AGPPruner(["net.0.weight", "net.2.weight"], 0.1, 0.75), Policy(0, 4), "agp")
    scheduler.add(recorder, Policy(1, 6, 2), "rec")
    scheduler.add(LRSchedule("MultiStepLR", milestones=[2], gamma=0.1), Policy(0), "lr")
    return scheduler, recorder


def _trainer(model, scheduler, out, epochs=5) -> Trainer:
    loader = BatchLoader(_data(), 16, shuffle=True, normalization="none", seed=1)
    config = TrainConfig(epochs=epochs, lr=0.05, schedule="constant", seed=0)
    return Trainer(model, loader, config, callbacks=[scheduler], out_dir=out, progress=False,
                   num_classes=3)


def test_scheduler_in_trainer_fires_on_named_epochs_and_reaches_final_sparsity(tmp_path):
    model = _Flat()
    scheduler, recorder = _scheduler(model)
    history = _trainer(model, scheduler, tmp_path).fit()
    assert recorder.begin == [1, 3] and recorder.end == [1, 3]
    assert [entry["fired"] for entry in scheduler.log] == [
        ["agp", "lr"], ["agp", "rec", "lr"], ["agp", "lr"], ["agp", "rec", "lr"], ["lr"]
    ]
    assert scheduler.log[3]["actions"]["agp"]["sparsity"]["net.0.weight"] == 0.75
    assert (model.net[0].weight == 0).float().mean().item() == 0.75
    assert [round(row["lr"], 6) for row in history] == [0.05, 0.05, 0.005, 0.005, 0.005]
    # the log's LR is the one each epoch trained at (as in the history), the next one beside it
    logged = [entry["actions"]["lr"] for entry in scheduler.log]
    assert [round(action["lr"][0], 6) for action in logged] == [0.05, 0.05, 0.005, 0.005, 0.005]
    assert round(logged[1]["next_lr"][0], 6) == 0.005
    assert "lr 0.05 (next epoch 0.005)" in scheduler.format_log()
    assert "agp: net.0.weight sparsity 0.7500" in scheduler.format_log()


def test_resumed_schedule_continues_exactly(tmp_path):
    straight = _Flat()
    scheduler, _ = _scheduler(straight)
    _trainer(straight, scheduler, tmp_path / "a").fit()

    first = _Flat()
    scheduler1, _ = _scheduler(first)
    _trainer(first, scheduler1, tmp_path / "b", epochs=2).fit()
    resumed = _Flat()  # a new process: fresh model, fresh scheduler
    scheduler2, recorder2 = _scheduler(resumed)
    _trainer(resumed, scheduler2, tmp_path / "b").fit(resume=True)

    assert recorder2.begin == [3]
    assert scheduler2.log == scheduler.log
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    for name in scheduler.services["masks"]:
        assert torch.equal(scheduler.services["masks"][name], scheduler2.services["masks"][name])


def test_resume_with_another_schedule_is_a_user_error(tmp_path):
    model = _Flat()
    scheduler, _ = _scheduler(model)
    _trainer(model, scheduler, tmp_path, epochs=1).fit()
    other = CompressionScheduler(model)
    other.add(LevelPruner({"net.0.weight": 0.5}), Policy(epochs=[0]), "level")
    with pytest.raises(UserError, match="resume with the same recipe"):
        _trainer(_Flat(), other, tmp_path).fit(resume=True)


def test_before_backward_pass_adds_regularizer_only_in_its_epochs_with_components():
    model = _mlp()
    scheduler = CompressionScheduler(model)
    scheduler.add(L1Regularizer({"0.weight": 0.5}), Policy(epochs=[1]), "l1")
    loss = torch.tensor(1.0)
    assert scheduler.before_backward_pass(0, 0, 1, loss) is loss
    result = scheduler.before_backward_pass(1, 0, 1, loss, return_loss_components=True)
    expected = 0.5 * model[0].weight.abs().sum()
    assert torch.allclose(result.overall_loss, 1.0 + expected)
    assert list(result.loss_components) == ["l1"]
    assert scheduler.last_loss_components["l1"] == pytest.approx(expected.item())


def test_duplicate_method_names_are_rejected():
    scheduler = CompressionScheduler(_mlp())
    scheduler.add(LevelPruner({"0.weight": 0.5}), Policy(epochs=[0]), "p")
    with pytest.raises(ValueError, match="already scheduled"):
        scheduler.add(LevelPruner({"2.weight": 0.5}), Policy(epochs=[0]), "p")


def test_lr_schedule_needs_an_optimizer():
    scheduler = CompressionScheduler(_mlp())
    scheduler.add(LRSchedule("StepLR", step_size=1), Policy(0), "lr")
    with pytest.raises(ValueError, match="optimizer"):
        scheduler.on_epoch_begin(0)


def test_policy_next_after():
    assert Policy(0, 10, 3).next_after(0) == 3 and Policy(0, 10, 3).next_after(4) == 6
    assert Policy(0, 10, 3).next_after(9) is None
    assert Policy(2).next_after(0) == 2
    assert Policy(epochs=[1, 5]).next_after(1) == 5 and Policy(epochs=[1, 5]).next_after(5) is None


def test_agp_prunes_between_epochs_with_interpolated_progress():
    from torchslim.pruning import PruneStep

    model = _mlp()
    agp = AGPPruner(["0.weight"], 0.0, 0.9)
    scheduler = CompressionScheduler(model)
    scheduler.add(PruneStep(agp, steps_per_epoch=4), Policy(0, 3), "agp")  # fires 0, 1, 2
    seen = []
    for epoch in range(3):
        scheduler.on_epoch_begin(epoch)
        for step in range(8):
            scheduler.on_minibatch_begin(epoch, step, 8)
            seen.append(scheduler.services["masks"].sparsity("0.weight"))
    at_steps = [seen[8 * e + 2 * k] for e in (0, 1) for k in range(4)]
    expected = [agp.target(e / 2 + k / 8) for e in (0, 1) for k in range(4)]
    assert at_steps == pytest.approx(expected, abs=0.5 / 120)  # 120 weights
    assert all(seen[i + 1] == seen[i] for i in range(0, 16, 2))  # pruned every 2nd minibatch
    assert seen[16:] == [0.9] * 8


def test_recipe_steps_per_epoch_reaches_the_scheduler():
    from torchslim.models import create_model
    from torchslim.recipe import build_scheduler, parse_recipe

    recipe = parse_recipe("""
pruners:
  agp: {class: AutomatedGradualPruner, initial_sparsity: 0.1, final_sparsity: 0.5,
        weights: [classifier.weight], steps_per_epoch: 20}
policies:
  - pruner: {instance_name: agp}
    starting_epoch: 0
    ending_epoch: 4
""")
    scheduler = build_scheduler(recipe, create_model("demo_cnn"))
    assert scheduler.entries[0].step.steps_per_epoch == 20


def test_steps_within_epochs_need_a_policy_firing_every_epoch():
    from torchslim.pruning import PruneStep

    scheduler = CompressionScheduler(_mlp())
    agp = AGPPruner(["0.weight"], 0.1, 0.5)
    with pytest.raises(UserError, match=r"steps_per_epoch \(4\) spreads pruning over the "
                                        "minibatches of every epoch, but the policy fires on "
                                        "epochs 0..6 every 2"):
        scheduler.add(PruneStep(agp, steps_per_epoch=4), Policy(0, 6, frequency=2), "agp")


class _Holding(Step):
    """A step that holds state no checkpoint saves while ``holding``."""

    def __init__(self, holding):
        self.holding, self.resumed = holding, []

    def on_epoch_resume(self, ctx):
        self.resumed.append(ctx.epoch)

    def mid_epoch_checkpoint_ok(self):
        return not self.holding


def test_mid_epoch_resume_reaches_the_firing_steps_and_any_step_can_veto_the_checkpoint():
    scheduler = CompressionScheduler(nn.Linear(2, 2))
    early, late = _Holding(False), _Holding(False)
    scheduler.add(early, Policy(0, 2), "early")
    scheduler.add(late, Policy(2), "late")
    scheduler.on_epoch_resume(1)
    assert early.resumed == [1] and late.resumed == []
    assert scheduler.mid_epoch_checkpoint_ok()
    late.holding = True
    assert not scheduler.mid_epoch_checkpoint_ok()
