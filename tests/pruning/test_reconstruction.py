"""Channel pruning with feature-map reconstruction (Distiller's FMReconstructionChannelPruner)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from torchslim.core.errors import UserError
from torchslim.pruning.reconstruction import FeatureMapSampler, reconstruct
from torchslim.recipe import RecipeError, build_scheduler, parse_recipe
from torchslim.train import TrainConfig, Trainer


def _conv_pair() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, 8, 3, padding=1))


def test_least_squares_refit_recovers_a_layer_that_needs_only_the_kept_channels():
    layer = nn.Conv2d(4, 2, 3, padding=1, bias=True)
    with torch.no_grad():
        target = layer.weight.clone()
        target[:, 2:] = 0  # the output depends on channels 0 and 1 only
        layer.weight.copy_(target)
    sampler = FeatureMapSampler(points_per_map=16)
    sampler.watch({"conv": layer})
    layer(torch.randn(32, 4, 8, 8))
    sampler.unwatch()
    with torch.no_grad():
        layer.weight.normal_()  # forget the weights: the samples alone decide
    keep = torch.tensor([True, True, False, False])
    error = reconstruct(layer, keep, *sampler.samples("conv"))
    assert error < 1e-10
    assert torch.allclose(layer.weight, target, atol=1e-5)


def test_reconstruction_beats_plain_channel_removal_on_new_data():
    model = _conv_pair().eval()
    x = torch.randn(64, 3, 12, 12)
    inputs = model[:3](x)
    reference = model[3](inputs)
    sampler = FeatureMapSampler(points_per_map=20)
    sampler.watch({"3": model[3]})
    model(x)
    sampler.unwatch()
    keep = model[3].weight.detach().abs().sum((0, 2, 3)).argsort(descending=True)[:8]
    mask = torch.zeros(16, dtype=torch.bool)
    mask[keep] = True
    plain = model[3].weight.detach() * mask.view(1, -1, 1, 1)
    fresh = model[:3](torch.randn(64, 3, 12, 12))
    expected = model[3](fresh)
    plain_error = (nn.functional.conv2d(fresh, plain, model[3].bias, padding=1)
                   - expected).pow(2).mean()
    reconstruct(model[3], mask, *sampler.samples("3"))
    assert bool((model[3].weight[:, ~mask] == 0).all())
    refit_error = (model[3](fresh) - expected).pow(2).mean()
    assert refit_error < 0.8 * plain_error
    assert reference.shape == expected.shape


RECIPE = """
pruners:
  fm:
    class: FMReconstructionChannelPruner
    group_type: Channels
    desired_sparsity: 0.5
    weights: [3.weight]
    collect_batches: 2
    points_per_map: 8
extensions:
  thin: {class: ChannelRemover}
policies:
  - pruner: {instance_name: fm}
    epochs: [0]
  - extension: {instance_name: thin}
    epochs: [1]
"""


def test_recipe_prunes_refits_and_thins_while_training():
    model = _conv_pair()
    schedule = build_scheduler(parse_recipe(RECIPE, "fm.yaml"), model, torch.zeros(1, 3, 12, 12))
    data = [(torch.randn(8, 3, 12, 12), torch.randint(0, 8, (8,))) for _ in range(4)]

    def loss_fn(outputs, targets, batch):
        return outputs.mean((2, 3)).sub(1.0).pow(2).mean()

    Trainer(model, data, TrainConfig(epochs=2, lr=0.01, device="cpu"), callbacks=[schedule],
            loss_fn=loss_fn, progress=False).fit()
    first = schedule.log[0]["actions"]["fm"]
    assert first["channels_pruned"] == {"0": "8/16"}
    assert 0.0 <= first["reconstruction_error"]["3"] < 1.0
    assert model[3].in_channels == 8 and model[0].out_channels == 8  # thinned at epoch 1
    assert not any(m._forward_hooks for m in model.modules())  # the sampling hooks are gone


def test_recipe_mistakes_are_one_located_line():
    with pytest.raises(RecipeError, match=r"fm.yaml:\d+ pruners.fm.group_type"):
        parse_recipe(RECIPE.replace("group_type: Channels", "group_type: Filters"), "fm.yaml")
    with pytest.raises(UserError, match="grouped convolution"):
        FeatureMapSampler().watch({"dw": nn.Conv2d(4, 4, 3, groups=4)})
    with pytest.raises(UserError, match="saw no data"):
        FeatureMapSampler().samples("conv")


@pytest.mark.parametrize("conv", [
    nn.Conv2d(4, 3, 3, padding="same"),
    nn.Conv2d(4, 3, 3, padding=1, padding_mode="reflect"),
    nn.Conv2d(4, 3, 3, padding=2, dilation=2, stride=2, padding_mode="circular"),
])
def test_samples_follow_the_layers_padding(conv):
    """With every channel kept, the refit reproduces the layer: the sampled columns are what
    the layer multiplies, whatever its padding."""
    sampler = FeatureMapSampler(points_per_map=12)
    sampler.watch({"c": conv})
    conv(torch.randn(16, 4, 9, 9))
    sampler.unwatch()
    assert reconstruct(conv, torch.ones(4, dtype=torch.bool), *sampler.samples("c")) < 1e-10


def test_the_sampler_records_passes_under_no_grad_but_not_evaluations():
    layer = nn.Conv2d(4, 2, 3, padding=1)
    sampler = FeatureMapSampler(points_per_map=4)
    sampler.watch({"conv": layer})
    with torch.inference_mode():  # how torchslim evaluates: never sampled
        layer(torch.randn(2, 4, 8, 8))
    with torch.no_grad():  # a calibration pass over training data
        layer(torch.randn(3, 4, 8, 8))
    sampler.unwatch()
    inputs, _ = sampler.samples("conv")
    assert inputs.shape[0] == 3 * 4
