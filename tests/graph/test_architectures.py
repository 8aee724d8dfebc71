"""Acceptance: the channel graph on common architectures written the way people write them
(tests/graph/architectures.py), none of them known to torchslim: the graph builds, 30 % of the
filters of every prunable group go, the thinned model runs with the same output shape and fewer
MACs, agrees with the masked model within 1e-5, and saves and reloads into a fresh instance."""

from __future__ import annotations

import pytest
import torch

from tests.graph.architectures import ARCHITECTURES
from tests.graph.helpers import prune_and_thin, randomize
from torchslim.core.storage import save_compressed
from torchslim.models import load_weights

EXPECTED_FRONTEND = {"shufflenetv2": "export"}  # int(x.size(1) * ratio) defeats torch.fx


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_thirty_percent_of_every_group_pruned_and_thinned(name, tmp_path):
    factory = ARCHITECTURES[name]
    result = prune_and_thin(factory, (3, 32, 32), 0.3)
    graph = result["graph"]
    assert graph.frontend == EXPECTED_FRONTEND.get(name, "fx")
    assert graph.unprunable() == {next(g.name for g in graph.groups if g.name.endswith(":in")):
                                  "model input", **{g.name: "model output" for g in graph.groups
                                                    if g.reason == "model output"}}
    before, after = result["macs"]
    assert after < 0.75 * before
    path = tmp_path / f"{name}.pt"
    save_compressed(result["model"], path, meta={"edits": [result["record"]]})
    fresh = load_weights(randomize(factory(), seed=2), path)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(fresh.eval()(x), result["model"](x))
