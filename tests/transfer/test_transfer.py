"""Transfer learning: frozen weights stay bit-identical, unfreeze schedules, new heads."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from torchslim.cli import main as cli_main
from torchslim.core.errors import UserError
from torchslim.models import create_model, load_weights
from torchslim.recipe import build_scheduler, parse_recipe
from torchslim.schedule import CompressionScheduler, Policy
from torchslim.train import TrainConfig, Trainer
from torchslim.transfer import Freeze, Unfreeze, freeze, frozen, replace_head


def _data(classes=10):
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(16, 1, 8, 8, generator=g), torch.randint(0, classes, (16,), generator=g))
            for _ in range(3)]


def _fit(model, schedule, out=None, epochs=3, resume=False, stop=None):
    trainer = Trainer(model, _data(), TrainConfig(epochs=epochs, lr=0.1, device="cpu"),
                      callbacks=[schedule], out_dir=out, progress=False)
    trainer.fit(resume=resume, until=stop)
    return trainer


def test_frozen_weights_and_batchnorm_statistics_stay_bit_identical():
    torch.manual_seed(0)
    model = create_model("demo_cnn")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    schedule = CompressionScheduler(model)
    schedule.add(Freeze(["features"]), Policy(epochs=[0]), "freeze")
    _fit(model, schedule)
    after = model.state_dict()
    for key, value in before.items():
        if key.startswith("features."):
            assert torch.equal(after[key], value), key  # weights, running stats, counters
        else:
            assert not torch.equal(after[key], value), key  # the classifier trained


def test_unfreeze_schedule_and_gradual_unfreezing():
    torch.manual_seed(0)
    model = create_model("demo_cnn")
    schedule = CompressionScheduler(model)
    schedule.add(Freeze(["*"], exclude=["classifier"]), Policy(epochs=[0]), "freeze")
    schedule.add(Unfreeze(["features.3", "features.1", "features.0"], gradual=True),
                 Policy(starting_epoch=1), "thaw")
    snapshot = {}

    class Spy:
        def on_epoch_end(self, epoch, **kw):
            snapshot[epoch] = len(frozen(model))

    trainer = Trainer(model, _data(), TrainConfig(epochs=4, lr=0.1, device="cpu"),
                      callbacks=[schedule, Spy()], progress=False)
    trainer.fit()
    assert snapshot == {0: 9, 1: 6, 2: 3, 3: 0}
    assert model.features[0][1].training  # released BatchNorms train again


@pytest.mark.parametrize("stop", [1, 3])
@pytest.mark.parametrize("unfreeze_first", [False, True])
def test_a_resumed_run_is_frozen_as_before(tmp_path, stop, unfreeze_first):
    def run(out, stop=None, resume=False):
        torch.manual_seed(0)
        model = create_model("demo_cnn")
        schedule = CompressionScheduler(model)
        steps = [("freeze", Freeze(["*"], exclude=["classifier"]), Policy(epochs=[0])),
                 ("release", Unfreeze(["*"]), Policy(epochs=[2]))]
        for name, step, policy in (steps[::-1] if unfreeze_first else steps):
            schedule.add(step, policy, name)
        _fit(model, schedule, out, epochs=4, resume=resume, stop=stop)
        return model

    straight = run(tmp_path / "a")
    run(tmp_path / "b", stop=stop)  # stopped while frozen (1) or after the release (3)
    resumed = run(tmp_path / "b", resume=True)
    for key, value in straight.state_dict().items():
        assert torch.allclose(resumed.state_dict()[key].float(), value.float(), atol=1e-6), key


def test_freeze_names_that_match_nothing_are_user_errors():
    with pytest.raises(UserError, match="layer 'backbone' matches no layer or parameter"):
        freeze(create_model("demo_cnn"), ["backbone"])
    with pytest.raises(UserError, match="head 'fc' is not a Linear layer"):
        replace_head(create_model("cifar_resnet20"), 2, "fc")


def test_recipe_freeze_then_unfreeze():
    recipe = parse_recipe("""
extensions:
  backbone: {class: Freeze, layers: ["*"], exclude: [classifier]}
  release: {class: Unfreeze}
policies:
  - extension: backbone
    epochs: [0]
  - extension: release
    epochs: [1]
""")
    model = create_model("demo_cnn")
    schedule = build_scheduler(recipe, model)
    schedule.on_epoch_begin(0)
    assert len(frozen(model)) == 9
    schedule.on_epoch_begin(1)
    assert frozen(model) == []


def test_cli_new_head_on_a_class_subset_reloads_fresh(tmp_path, capsys):
    pretrained = tmp_path / "pre"
    assert cli_main(["train", "--model", "demo_cnn", "--data", "digits", "--epochs", "2",
                     "--out", str(pretrained), "--quiet"]) == 0
    out = tmp_path / "two"
    assert cli_main(["train", "--model", "demo_cnn", "--weights", str(pretrained / "model.pt"),
                     "--data", "digits", "--classes", "3,8", "--new-head", "--freeze-backbone",
                     "--unfreeze-epoch", "2", "--epochs", "4", "--batch-size", "32", "--lr",
                     "0.05", "--out", str(out), "--quiet", "--json"]) == 0
    capsys.readouterr()
    model = load_weights(create_model("demo_cnn"), out / "model.pt")
    assert model.classifier.out_features == 2
    assert cli_main(["eval", "--model", "demo_cnn", "--weights", str(out / "model.pt"),
                     "--data", "digits", "--classes", "3,8", "--json", "--quiet"]) == 0
    top1 = float(re.search(r'"top1": ([0-9.]+)', capsys.readouterr().out).group(1))
    assert top1 > 80.0


@pytest.mark.parametrize("extra,match", [
    (["--new-head"], "--new-head replaces the classifier of a pretrained model"),
    (["--unfreeze-epoch", "1"], "--unfreeze-epoch needs --freeze-backbone"),
    (["--classes", "3,x"], "unknown: x"),
])
def test_cli_transfer_mistakes_are_one_line(tmp_path, capsys, extra, match):
    code = cli_main(["train", "--model", "demo_cnn", "--data", "digits", "--epochs", "2",
                     "--out", str(tmp_path), "--quiet", *extra])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(match, err), err


def test_a_model_without_an_inner_linear_has_no_head_to_replace():
    with pytest.raises(UserError, match="no Linear layer inside it"):
        replace_head(nn.Linear(3, 10), 2)
    with pytest.raises(UserError, match="number of classes >= 1"):
        replace_head(create_model("demo_cnn"), 0)
