"""Dynamic network surgery: cut connections come back when their weight grows again."""

from __future__ import annotations

import torch

from torchslim.models import create_model
from torchslim.pruning.splicing import SplicingStep
from torchslim.recipe import build_scheduler, parse_recipe
from torchslim.schedule import CompressionScheduler, Policy
from torchslim.train import TrainConfig, Trainer


def test_cut_connections_are_spliced_back_and_every_weight_trains():
    model = torch.nn.Sequential(torch.nn.Linear(4, 1, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[0.01, 1.0, 2.0, 3.0]]))
    schedule = CompressionScheduler(model)
    schedule.add(SplicingStep({"0.weight": 0.0}, 0.5, 1.0), Policy(0), "dns")
    schedule.on_epoch_begin(0)
    mask = model[0].parametrizations.weight[0].mask
    assert mask.tolist() == [[0.0, 1.0, 1.0, 1.0]]  # |w| < 0.5 * mean|w| (1.5025) is cut
    out = model(torch.ones(1, 4))
    assert float(out.detach()) == 6.0  # the cut weight is not used ...
    out.backward()
    original = model[0].parametrizations.weight.original
    assert original.grad.tolist() == [[1.0, 1.0, 1.0, 1.0]]  # ... but it still trains
    with torch.no_grad():
        original[0, 0] = 2.0  # it grew: above the high threshold, it is spliced back
    schedule.on_epoch_begin(1)
    assert mask.tolist() == [[1.0, 1.0, 1.0, 1.0]]
    schedule.finish()
    assert not hasattr(model[0], "parametrizations")
    assert model[0].weight.tolist() == [[2.0, 1.0, 2.0, 3.0]]


def test_distillers_network_surgery_recipe_runs_and_resumes(tmp_path):
    text = """
pruners:
  pruner1:
    class: SplicingPruner
    low_thresh_mult: 0.9
    hi_thresh_mult: 1.1
    sensitivity_multiplier: 0.015
    sensitivities:
      module.layer1.0.conv1.weight: 0.050
      module.layer3.0.conv2.weight: 0.020
policies:
  - pruner:
      instance_name: pruner1
      args:
        keep_mask: True
    starting_epoch: 0
    ending_epoch: 3
    frequency: 1
"""
    data = [(torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))) for _ in range(2)]

    def run(out, epochs, resume=False):
        torch.manual_seed(0)
        model = create_model("resnet20_cifar")
        schedule = build_scheduler(parse_recipe(text), model)
        trainer = Trainer(model, data, TrainConfig(epochs=3, lr=0.01, device="cpu"),
                          callbacks=[schedule], out_dir=out, progress=False)
        trainer.fit(resume=resume, until=epochs)
        schedule.finish()
        return model

    straight = run(tmp_path / "a", 3)
    assert 0.2 < float((straight.layer1[0].conv1.weight == 0).float().mean()) < 0.9
    run(tmp_path / "b", 1)
    resumed = run(tmp_path / "b", 3, resume=True)
    for key, value in straight.state_dict().items():
        assert torch.allclose(resumed.state_dict()[key].float(), value.float(), atol=1e-6), key
