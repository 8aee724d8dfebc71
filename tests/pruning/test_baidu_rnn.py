"""Narang et al.'s gradual threshold pruning of RNNs (Distiller's BaiduRNNPruner)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from torchslim.core.errors import UserError
from torchslim.pruning.rnn import BaiduRNNStep
from torchslim.recipe import RecipeError, build_scheduler, parse_recipe
from torchslim.schedule import CompressionScheduler, Policy


class WordLanguageModel(nn.Module):
    """The parameter names of PyTorch's (and Distiller's) word language model example."""

    def __init__(self, tokens: int = 50, width: int = 32) -> None:
        super().__init__()
        self.encoder = nn.Embedding(tokens, width)
        self.rnn = nn.LSTM(width, width, num_layers=2)
        self.decoder = nn.Linear(width, tokens)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.rnn(self.encoder(x))[0])


# Distiller's examples/baidu-rnn-pruning/word_lang_model.schedule_baidu_rnn.yaml (two of its
# five pruners, as written there).
DISTILLER_SCHEDULE = """
version: 1
pruners:
  ih_l0_rnn_pruner:
    class: BaiduRNNPruner
    q: 0.17
    ramp_epoch_offset: 3
    ramp_slope_mult: 2
    weights: [rnn.weight_ih_l0]

  embedding_pruner:
    class: BaiduRNNPruner
    q: 0.16
    ramp_epoch_offset: 3
    ramp_slope_mult: 2
    weights: [encoder.weight]

policies:
  - pruner:
      instance_name : ih_l0_rnn_pruner
    starting_epoch: 4
    ending_epoch: 21
    frequency: 3

  - pruner:
      instance_name : embedding_pruner
    starting_epoch: 4
    ending_epoch: 21
    frequency: 3
"""


def test_threshold_follows_equation_one_of_the_paper():
    step = BaiduRNNStep({"w": 0.17}, ramp_epoch_offset=3, ramp_slope_mult=2)
    policy = Policy(starting_epoch=4, ending_epoch=21, frequency=3)
    # start_slope = 2 q f / (2 (r - s) + 3 (e - r)) with s = 4, r = 7, e = 21, f = 3
    slope = 2 * 0.17 * 3 / (2 * 3 + 3 * 14)
    assert step.threshold(4, policy, 0.17) == pytest.approx(slope * 1 / 3)
    assert step.threshold(7, policy, 0.17) == pytest.approx((slope * 4 + 2 * slope * 1) / 3)
    assert step.threshold(19, policy, 0.17) == pytest.approx((slope * 4 + 2 * slope * 13) / 3)


def test_distillers_schedule_prunes_below_a_growing_threshold_and_pruned_weights_stay_zero():
    torch.manual_seed(0)
    model = WordLanguageModel()
    scheduler = build_scheduler(parse_recipe(DISTILLER_SCHEDULE, "baidu.yaml"), model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    step = BaiduRNNStep({"w": 0.17}, 3, 2)
    policy = Policy(starting_epoch=4, ending_epoch=21, frequency=3)
    sparsities = []
    for epoch in range(22):
        before = model.rnn.weight_ih_l0.detach().clone()
        scheduler.on_epoch_begin(epoch, optimizer)
        weight = model.rnn.weight_ih_l0.detach()
        if policy.fires(epoch):
            eps = step.threshold(epoch, policy, 0.17)
            # every weight at or below the threshold (or pruned before) is zero, no other one
            assert torch.equal(weight == 0, (before.abs() <= eps) | (before == 0))
        else:
            assert torch.equal(weight, before)  # nothing happens between firing epochs
        sparsities.append(float((weight == 0).float().mean()))
        tokens = torch.randint(0, 50, (5, 3))
        optimizer.zero_grad()
        model(tokens).sum().backward()
        optimizer.step()
        scheduler.on_minibatch_end(epoch, 0, 1, optimizer)
        assert torch.equal(model.rnn.weight_ih_l0 == 0, weight == 0)  # zeros survive training
        scheduler.on_epoch_end(epoch, optimizer)
    assert sparsities[3] == 0.0 and sparsities[4] > 0.0
    assert sparsities == sorted(sparsities) and sparsities[-1] > 0.3
    assert float((model.encoder.weight == 0).float().mean()) > 0.01
    assert float((model.rnn.weight_hh_l0 == 0).float().mean()) == 0.0  # not named: untouched


def test_an_open_ended_policy_is_refused_with_a_located_line():
    text = DISTILLER_SCHEDULE.replace("    ending_epoch: 21\n", "", 1)
    with pytest.raises(RecipeError, match=r"baidu.yaml:\d+ .*give its policy an ending_epoch"):
        build_scheduler(parse_recipe(text, "baidu.yaml"), WordLanguageModel())


def test_a_weight_that_matches_nothing_names_the_model_weights():
    text = DISTILLER_SCHEDULE.replace("[rnn.weight_ih_l0]", "[rnn.weight_ih_l9]")
    expected = r"baidu.yaml:9 .*rnn.weight_ih_l9.*did you mean .*rnn.weight_ih_l0"
    with pytest.raises(RecipeError, match=expected):
        build_scheduler(parse_recipe(text, "baidu.yaml"), WordLanguageModel())


def test_arguments_are_checked():
    with pytest.raises(UserError, match="q must be > 0"):
        BaiduRNNStep({"w": 0.0}, 3, 2)
    with pytest.raises(UserError, match="ramp_epoch_offset"):
        BaiduRNNStep({"w": 0.1}, -1, 2)
    with pytest.raises(UserError, match="ending_epoch"):
        CompressionScheduler(nn.LSTM(2, 2)).add(
            BaiduRNNStep({"weight_hh_l0": 0.1}, 1, 2), Policy(0), "rnn")
    for offset in (18, 51):  # the ramp after the end: a zero or negative start slope
        with pytest.raises(UserError, match=r"ramp_epoch_offset \(\d+\) .* at most .* \(17\)"):
            CompressionScheduler(nn.LSTM(2, 2)).add(
                BaiduRNNStep({"weight_hh_l0": 0.1}, offset, 2),
                Policy(starting_epoch=4, ending_epoch=21, frequency=3), "rnn")
