import csv

import pytest
import torch
from torch import nn

from torchslim.core.errors import UserError
from torchslim.train import Callback, TrainConfig, Trainer, evaluate


class ShuffledBatches:
    """A tiny loader whose order depends on (seed, epoch), like torchslim.data.BatchLoader."""

    def __init__(self, n=64, batch=16, seed=0):
        g = torch.Generator().manual_seed(123)
        self.x = torch.randn(n, 4, generator=g)
        self.y = (self.x[:, 0] + self.x[:, 1] > 0).long()
        self.batch, self.seed, self.epoch = batch, seed, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return len(self.x) // self.batch

    def __iter__(self):
        order = torch.randperm(len(self.x), generator=torch.Generator().manual_seed(
            self.seed * 1000 + self.epoch))
        for i in range(len(self)):
            idx = order[i * self.batch:(i + 1) * self.batch]
            yield self.x[idx], self.y[idx]


def make_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 2))


class Recorder(Callback):
    def __init__(self):
        self.calls = []
        self.fired = 0

    def on_epoch_begin(self, epoch, **kw):
        self.calls.append(("on_epoch_begin", epoch))

    def on_minibatch_begin(self, epoch, minibatch_id, minibatches_per_epoch, **kw):
        self.calls.append(("on_minibatch_begin", epoch, minibatch_id, minibatches_per_epoch))

    def before_backward_pass(self, epoch, minibatch_id, minibatches_per_epoch, loss, **kw):
        assert {"optimizer", "inputs", "outputs", "targets"} <= set(kw)
        self.calls.append(("before_backward_pass", epoch, minibatch_id))
        return None

    def on_minibatch_end(self, epoch, minibatch_id, minibatches_per_epoch, **kw):
        self.calls.append(("on_minibatch_end", epoch, minibatch_id))

    def on_epoch_end(self, epoch, **kw):
        assert "val_top1" in kw["metrics"]
        self.calls.append(("on_epoch_end", epoch))
        self.fired += 1

    def state_dict(self):
        return {"fired": self.fired}

    def load_state_dict(self, state):
        self.fired = state["fired"]


def test_hooks_are_called_in_order():
    data = ShuffledBatches(n=32, batch=16)
    recorder = Recorder()
    Trainer(make_model(), data, TrainConfig(epochs=2, lr=0.1), eval_batches=data,
            callbacks=[recorder], progress=False).fit()
    expected = []
    for epoch in range(2):
        expected.append(("on_epoch_begin", epoch))
        for step in range(2):
            expected += [("on_minibatch_begin", epoch, step, 2),
                         ("before_backward_pass", epoch, step),
                         ("on_minibatch_end", epoch, step)]
        expected.append(("on_epoch_end", epoch))
    assert recorder.calls == expected


def test_before_backward_pass_can_replace_the_loss():
    class Penalty(Callback):
        def before_backward_pass(self, epoch, minibatch_id, minibatches_per_epoch, loss, **kw):
            return loss + 10.0 * model[0].weight.pow(2).sum()

    model = make_model()
    start = model[0].weight.norm().item()
    config = TrainConfig(epochs=3, lr=0.01, momentum=0.0, weight_decay=0, schedule="constant")
    Trainer(model, ShuffledBatches(), config, callbacks=[Penalty()], progress=False).fit()
    assert model[0].weight.norm().item() < 0.2 * start  # only the added term shrinks it so


