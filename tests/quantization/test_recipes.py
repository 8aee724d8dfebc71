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


@pytest.mark.parametrize("cls", ["DorefaQuantizer", "PACTQuantizer",
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
