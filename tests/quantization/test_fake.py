"""Fake quantization: straight-through gradients, LSQ and PACT learning, BatchNorm folding."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from torchslim.quantization import (
    ClippedLinear,
    DoReFaWeight,
    FakeQuantize,
    LSQQuantize,
    PACTQuantize,
    QuantSpec,
    fold_batchnorms,
    pact_penalty,
)
from torchslim.quantization.modules import QuantConv, QuantConvBn


def test_straight_through_gradient_is_one_inside_the_range_and_zero_outside():
    quantizer = FakeQuantize.activations()
    quantizer(torch.tensor([0.0, 2.55]))
    quantizer.freeze()
    x = torch.tensor([-1.0, 0.333, 1.0, 3.0], requires_grad=True)
    quantizer(x).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 0.0]


def test_lsq_step_size_learns_to_fit_the_values():
    torch.manual_seed(0)
    quantizer = LSQQuantize(QuantSpec(bits=3))
    quantizer.start()
    values = torch.rand(4096) * 4.0
    quantizer(values)  # initialises the step from the data
    start = quantizer.scale.detach().clone()
    optimizer = torch.optim.Adam(quantizer.parameters(), lr=0.01)
    losses = []
    for _ in range(150):
        loss = (quantizer(values) - values).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert not torch.equal(quantizer.scale.detach(), start)
    assert losses[-1] < 0.7 * losses[0]


def test_lsq_can_start_from_an_observers_range():
    from torchslim.quantization import MSEObserver

    torch.manual_seed(0)
    values = torch.randn(4096).abs() * 2.0
    spec = QuantSpec(bits=4)
    reference = MSEObserver(bits=4)
    reference(values)
    expected, _ = reference.qparams(spec)
    started = LSQQuantize(spec, init=MSEObserver(bits=4))
    started.start()
    out = started(values)
    assert torch.allclose(started.scale.detach(), expected.reshape(1))
    assert started.init_observer is None  # used once, and not part of the state
    assert "init_observer" not in dict(started.named_modules())
    paper = LSQQuantize(spec)
    paper.start()
    paper(values)
    assert not torch.allclose(paper.scale.detach(), started.scale.detach())
    error = (out - values).pow(2).mean()
    assert error < (paper(values) - values).pow(2).mean()  # the MSE start fits better
    signed = spec.with_(signed=True, symmetric=True)  # searched on LSQ's own grid
    reference = MSEObserver(spec=signed)
    reference(values - 2.0)
    on_grid = LSQQuantize(signed, init=MSEObserver(spec=signed))
    on_grid.start()
    on_grid(values - 2.0)
    assert torch.allclose(on_grid.scale.detach(), reference.qparams(signed)[0].reshape(1))
    weights = torch.randn(6, 3, 3, 3) * torch.arange(1, 7).view(6, 1, 1, 1)
    per_channel = LSQQuantize(QuantSpec.weights(4), channels=6, init=MSEObserver(0, 4))
    per_channel.start()
    per_channel(weights)
    steps = per_channel.scale.detach()
    assert steps.shape == (6,) and bool((steps[1:] > steps[:-1]).all())


def test_pact_clipping_level_learns_and_has_an_l2_term():
    quantizer = PACTQuantize(bits=4, alpha=1.0)
    quantizer.start()
    values = torch.linspace(0, 3, 300)
    optimizer = torch.optim.SGD(quantizer.parameters(), lr=0.05)
    for _ in range(30):
        loss = (quantizer(values) - values).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert quantizer.alpha.item() > 1.5  # clipping at 1 cost more than the wider step
    model = nn.Sequential(quantizer)
    assert torch.isclose(pact_penalty(model, 0.1), 0.1 * quantizer.alpha.detach() ** 2)


def test_dorefa_weights_and_clipped_activations_take_few_levels():
    weights = DoReFaWeight(bits=2)
    weights.freeze()
    w = torch.randn(64, requires_grad=True)
    quantized = weights(w)
    assert len(torch.unique(quantized.detach())) <= 4 and quantized.abs().max() <= 1.0
    quantized.sum().backward()
    assert w.grad.abs().sum() > 0  # the straight-through estimator passes gradients
    activations = ClippedLinear(bits=2)
    activations.freeze()
    out = activations(torch.tensor([-1.0, 0.2, 0.5, 2.0]))
    assert torch.allclose(out, torch.tensor([0.0, 1 / 3, 2 / 3, 1.0]))


def test_batchnorm_folding_matches_conv_then_batchnorm():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(4, 8, 3, groups=2), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Flatten(), nn.Linear(8 * 4 * 4, 5), nn.BatchNorm1d(5)).eval()
    for bn in (model[1], model[5]):
        nn.init.uniform_(bn.running_var, 0.5, 2.0)
        nn.init.normal_(bn.running_mean)
        nn.init.normal_(bn.weight)
        nn.init.normal_(bn.bias)
    x = torch.randn(3, 4, 6, 6)
    expected = model(x)
    assert fold_batchnorms(model) == ["0", "4"]
    assert isinstance(model[1], nn.Identity) and isinstance(model[5], nn.Identity)
    assert (model(x) - expected).abs().max() < 1e-5


def test_conv_bn_quantization_aware_module_equals_the_folded_convolution_in_evaluation():
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)
    nn.init.uniform_(bn.running_var, 0.5, 2.0)
    nn.init.normal_(bn.weight)
    quantizer = FakeQuantize.weights()
    module = QuantConvBn(conv, bn, quantizer).eval()
    x = torch.randn(2, 3, 8, 8)
    module(x)  # observes the folded weight
    quantizer.freeze()
    folded_conv = nn.Conv2d(3, 4, 3)
    folded_conv.load_state_dict(conv.state_dict())
    reference = nn.Sequential(folded_conv, nn.BatchNorm2d(4))
    reference[1].load_state_dict(bn.state_dict())
    fold_batchnorms(reference.eval())
    plain = QuantConv(reference[0], FakeQuantize.weights())
    plain.quantized_weight()
    plain.weight_quantizer.freeze()
    assert torch.allclose(module(x), plain(x), atol=1e-5)
    module.train()
    assert module(x).shape == (2, 4, 6, 6)  # batch statistics, folded weight quantized


def test_quantizer_qparams_follow_the_parameters_device():
    # On CUDA a zero point left on the CPU stops the first QAT step; the meta device shows the
    # same placement without a GPU.
    scale, zero = PACTQuantize(4).to("meta").qparams()
    assert scale.device.type == "meta" and zero.device.type == "meta"


def test_quantization_aware_training_observes_training_batches_only():
    # Evaluating a model in training (on the test split, or a summary's zeros) must not move its
    # ranges; calibration, which runs in eval mode, must.
    quantizer = FakeQuantize.activations("moving_average", bits=4)
    quantizer.start()
    quantizer.train()
    quantizer(torch.linspace(0.0, 4.0, 100))
    trained = (quantizer.scale.clone(),
               {k: v.clone() for k, v in quantizer.observer.state_dict().items()})
    quantizer.eval()
    quantizer(torch.zeros(100))
    quantizer(torch.linspace(0.0, 40.0, 100))
    assert torch.equal(quantizer.scale, trained[0])
    assert all(torch.equal(v, trained[1][k]) for k, v in quantizer.observer.state_dict().items())

    calibrating = FakeQuantize.activations("minmax", bits=8).eval()
    calibrating(torch.tensor([0.0, 2.55]))  # observing, not quantizing: records in eval mode
    calibrating.freeze()
    assert calibrating.scale.item() == pytest.approx(0.01)