def test_training_learns_and_writes_checkpoint_metrics_and_model(tmp_path):
    data = ShuffledBatches(n=256)
    model = make_model()
    before = evaluate(model, data, 2).top1
    history = Trainer(model, data, TrainConfig(epochs=5, lr=0.2), eval_batches=data,
                      out_dir=tmp_path, progress=False).fit()
    assert history[-1]["val_top1"] > max(before, 85.0)
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3, 4]
    assert {"lr", "train_loss", "train_top1", "val_top1", "val_top5", "seconds"} <= set(rows[0])
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 4 and {"model", "optimizer", "lr_scheduler", "rng"} <= set(state)
    final = torch.load(tmp_path / "model.pt", weights_only=True)["state_dict"]
    assert torch.equal(final["0.weight"], model[0].weight)
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("schedule,expected", [
    ("step", [0.1, 0.1, 0.01, 0.01]),
    ("multistep", [0.1, 0.01, 0.01, 0.001]),
    ("constant", [0.1, 0.1, 0.1, 0.1]),
])
def test_lr_schedules(schedule, expected):
    config = TrainConfig(epochs=4, lr=0.1, schedule=schedule, step_size=2, milestones=[1, 3])
    history = Trainer(make_model(), ShuffledBatches(), config, progress=False).fit()
    assert [round(row["lr"], 6) for row in history] == expected


def test_cosine_schedule_decays_to_near_zero():
    history = Trainer(make_model(), ShuffledBatches(), TrainConfig(epochs=4, lr=0.1),
                      progress=False).fit()
    lrs = [row["lr"] for row in history]
    assert lrs[0] == pytest.approx(0.1) and lrs == sorted(lrs, reverse=True) and lrs[-1] < 0.02


def test_adamw_runs():
    history = Trainer(make_model(), ShuffledBatches(), TrainConfig(epochs=2, optimizer="adamw",
                      lr=1e-2), progress=False).fit()
    assert len(history) == 2


def test_same_seed_same_result_on_cpu():
    runs = []
    for _ in range(2):
        model = make_model()
        Trainer(model, ShuffledBatches(), TrainConfig(epochs=2, seed=7, device="cpu"),
                progress=False).fit()
        runs.append(model.state_dict())
    for key in runs[0]:
        assert torch.equal(runs[0][key], runs[1][key])


def test_resume_continues_exactly(tmp_path):
    config = TrainConfig(epochs=4, lr=0.1, seed=3, device="cpu")
    full = make_model()
    Trainer(full, ShuffledBatches(), config, progress=False).fit()

    # Stop after two of the four epochs (as a crash would), then resume in a new trainer.
    recorder = Recorder()
    stopped = Trainer(make_model(), ShuffledBatches(), TrainConfig(**config.__dict__),
                      out_dir=tmp_path, callbacks=[recorder], eval_batches=ShuffledBatches(),
                      progress=False)
    stopped.fit(until=2)
    assert recorder.fired == 2

    resumed_model = make_model()
    resumed_recorder = Recorder()
    resumed = Trainer(resumed_model, ShuffledBatches(), config, out_dir=tmp_path,
                      callbacks=[resumed_recorder], eval_batches=ShuffledBatches(),
                      progress=False)
    history = resumed.fit(resume=True)
    assert resumed_recorder.fired == 4  # callback state came back from the checkpoint
    assert [row["epoch"] for row in history] == [0, 1, 2, 3]
    for key, value in full.state_dict().items():
        assert torch.allclose(resumed_model.state_dict()[key], value, atol=1e-6), key


class Crash(Callback):
    """Raises after the optimizer step of minibatch ``step`` of ``epoch`` (a killed run)."""

    def __init__(self, epoch=None, step=None, resumable=True):
        self.at, self.resumable = (epoch, step), resumable
        self.resumed, self.begun, self.steps = [], [], []

    def on_epoch_begin(self, epoch, **kw):
        self.begun.append(epoch)

    def on_epoch_resume(self, epoch, **kw):
        self.resumed.append(epoch)

    def on_minibatch_end(self, epoch, minibatch_id, minibatches_per_epoch, **kw):
        self.steps.append((epoch, minibatch_id))
        if (epoch, minibatch_id) == self.at:
            raise KeyboardInterrupt

    def mid_epoch_checkpoint_ok(self):
        return self.resumable


def data_loader():
    """A DataLoader that shuffles with the global generator when its iteration starts."""
    data = ShuffledBatches()
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data.x, data.y),
                                       batch_size=16, shuffle=True)


