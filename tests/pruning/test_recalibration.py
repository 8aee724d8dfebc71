"""BatchNorm recalibration after pruning."""

from __future__ import annotations

import torch
from torch import nn

from torchslim.pruning.recalibration import recalibrate_batchnorm


def test_statistics_become_the_average_over_the_batches_and_mode_is_restored():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 1, bias=False), nn.BatchNorm2d(3)).eval()
    batches = [(torch.randn(16, 2, 4, 4) * 2 + 3, torch.zeros(16)) for _ in range(5)]
    momentum = model[1].momentum
    assert recalibrate_batchnorm(model, batches, num_batches=3) == 3
    with torch.no_grad():
        features = [model[0](x) for x, _ in batches[:3]]
    means = torch.stack([f.mean(dim=(0, 2, 3)) for f in features]).mean(0)
    assert torch.allclose(model[1].running_mean, means, atol=1e-5)
    assert not model.training and model[1].momentum == momentum
    assert int(model[1].num_batches_tracked) == 3


def test_recalibration_recovers_a_pruned_model_whose_statistics_went_stale():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 1))
    data = [(torch.randn(64, 8), None) for _ in range(10)]
    recalibrate_batchnorm(model, data)
    with torch.no_grad():
        model[0].weight[:, :4] = 0  # prune half the inputs: the activations shrink
    stale = model[1].running_var.clone()
    recalibrate_batchnorm(model, data)
    assert (model[1].running_var < stale).float().mean() > 0.9


def test_a_model_without_batchnorm_is_left_alone():
    assert recalibrate_batchnorm(nn.Linear(2, 2), [(torch.zeros(1, 2), None)]) == 0
