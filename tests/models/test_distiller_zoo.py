"""Distiller's zoo models: its names, its published sizes, and prunable like any other model."""

from __future__ import annotations

import pytest
import torch

from torchslim.analysis import summarize
from torchslim.core.storage import save_compressed
from torchslim.graph import build_graph
from torchslim.models import create_model, load_weights
from torchslim.pruning import Masks
from torchslim.pruning.structured import FilterNormPruner
from torchslim.pruning.thinning import thin


def _weights(model):
    """Distiller's parameter count: conv and fc weight tensors only."""
    return sum(p.numel() for n, p in model.named_parameters() if n.endswith("weight")
               and p.dim() > 1)


def test_resnet56_cifar_has_distillers_published_size():
    # examples/pruning_filters_for_efficient_convnets/resnet56_cifar_filter_rank.yaml states
    # 851,504 parameters and 125,747,840 MACs for the baseline.
    model = create_model("resnet56_cifar")
    assert _weights(model) == 851_504
    assert summarize(model, (3, 32, 32)).macs == 125_747_840
    names = dict(model.named_parameters())
    assert {"fc.weight", "layer2.0.downsample.0.weight", "layer3.8.conv2.weight",
            "layer1.0.bn1.weight"} <= set(names)


@pytest.mark.parametrize("name,shape", [
    ("resnet20_cifar", (3, 32, 32)), ("resnet32_cifar", (3, 32, 32)),
    ("resnet44_cifar", (3, 32, 32)), ("preact_resnet20_cifar", (3, 32, 32)),
    ("preact_resnet56_cifar", (3, 32, 32)), ("plain20_cifar", (3, 32, 32)),
    ("vgg16_cifar", (3, 32, 32)), ("simplenet_mnist", (1, 28, 28)),
    ("simplenet_v2_mnist", (1, 28, 28)),
])
def test_distiller_models_prune_thin_and_reload(name, shape, tmp_path):
    torch.manual_seed(0)
    model = create_model(name).eval()
    x = torch.randn(2, *shape)
    before = summarize(model, shape).macs
    masks = Masks(model)
    FilterNormPruner(0.3).apply(build_graph(model, x[:1]), masks)
    record = thin(model, x[:1], masks=masks)
    assert summarize(model, shape).macs < 0.8 * before
    path = tmp_path / "thin.pt"
    save_compressed(model, path, meta={"edits": [record]})
    fresh = load_weights(create_model(name), path).eval()
    assert torch.allclose(fresh(x), model(x), atol=1e-5)


def test_distiller_models_normalize_their_inputs_as_distiller_trained_them():
    from torchslim.data import NORMALIZATION
    from torchslim.models import get_model_spec

    # distiller/apputils/data_loaders.py: Normalize((0.5,)*3, (0.5,)*3), MNIST (0.1307, 0.3081)
    assert NORMALIZATION[get_model_spec("resnet20_cifar").normalization] == ((0.5,) * 3,
                                                                              (0.5,) * 3)
    assert NORMALIZATION[get_model_spec("simplenet_mnist").normalization] == ((0.1307,),
                                                                               (0.3081,))
    assert get_model_spec("cifar_resnet20").normalization == "cifar"  # the shared weights'