@pytest.mark.parametrize("loader", [ShuffledBatches, data_loader])
def test_a_run_killed_within_an_epoch_resumes_from_the_minibatch_it_reached(tmp_path, loader):
    config = TrainConfig(epochs=3, lr=0.1, seed=3, device="cpu", checkpoint_minutes=1e-9)
    full = make_model()
    straight = Trainer(full, loader(), config, out_dir=tmp_path / "a",
                       callbacks=[Crash()], eval_batches=ShuffledBatches(),
                       progress=False).fit()

    killed = Trainer(make_model(), loader(), config, out_dir=tmp_path / "b",
                     callbacks=[Crash(1, 2)], eval_batches=ShuffledBatches(), progress=False)
    with pytest.raises(KeyboardInterrupt):
        killed.fit()
    state = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 0 and state["position"]["epoch"] == 1
    assert state["position"]["step"] == 2  # minibatches 0 and 1 of epoch 1 were saved

    model, crash = make_model(), Crash()
    resumed = Trainer(model, loader(), config, out_dir=tmp_path / "b",
                      callbacks=[crash], eval_batches=ShuffledBatches(), progress=False)
    history = resumed.fit(resume=True)
    assert crash.resumed == [1] and crash.begun == [2]  # on_epoch_resume for the resumed epoch
    assert crash.steps[:2] == [(1, 2), (1, 3)]  # the minibatches trained before are skipped
    for key, value in full.state_dict().items():
        assert torch.allclose(model.state_dict()[key], value, atol=1e-6), key
    assert [row["epoch"] for row in history] == [0, 1, 2]
    for a, b in zip(straight, history, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-6)
        assert a["train_top1"] == pytest.approx(b["train_top1"]) and a["lr"] == b["lr"]
    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["position"] is None


class SetsUpEachEpoch(Callback):
    """Overrides on_epoch_begin but not on_epoch_resume: assumed to hold unsaved state."""

    def on_epoch_begin(self, epoch, **kw):
        self.epoch = epoch


@pytest.mark.parametrize("other", [SetsUpEachEpoch, lambda: Crash(resumable=False), object])
def test_no_checkpoint_within_an_epoch_while_a_callback_cannot_resume_from_it(tmp_path, other):
    config = TrainConfig(epochs=2, lr=0.1, device="cpu", checkpoint_minutes=1e-9)
    killed = Trainer(make_model(), ShuffledBatches(), config, out_dir=tmp_path,
                     callbacks=[Crash(1, 2), other()], progress=False)
    with pytest.raises(KeyboardInterrupt):
        killed.fit()
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 0 and state["position"] is None  # the end of epoch 0
    with pytest.raises(UserError, match="checkpoint minutes"):
        TrainConfig(checkpoint_minutes=-1).validate()


def test_resume_without_checkpoint_is_a_user_error(tmp_path):
    trainer = Trainer(make_model(), ShuffledBatches(), TrainConfig(), out_dir=tmp_path,
                      progress=False)
    with pytest.raises(UserError, match="no checkpoint"):
        trainer.fit(resume=True)


@pytest.mark.parametrize("kwargs,match", [
    ({"epochs": 0}, "epochs"),
    ({"lr": 0}, "learning rate"),
    ({"optimizer": "rmsprop"}, "optimizer"),
    ({"schedule": "poly"}, "schedule"),
    ({"schedule": "multistep"}, "milestones"),
    ({"momentum": -0.5}, "momentum must be >= 0"),
    ({"momentum": 2.0}, "momentum must be >= 0 and < 1, got 2.0"),
    ({"weight_decay": -1}, "weight decay must be >= 0"),
    ({"lr": float("nan")}, "learning rate must be a number > 0, got nan"),
    ({"gamma": -1.0}, "gamma"),
    ({"schedule": "multistep", "milestones": [-3]}, "milestones are epochs >= 1"),
])
def test_bad_config_is_a_user_error(kwargs, match):
    with pytest.raises(UserError, match=match):
        TrainConfig(**kwargs).validate()


