"""Empirical bias correction (Nagel et al. 2019, section 4.2; Banner et al. 2019): remove the
mean error that quantization leaves in each layer's output.

Rounding a layer's weights changes its output by ``(W_q - W) x``, whose mean over the data is
not zero per output channel (``E[x]`` is not zero after a ReLU), so quantization shifts every
channel; the next ReLUs and layers turn the shift into errors. :func:`correct_bias` measures, on
calibration batches, the mean output per output channel of every quantized convolution and Linear
layer in the quantized model and in the float model, and subtracts the difference from the
layer's bias (a layer without a bias gets one).

Each model computes the layer's input its own way: the float model from float inputs, the
quantized model from quantized ones, with the layers before already corrected (layers are
corrected one at a time, in graph order). So the correction also removes the mean shift the
earlier layers' quantization (weights and activations) leaves in the layer's input, and after it
the quantized model's mean pre-activation of each channel equals the float model's on those
batches. The cost is one partial pass over the batches per layer.

Example::

    >>> import torch
    >>> from torchslim.quantization import QuantConfig, quantize
    >>> from torchslim.quantization.bias_correction import correct_bias, mean_output_error
    >>> torch.manual_seed(0) and None
    >>> model = torch.nn.Sequential(torch.nn.Linear(32, 8), torch.nn.ReLU()).eval()
    >>> batches = [torch.rand(64, 32) for _ in range(4)]
    >>> quantized = quantize(model, QuantConfig(weight_bits=3), batches, torch.zeros(1, 32))
    >>> before = mean_output_error(model, quantized, batches)["0"]
    >>> corrections = correct_bias(model, quantized, batches)
    >>> after = mean_output_error(model, quantized, batches)["0"]
    >>> bool(after < 0.1 * before)
    True
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from itertools import islice
from typing import Any

import torch
from torch import nn
from torch.nn.modules.conv import _ConvNd

from ..core.errors import UserError
from ..core.modules import eval_mode
from .fake import Quantizer
from .fold import fold_batchnorms
from .modules import QuantConv, QuantConvBn, QuantLinear

_QUANT_LAYERS = (QuantConv, QuantLinear, QuantConvBn)


class _Stop(Exception):
    """Ends a forward pass once the layer measured has run."""


def correct_bias(
    float_model: nn.Module,
    quantized_model: nn.Module,
    batches: Iterable[Any],
    *,
    max_batches: int | None = None,
) -> dict[str, float]:
    """Correct the biases of ``quantized_model`` (frozen, as :func:`~torchslim.quantization.
    quantize` returns it) in place so that each quantized layer's mean output per channel matches
    that layer's in ``float_model`` (the float model it was made from, after equalization if
    any) on ``batches`` (``(inputs, targets)`` pairs or input tensors, the first ``max_batches``);
    return the mean absolute correction of each layer, by layer name."""
    layers = quantized_layers(quantized_model)
    if not layers:
        raise UserError("the quantized model has no layers with quantized weights: pass the "
                        "model quantize() returned, after calibration")
    if any(q.observing and q.quantizing for q in quantized_model.modules()
           if isinstance(q, Quantizer)):
        raise UserError("the quantized model is still observing (calibrating or training): "
                        "freeze it first (torchslim.quantization.freeze)")
    reference = _reference(float_model, layers)
    inputs = _inputs(batches, max_batches, quantized_model)
    targets = _mean_outputs(reference, list(layers), inputs)
    corrections = {}
    with eval_mode(quantized_model), torch.no_grad():
        for name in _call_order(quantized_model, layers, inputs[0]):
            error = _mean_output(quantized_model, layers[name], inputs) - targets[name]
            shift_bias(layers[name], -error)
            corrections[name] = float(error.abs().mean())
    return corrections


def mean_output_error(
    float_model: nn.Module,
    quantized_model: nn.Module,
    batches: Iterable[Any],
    *,
    max_batches: int | None = None,
) -> dict[str, float]:
    """Per quantized layer: the mean over output channels of ``|E[quantized] - E[float]|``, the
    per-channel mean output error :func:`correct_bias` removes."""
    layers = quantized_layers(quantized_model)
    reference = _reference(float_model, layers)
    inputs = _inputs(batches, max_batches, quantized_model)
    targets = _mean_outputs(reference, list(layers), inputs)
    means = _mean_outputs(quantized_model, list(layers), inputs)
    return {name: float((means[name] - targets[name]).abs().mean()) for name in layers}


def quantized_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The convolutions and Linear layers of a prepared model whose weights are quantized."""
    return {name: module for name, module in model.named_modules()
            if isinstance(module, _QUANT_LAYERS) and module.weight_quantizer.quantizing}


def ensure_biases(model: nn.Module) -> list[str]:
    """Give every quantized layer of a prepared ``model`` that has no bias a zero one, so the
    state of a bias-corrected model loads into it; return those layers."""
    added = []
    for name, module in model.named_modules():
        if isinstance(module, QuantConv | QuantLinear) and module.layer.bias is None:
            _add_bias(module.layer)
            added.append(name)
        elif isinstance(module, QuantConvBn) and module.bn.bias is None and (
            module.layer.bias is None
        ):
            _add_bias(module.layer)
            added.append(name)
    return added


