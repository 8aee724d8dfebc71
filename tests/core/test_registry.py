"""Registries, plug-in discovery and architecture edits: a lower layer finds what method
packages register without importing them by name."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from torchslim.core.config import (
    RECIPE_CLASSES,
    NoArgs,
    find_recipe_class,
    register_recipe_class,
    register_unsupported,
)
from torchslim.core.edits import apply_edits
from torchslim.core.errors import UserError
from torchslim.core.registry import Registry


def fresh_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_registry_names_close_entries_and_refuses_a_second_entry_for_a_name():
    registry = Registry("colour")
    registry.register("red", "#f00")
    with pytest.raises(UserError, match=r"unknown colour 'rde' \(did you mean 'red'\?\)"):
        registry.get("rde")
    with pytest.raises(ValueError, match="already registered"):
        registry.register("red", "#e00")
    registry.register("red", "#e00", replace=True)
    assert registry.get("red") == "#e00" and "red" in registry and registry.names() == ["red"]
    registry.unregister("red")
    assert registry.find("red") is None


def test_recipe_classes_are_found_without_importing_the_method_package():
    done = fresh_python(
        "import sys; from torchslim.core.config import find_recipe_class; "
        "assert 'torchslim.pruning' not in sys.modules; "
        "spec = find_recipe_class('pruners', 'AutomatedGradualPruner'); "
        "print(spec.build.__module__, 'torchslim.pruning' in sys.modules)"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["torchslim.pruning.recipes", "True"]


def test_a_thinned_file_loads_into_a_fresh_model_importing_only_the_models(tmp_path):
    from torchslim.core.storage import save_compressed
    from torchslim.graph import build_graph
    from torchslim.models import create_model
    from torchslim.pruning import Masks
    from torchslim.pruning.structured import FilterNormPruner
    from torchslim.pruning.thinning import thin

    model, x = create_model("cifar_resnet20").eval(), torch.zeros(1, 3, 32, 32)
    FilterNormPruner(0.5).apply(build_graph(model, x), Masks(model))
    record = thin(model, x)
    save_compressed(model, tmp_path / "thin.pt", meta={"edits": [record]})
    done = fresh_python(
        "import sys; from torchslim.models import create_model, load_weights; "
        f"m = load_weights(create_model('cifar_resnet20'), {str(tmp_path / 'thin.pt')!r}); "
        "print(m.conv1.out_channels, type(m.layer2[0].shortcut).__name__)"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["8", "ChannelPadShortcut"]


def test_edits_without_a_known_kind_are_user_errors():
    with pytest.raises(UserError, match="without a 'kind'"):
        apply_edits(torch.nn.Linear(1, 1), [{"conv1": {}}])
    with pytest.raises(UserError, match="unknown model edit kind 'factorize'"):
        apply_edits(torch.nn.Linear(1, 1), [{"kind": "factorize"}])


def test_a_real_class_replaces_a_not_yet_supported_name_in_any_order():
    try:
        register_unsupported("quantizers", ["FakeQuantizer"], "later")
        assert find_recipe_class("quantizers", "FakeQuantizer").unsupported == "later"
        register_recipe_class("quantizers", ["FakeQuantizer"], NoArgs, lambda args, model: 42)
        register_unsupported("quantizers", ["FakeQuantizer"], "later")
        spec = find_recipe_class("quantizers", "FakeQuantizer")
        assert spec.unsupported == "" and spec.build(NoArgs(), None) == 42
    finally:
        RECIPE_CLASSES["quantizers"].unregister("FakeQuantizer")
