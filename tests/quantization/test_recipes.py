"""Distiller's quantizer classes in recipes: ``overrides`` with null bit widths keep layers in
float (how Distiller's DoReFa/PACT recipes leave the first and last layers alone)."""

from __future__ import annotations

import textwrap

import pytest
import torch

from torchslim.core.errors import UserError
from torchslim.models import create_model
from torchslim.quantization import is_prepared, weight_quantizers
from torchslim.recipe import build_scheduler, parse_recipe

RECIPE = """
quantizers:
  q:
    class: {cls}
    bits_activations: 4
    bits_weights: 4
    overrides:
      features.0.0:
        bits_weights: null
        bits_activations: null
      classifier: {override}
policies:
  - quantizer: {{instance_name: q}}
    starting_epoch: 0
"""


@pytest.mark.parametrize("cls", ["DorefaQuantizer", "PACTQuantizer", "WRPNQuantizer",
                                 "QuantAwareTrainRangeLinearQuantizer"])
def test_null_overrides_keep_the_first_and_last_layers_in_float(cls):
    text = RECIPE.format(cls=cls, override="{bits_weights: null, bits_activations: null}")
    model = create_model("demo_cnn")
    schedule = build_scheduler(parse_recipe(textwrap.dedent(text)), model,
                               torch.zeros(1, 1, 8, 8))
    schedule.on_epoch_begin(0, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    assert is_prepared(model)
    assert sorted(weight_quantizers(model)) == ["features.1.0", "features.3.0"]


def test_other_per_layer_bit_widths_are_refused_clearly():
    text = RECIPE.format(cls="DorefaQuantizer", override="{bits_weights: 8}")
    model = create_model("demo_cnn")
    with pytest.raises(UserError, match="override 'classifier': only null bit widths"):
        build_scheduler(parse_recipe(textwrap.dedent(text)), model, torch.zeros(1, 1, 8, 8))


def _wrpn_demo_cnn():
    """The demo CNN under Distiller's WRPNQuantizer at 4 bits (first and last layers float)."""
    text = RECIPE.format(cls="WRPNQuantizer", override="{bits_weights: null, "
                         "bits_activations: null}")
    torch.manual_seed(0)
    model = create_model("demo_cnn")
    schedule = build_scheduler(parse_recipe(textwrap.dedent(text)), model,
                               torch.zeros(1, 1, 8, 8))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    schedule.on_epoch_begin(0, optimizer=optimizer)
    return model, optimizer


def test_wrpn_quantizer_clips_weights_to_its_grid_and_trains():
    """Distiller's WRPNQuantizer: weights clipped to [-1, 1] on 2^(k-1) - 1 levels each side,
    the activations after ReLUs clipped to [0, 1] on 2^k - 1 levels."""
    model, optimizer = _wrpn_demo_cnn()
    quantizer = weight_quantizers(model)["features.1.0"]
    with torch.no_grad():  # WRPN expects weights of order 1 (at 4 bits |w| < 1/14 rounds to 0)
        for layer in ("features.1.0.layer", "features.3.0.layer"):
            model.get_submodule(layer).weight.mul_(20)
        weight = model.features[1][0].layer.weight
        weight[0, 0, 0, 0] = 3.0
        seen = quantizer(weight)
    assert float(seen[0, 0, 0, 0]) == 1.0  # clipped
    assert torch.allclose(seen * 7, (seen * 7).round(), atol=1e-5)  # 4 bits: 7 levels a side
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    before = weight.detach().clone()
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    assert not torch.equal(before, weight.detach())  # the float weights train through the STE


def test_post_train_quantizer_takes_distillers_split_mode_and_stats_file_key():
    """Distiller's resnet18_imagenet_post_train.yaml form: ``mode`` per tensor kind and a
    ``model_activation_stats`` file (torchslim calibrates itself: accepted with a note)."""
    recipe = parse_recipe(textwrap.dedent("""
        quantizers:
          post_train_quantizer:
            class: PostTrainLinearQuantizer
            bits_activations: 8
            bits_parameters: 8
            bits_accum: 32
            mode:
              activations: ASYMMETRIC_SIGNED
              weights: ASYMMETRIC_UNSIGNED
            model_activation_stats: stats/resnet18_quant_stats.yaml
            per_channel_wts: True
            clip_acts: AVG
        policies:
          - quantizer: {instance_name: post_train_quantizer}
            starting_epoch: 0
        """), "ptq.yaml")
    scheduler = build_scheduler(recipe, create_model("demo_cnn"), torch.zeros(1, 1, 8, 8))
    step = scheduler.entries[0].step
    assert (step.config.signed_activations, step.config.signed_weights) == (True, False)
    assert any("model_activation_stats" in note and "ignored" in note for note in recipe.notes)


@pytest.mark.parametrize("mode,match", [
    ("{weights: ASYMMETRIC_UNSIGNED}", "needs exactly the keys activations and weights, got "
                                       "weights"),
    ("{activations: SYMMETRIC, weight: SYMMETRIC}", "got activations, weight"),
    ("{activations: SYMETRIC, weights: SYMMETRIC}", "mode of the activations must be one of"),
])
def test_split_mode_mistakes_name_the_keys(mode, match):
    text = ("quantizers:\n  q:\n    class: PostTrainLinearQuantizer\n    mode: " + mode
            + "\npolicies:\n  - quantizer: {instance_name: q}\n    starting_epoch: 0\n")
    with pytest.raises(UserError, match=r"ptq.yaml:4 quantizers.q.mode: .*" + match):
        parse_recipe(text, "ptq.yaml")


def test_wrpn_model_exports_its_weights_as_int8_and_onnx_runtime_agrees(tmp_path):
    import onnx

    from torchslim.export.onnx import export_onnx, session
    from torchslim.quantization import activation_quantizers

    model, _ = _wrpn_demo_cnn()
    with torch.no_grad():
        for layer in ("features.1.0.layer", "features.3.0.layer"):
            model.get_submodule(layer).weight.mul_(20)
        model(torch.randn(16, 1, 8, 8))  # running activation ranges
    for quantizer in activation_quantizers(model).values():
        quantizer.freeze()
    model.eval()
    path = export_onnx(model, torch.zeros(1, 1, 8, 8), tmp_path / "wrpn.onnx")
    graph = onnx.load(path).graph
    int8 = {init.name for init in graph.initializer if init.data_type == onnx.TensorProto.INT8}
    stored = [node.input[0] for node in graph.node
              if node.op_type == "DequantizeLinear" and node.input[0] in int8]
    assert [name.split("/")[1] for name in stored] == ["features.1.0", "features.3.0"]
    x = torch.randn(32, 1, 8, 8)
    got = session(path, 1).run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        assert torch.allclose(torch.from_numpy(got), model(x), atol=1e-4)


def test_lsq_recipe_can_start_its_steps_from_mse_ranges():
    recipe = parse_recipe(textwrap.dedent("""
        quantizers:
          lsq:
            class: QuantizationAwareTraining
            method: lsq
            weight_bits: 4
            activation_bits: 4
            observer: mse
            weight_observer: mse
            lsq_init: observer
        policies:
          - quantizer: {instance_name: lsq}
            starting_epoch: 0
        """), "lsq.yaml")
    model = create_model("demo_cnn")
    schedule = build_scheduler(recipe, model, torch.zeros(1, 1, 28, 28))
    schedule.on_epoch_begin(0, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    quantizers = [m for m in model.modules() if type(m).__name__ == "LSQQuantize"]
    assert quantizers and all(
        type(q.init_observer).__name__ == "MSEObserver" for q in quantizers)
    model(torch.randn(4, 1, 28, 28))
    assert all(q.init_observer is None and bool(q.initialised) for q in quantizers)
    with pytest.raises(Exception, match=r"lsq.yaml:\d+ quantizers.lsq.lsq_init"):
        parse_recipe(textwrap.dedent("""
            quantizers:
              lsq: {class: QuantizationAwareTraining, method: lsq, lsq_init: mean}
            policies:
              - quantizer: {instance_name: lsq}
                starting_epoch: 0
            """), "lsq.yaml")
    from torchslim.quantization import QuantConfig
    with pytest.raises(UserError, match="lsq_init must be 'paper' or 'observer'"):
        QuantConfig(method="lsq", lsq_init="mean")
    with pytest.raises(UserError, match="needs method 'lsq', not 'pact'"):
        QuantConfig(method="pact", lsq_init="observer")
    from torchslim.quantization.prepare import _weight_quantizer
    lsq = _weight_quantizer(QuantConfig(method="lsq", weight_bits=4, weight_observer="mse",
                                        lsq_init="observer"), 6)
    assert lsq.init_observer.spec == lsq.spec  # the MSE search runs on LSQ's own grid
