"""The model zoo: models by name, plus any user factory given as ``package.module:function``.

Example::

    >>> from torchslim.models import create_model, get_model_spec, register_model
    >>> get_model_spec("cifar_resnet20").input_shape
    (3, 32, 32)
    >>> @register_model("tiny_mlp", input_shape=(4,), normalization="none")
    ... def tiny_mlp(num_classes=10):
    ...     import torch.nn as nn
    ...     return nn.Linear(4, num_classes)
    >>> create_model("tiny_mlp", num_classes=3).out_features
    3
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from ..core.errors import UserError, did_you_mean
from . import cifar_resnet, distiller_zoo, small


@dataclass(frozen=True)
class ModelSpec:
    """How to build a model and what it expects: input shape (no batch) and normalisation preset."""

    name: str
    factory: Callable[..., nn.Module]
    input_shape: tuple[int, ...]
    normalization: str
    description: str = ""


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(
    name: str, *, input_shape: tuple[int, ...], normalization: str = "none", description: str = ""
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator that adds a factory to the zoo under ``name``."""

    def decorate(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        doc = description or (inspect.getdoc(factory) or "").split("\n")[0]
        _REGISTRY[name] = ModelSpec(name, factory, tuple(input_shape), normalization, doc)
        return factory

    return decorate


def list_models() -> list[ModelSpec]:
    """All registered models, sorted by name."""
    return [_REGISTRY[name] for name in sorted(_REGISTRY)]


def _import_factory(target: str) -> Callable[..., nn.Module]:
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise UserError(
            f"cannot import module '{module_name}' for model '{target}': {err}; "
            "check that it is installed or on PYTHONPATH"
        ) from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise UserError(f"'{attr}' in module '{module_name}' is not a callable model factory")
    return factory


def get_model_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` for a zoo name or a ``package.module:function`` factory."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    if ":" in name:
        factory = _import_factory(name)
        shape = tuple(getattr(factory, "input_shape", ()))
        return ModelSpec(name, factory, shape, getattr(factory, "normalization", "none"))
    raise UserError(
        f"unknown model '{name}'{did_you_mean(name, _REGISTRY)}; "
        "run 'torchslim models' for the zoo, or give your own factory as package.module:function"
    )


def create_model(name: str, num_classes: int | None = None, **kwargs) -> nn.Module:
    """Build a model by zoo name or ``package.module:function``; ``num_classes`` if it takes one."""
    spec = get_model_spec(name)
    if num_classes is not None and "num_classes" in inspect.signature(spec.factory).parameters:
        kwargs["num_classes"] = num_classes
    model = spec.factory(**kwargs)
    if not isinstance(model, nn.Module):
        raise UserError(f"model factory '{name}' returned {type(model).__name__}, not an nn.Module")
    return model


for _depth, _factory in (
    (20, cifar_resnet.cifar_resnet20),
    (32, cifar_resnet.cifar_resnet32),
    (44, cifar_resnet.cifar_resnet44),
    (56, cifar_resnet.cifar_resnet56),
):
    register_model(
        f"cifar_resnet{_depth}",
        input_shape=(3, 32, 32),
        normalization="cifar",
        description=f"ResNet-{_depth} for CIFAR-10 (He et al. 2015), option-A shortcuts",
    )(_factory)

for _depth, _blocks in distiller_zoo.DEPTHS.items():
    register_model(
        f"resnet{_depth}_cifar",
        input_shape=(3, 32, 32),
        normalization="distiller_cifar",
        description=f"Distiller's ResNet-{_depth} for CIFAR-10 (1x1-conv downsample, fc head)",
    )(functools.partial(distiller_zoo.ResNetCifarDistiller, _blocks))
    register_model(
        f"preact_resnet{_depth}_cifar",
        input_shape=(3, 32, 32),
        normalization="distiller_cifar",
        description=f"Distiller's pre-activation ResNet-{_depth} for CIFAR-10",
    )(functools.partial(distiller_zoo.PreactResNetCifar, _blocks))
register_model("plain20_cifar", input_shape=(3, 32, 32), normalization="distiller_cifar",
               description="Distiller's ResNet-20 without shortcuts")(distiller_zoo.PlainCifar)
register_model("vgg16_cifar", input_shape=(3, 32, 32), normalization="distiller_cifar",
               description="Distiller's VGG-16 for CIFAR-10 (no BatchNorm)")(
    distiller_zoo.VGGCifar)
register_model("simplenet_mnist", input_shape=(1, 28, 28), normalization="mnist",
               description="Distiller's MNIST network (2 convs, 2 linear layers)")(
    distiller_zoo.SimplenetMnist)
register_model("simplenet_v2_mnist", input_shape=(1, 28, 28), normalization="mnist",
               description="Distiller's small MNIST network (2 convs, 1 linear layer)")(
    distiller_zoo.SimplenetV2Mnist)

register_model(
    "lenet5", input_shape=(1, 28, 28), normalization="none", description="LeNet-5 for 1x28x28"
)(small.LeNet5)
register_model(
    "demo_cnn",
    input_shape=(1, 8, 8),
    normalization="digits",
    description="three-layer CNN for the 8x8 digits demo",
)(small.DemoCNN)