def test_evaluate_metrics():
    model = nn.Linear(3, 3, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(3))
    x = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [1.0, 0, 0]])
    y = torch.tensor([0, 1, 1, 2])
    result = evaluate(model, [(x[:2], y[:2]), (x[2:], y[2:])], 3, ["a", "b", "c"])
    assert result.n == 4 and result.top1 == 50.0 and result.top5 == 100.0
    assert result.confusion == [[1, 0, 0], [0, 1, 1], [1, 0, 0]]
    assert result.per_class == [100.0, 50.0, 0.0]
    report = result.format_report()
    assert "confusion matrix" in report and "top-1 50.00 %" in report
    assert set(result.to_dict()) >= {"top1", "top5", "n", "per_class", "confusion"}


def test_channels_last_trains_the_same_weights(tmp_path):
    """channels_last only changes the memory layout: same weights (to rounding) either way,
    conv weights end up channels-last, and the saved model loads into a fresh one."""
    g = torch.Generator().manual_seed(0)
    images = torch.randn(32, 3, 8, 8, generator=g)
    labels = torch.randint(0, 3, (32,), generator=g)
    batches = [(images[i:i + 8], labels[i:i + 8]) for i in range(0, 32, 8)]

    def net():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))

    trained = {}
    for layout in (True, False):
        model = net()
        config = TrainConfig(epochs=2, lr=0.05, channels_last=layout, device="cpu")
        Trainer(model, batches, config, out_dir=tmp_path / str(layout), progress=False).fit()
        trained[layout] = model
    conv = trained[True][0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert trained[False][0].weight.is_contiguous()
    for (name, a), b in zip(trained[True].state_dict().items(),
                            trained[False].state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-5), name
    fresh = net()
    saved = torch.load(tmp_path / "True" / "model.pt", weights_only=True)["state_dict"]
    fresh.load_state_dict(saved)
    fresh.eval()
    assert torch.allclose(fresh(images), trained[True].eval()(images), atol=1e-6)


def test_thin_strided_1x1_convs_train_without_crashing_at_one_thread(tmp_path):
    """torch's channels-last backward of a strided 1x1 conv with < 8 input channels corrupts
    memory; the trainer falls back to the default format for such models."""
    import os
    import subprocess
    import sys

    script = tmp_path / "train.py"
    script.write_text(
        "import torch\n"
        "from torchslim.train import TrainConfig, Trainer\n"
        "torch.manual_seed(0)\n"
        "model = torch.nn.Sequential(torch.nn.Conv2d(3, 5, 3, padding=1),\n"
        "    torch.nn.Conv2d(5, 16, 1, stride=2), torch.nn.AdaptiveAvgPool2d(1),\n"
        "    torch.nn.Flatten(), torch.nn.Linear(16, 2))\n"
        "data = [(torch.randn(2, 3, 32, 32), torch.randint(0, 2, (2,))) for _ in range(4)]\n"
        "Trainer(model, data, TrainConfig(epochs=3, device='cpu'), progress=False).fit()\n"
        "print('done')\n"
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "done", done.stderr[-500:]


@pytest.mark.parametrize("change,named", [
    ({"epochs": 6}, "epochs 4 -> 6"),
    ({"weight_decay": 0.0}, "weight_decay 0.0005 -> 0.0"),
    ({"optimizer": "adamw"}, "optimizer 'sgd' -> 'adamw'"),
    ({"lr": 0.2}, "lr 0.1 -> 0.2"),
])
def test_resuming_with_other_training_options_is_a_user_error(tmp_path, change, named):
    config = TrainConfig(epochs=4, lr=0.1, device="cpu")
    Trainer(make_model(), ShuffledBatches(), config, out_dir=tmp_path,
            progress=False).fit(until=2)
    assert not (tmp_path / "model.pt").exists()  # written when the last epoch is
    other = TrainConfig(**{**config.__dict__, **change})
    with pytest.raises(UserError, match=f"other training options \\({named}\\)"):
        Trainer(make_model(), ShuffledBatches(), other, out_dir=tmp_path,
                progress=False).fit(resume=True)
    # where and how it runs may change
    same = TrainConfig(**{**config.__dict__, "checkpoint_minutes": 5.0, "channels_last": False})
    history = Trainer(make_model(), ShuffledBatches(), same, out_dir=tmp_path,
                      progress=False).fit(resume=True)
    assert [row["epoch"] for row in history] == [0, 1, 2, 3]
    assert (tmp_path / "model.pt").exists()


def test_a_run_without_the_cosine_schedule_may_be_extended(tmp_path):
    config = TrainConfig(epochs=2, lr=0.1, schedule="constant", device="cpu")
    Trainer(make_model(), ShuffledBatches(), config, out_dir=tmp_path, progress=False).fit()
    longer = TrainConfig(**{**config.__dict__, "epochs": 3})
    history = Trainer(make_model(), ShuffledBatches(), longer, out_dir=tmp_path,
                      progress=False).fit(resume=True)
    assert [row["epoch"] for row in history] == [0, 1, 2]


class Elsewhere:
    """Stands in for a parameter on another device (no GPU here): records the move."""

    device = torch.device("meta")

    def __init__(self):
        self.data = torch.ones(2)
        self.moved_to = None

    def __setattr__(self, name, value):
        if name == "data" and hasattr(self, "data"):
            self.moved_to = value.device
        object.__setattr__(self, name, value)


class Adapter(Callback):
    """Trains a parameter of its own beside the model (as a distillation adapter does)."""

    def __init__(self, weight):
        self.weight = weight

    def extra_parameters(self):
        return {"weight": self.weight}


def test_parameters_callbacks_train_move_to_the_training_device():
    elsewhere, here = Elsewhere(), nn.Parameter(torch.ones(2))
    trainer = Trainer(make_model(), ShuffledBatches(), TrainConfig(device="cpu"),
                      callbacks=[Adapter(elsewhere), Adapter(here)], progress=False)
    trainer._to_training_device()
    assert elsewhere.moved_to == torch.device("cpu")
    assert trainer.callbacks[1].weight is here  # already there: the same parameter


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_hint_distillation_trains_on_cuda(tmp_path):
    from torchslim.distill import Hint, KnowledgeDistillation, Teacher
    from torchslim.schedule import CompressionScheduler, Policy
    torch.manual_seed(0)
    student = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                            nn.Linear(4 * 64, 5))
    teacher = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(),
                            nn.Linear(8 * 64, 5))
    schedule = CompressionScheduler(student, example_input=torch.zeros(1, 3, 8, 8))
    step = KnowledgeDistillation(Teacher(teacher), hints=[Hint("1", "1")])
    schedule.add(step, Policy(0), "kd")
    data = [(torch.randn(8, 3, 8, 8), torch.randint(0, 5, (8,))) for _ in range(2)]
    config = TrainConfig(epochs=2, lr=0.05, device="cuda", amp=False)
    Trainer(student, data, config, callbacks=[schedule], out_dir=tmp_path,
            progress=False).fit(until=1)
    schedule = CompressionScheduler(student, example_input=torch.zeros(1, 3, 8, 8))
    schedule.add(KnowledgeDistillation(Teacher(teacher), hints=[Hint("1", "1")]), Policy(0), "kd")
    Trainer(student, data, config, callbacks=[schedule], out_dir=tmp_path,
            progress=False).fit(resume=True)  # optimizer state for the adapter on the GPU too
    assert step.hints.adapters["1"].weight.device.type == "cuda"


def test_evaluating_a_model_with_another_number_of_classes_is_a_user_error():
    batches = [(torch.randn(4, 4), torch.tensor([0, 1, 2, 0]))]
    with pytest.raises(UserError, match=r"scores of shape \(2,\) per image, the data has 3 "
                                        "classes"):
        evaluate(make_model(), batches, num_classes=3)