def shift_bias(module: nn.Module, delta: torch.Tensor) -> None:
    """Add ``delta`` (one value per output channel) to the output of a quantized layer."""
    with torch.no_grad():
        if isinstance(module, QuantConvBn):
            if module.bn.bias is not None:  # folded bias = (b - mean) * factor + beta
                module.bn.bias.add_(delta.to(module.bn.bias.dtype))
                return
            factor = module._factor()
            delta = torch.where(factor == 0, torch.zeros_like(factor), delta / factor)
        layer = module.layer
        if layer.bias is None:
            _add_bias(layer)
        layer.bias.add_(delta.to(layer.bias.dtype))


def _add_bias(layer: nn.Module) -> None:
    weight = layer.weight
    layer.bias = nn.Parameter(torch.zeros(weight.shape[0], dtype=weight.dtype,
                                          device=weight.device))


def _float_weight(module: nn.Module) -> torch.Tensor:
    """The float weight a quantized layer rounds (folded with its BatchNorm)."""
    if isinstance(module, QuantConvBn):
        return module.layer.weight * module._factor().reshape(module._shape())
    return module.layer.weight


def _reference(float_model: nn.Module, layers: dict[str, nn.Module]) -> nn.Module:
    """A copy of ``float_model`` with its BatchNorms folded (the layer outputs the quantized
    model computes), checked to hold the weights ``layers`` quantize."""
    reference = copy.deepcopy(float_model).eval()
    fold_batchnorms(reference)
    modules = dict(reference.named_modules())
    for name, module in layers.items():
        layer = modules.get(name)
        expected = _float_weight(module).detach()
        found = getattr(layer, "weight", None)
        if not isinstance(layer, _ConvNd | nn.Linear) or found is None or (
            found.shape != expected.shape
            or (found.detach() - expected).abs().max() > 1e-4 * expected.abs().max() + 1e-8
        ):
            raise UserError(f"layer '{name}' of the float model differs from the quantized "
                            "model's: pass the float model the quantized model was made from "
                            "(after equalization, if any)")
    return reference


def _inputs(
    batches: Iterable[Any], max_batches: int | None, model: nn.Module
) -> list[torch.Tensor]:
    if max_batches is not None and max_batches < 1:
        raise UserError(f"max_batches must be at least 1, got {max_batches}")
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    inputs = [(batch[0] if isinstance(batch, tuple | list) else batch).to(device)
              for batch in islice(batches, max_batches)]
    if not inputs:
        raise UserError("bias correction got no batches: is the calibration split empty?")
    return inputs


def _channel_sums(output: torch.Tensor, module: nn.Module) -> tuple[torch.Tensor, int]:
    """The sum per output channel (axis 1 of a convolution's output, the last axis of a Linear
    layer's) and the number of values summed per channel."""
    conv = isinstance(module, _ConvNd | QuantConv | QuantConvBn)
    axis = 1 if conv else output.dim() - 1
    dims = [d for d in range(output.dim()) if d != axis]
    return output.double().sum(dim=dims), output.numel() // output.shape[axis]


@contextmanager
def _recording(modules: dict[str, nn.Module], stop: bool = False) -> Iterator[dict[str, list]]:
    """Per module: [sum per channel, count], accumulated over forward passes; ``stop`` ends each
    pass after the (single) module has run."""
    sums: dict[str, list] = {}

    def hook(name: str):
        def record(module: nn.Module, args: Any, output: torch.Tensor) -> None:
            total, count = _channel_sums(output.detach(), module)
            entry = sums.setdefault(name, [torch.zeros_like(total), 0])
            entry[0] += total
            entry[1] += count
            if stop:
                raise _Stop
        return record

    handles = [module.register_forward_hook(hook(name)) for name, module in modules.items()]
    try:
        yield sums
    finally:
        for handle in handles:
            handle.remove()


def _run(model: nn.Module, inputs: list[torch.Tensor]) -> None:
    with eval_mode(model), torch.no_grad():
        for x in inputs:
            try:
                model(x)
            except _Stop:
                pass


def _mean_outputs(
    model: nn.Module, names: list[str], inputs: list[torch.Tensor]
) -> dict[str, torch.Tensor]:
    modules = {name: model.get_submodule(name) for name in names}
    with _recording(modules) as sums:
        _run(model, inputs)
    missing = [name for name in names if name not in sums]
    if missing:
        raise UserError(f"layer '{missing[0]}' never ran on the calibration batches: bias "
                        "correction needs batches that reach every quantized layer")
    return {name: (total / count).float() for name, (total, count) in sums.items()}


def _mean_output(model: nn.Module, module: nn.Module, inputs: list[torch.Tensor]) -> torch.Tensor:
    with _recording({"layer": module}, stop=True) as sums:
        _run(model, inputs)
    total, count = sums["layer"]
    return (total / count).float()


def _call_order(
    model: nn.Module, layers: dict[str, nn.Module], x: torch.Tensor
) -> list[str]:
    """``layers`` in the order the forward pass runs them."""
    order: list[str] = []
    handles = [module.register_forward_hook(
        lambda *_, name=name: order.append(name) if name not in order else None)
        for name, module in layers.items()]
    try:
        _run(model, [x])
    finally:
        for handle in handles:
            handle.remove()
    return order
