"""Layers with quantized weights: the float layer plus a weight quantizer, applied on the fly.

:class:`QuantConv` and :class:`QuantLinear` wrap a convolution or Linear layer (its parameters
stay under the same names inside ``.layer``) and fake-quantize its weight on every forward pass,
so calibration, quantization-aware training and ONNX export all see the quantized weight.
:class:`QuantConvBn` keeps a BatchNorm after the convolution for quantization-aware training and
quantizes the weight *as it will be folded* (``W * gamma / sqrt(var + eps)``), as torch.ao's
ConvBn modules do, so the folded int8 model computes what training saw; in evaluation mode it is
exactly the folded convolution.

Example::

    >>> import torch
    >>> from torchslim.quantization.fake import FakeQuantize
    >>> from torchslim.quantization.modules import QuantLinear
    >>> layer = QuantLinear(torch.nn.Linear(4, 2), FakeQuantize.weights())
    >>> _ = layer.weight_quantizer(layer.layer.weight)  # observe the weight
    >>> layer.weight_quantizer.freeze()
    >>> bool((layer.quantized_weight() - layer.layer.weight).abs().max() < 0.01)
    True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

from .fake import Quantizer


class _QuantLayer(nn.Module):
    """What the quantized layers share: the weight quantizer and, once :func:`~torchslim.
    quantization.prepare` links it, the quantizer of the layer's input, whose scale sets the grid
    of the bias (an int8 runtime adds an int32 bias at ``input scale * weight scale``)."""

    weight_quantizer: Quantizer
    _input: list[Quantizer]

    def link_input(self, quantizer: Quantizer | None) -> None:
        self._input = [quantizer] if quantizer is not None else []

    def quantized_bias(self, bias: torch.Tensor | None) -> torch.Tensor | None:
        inputs = getattr(self, "_input", [])
        if bias is None or not inputs or not inputs[0].quantizing:
            return bias
        if not self.weight_quantizer.quantizing or not self.weight_quantizer.on_grid:
            return bias
        input_scale = inputs[0].qparams()[0].reshape(())
        weight_scale = self.weight_quantizer.qparams()[0]
        step = (input_scale * weight_scale).reshape(-1).to(bias.dtype)
        steps = torch.round(bias / step).clamp(-(2**31), 2**31 - 1)  # int32, as exported
        return bias + (steps * step - bias).detach()


def _conv(layer: _ConvNd, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
    if layer.padding_mode != "zeros":
        return layer._conv_forward(x, weight, bias)
    function = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[weight.dim() - 2]
    return function(x, weight, bias, layer.stride, layer.padding, layer.dilation, layer.groups)


class QuantConv(_QuantLayer):
    """A convolution whose weight (and bias) is fake-quantized on the forward pass."""

    def __init__(self, layer: _ConvNd, weight_quantizer: Quantizer) -> None:
        super().__init__()
        if layer.transposed:
            raise TypeError("transposed convolutions are not quantized")
        self.layer = layer
        self.weight_quantizer = weight_quantizer

    def quantized_weight(self) -> torch.Tensor:
        return self.weight_quantizer(self.layer.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.quantized_weight()
        return _conv(self.layer, x, weight, self.quantized_bias(self.layer.bias))


class QuantLinear(_QuantLayer):
    """A Linear layer whose weight (and bias) is fake-quantized on the forward pass."""

    def __init__(self, layer: nn.Linear, weight_quantizer: Quantizer) -> None:
        super().__init__()
        self.layer = layer
        self.weight_quantizer = weight_quantizer

    def quantized_weight(self) -> torch.Tensor:
        return self.weight_quantizer(self.layer.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.quantized_weight()
        return F.linear(x, weight, self.quantized_bias(self.layer.bias))


class QuantConvBn(_QuantLayer):
    """A convolution and the BatchNorm after it, with the folded weight fake-quantized."""

    def __init__(self, layer: _ConvNd, bn: _BatchNorm, weight_quantizer: Quantizer) -> None:
        super().__init__()
        self.layer = layer
        self.bn = bn
        self.weight_quantizer = weight_quantizer

    def _factor(self) -> torch.Tensor:
        std = torch.sqrt(self.bn.running_var + self.bn.eps)
        gamma = self.bn.weight if self.bn.weight is not None else torch.ones_like(std)
        return gamma / std

    def _shape(self) -> list[int]:
        return [-1] + [1] * (self.layer.weight.dim() - 1)

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The folded weight (quantized) and bias: what the int8 model runs."""
        factor = self._factor()
        weight = self.weight_quantizer(self.layer.weight * factor.reshape(self._shape()))
        bias = self.layer.bias if self.layer.bias is not None else torch.zeros_like(factor)
        beta = self.bn.bias if self.bn.bias is not None else torch.zeros_like(factor)
        return weight, (bias - self.bn.running_mean) * factor + beta

    def quantized_weight(self) -> torch.Tensor:
        """The folded weight, quantized."""
        return self.folded()[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            weight, bias = self.folded()
            return _conv(self.layer, x, weight, self.quantized_bias(bias))
        factor = self._factor()
        safe = torch.where(factor.abs() < 1e-8, torch.full_like(factor, 1e-8), factor)
        weight = self.weight_quantizer(self.layer.weight * safe.reshape(self._shape()))
        out = _conv(self.layer, x, weight, None) / safe.reshape([1, -1] + [1] * (x.dim() - 2))
        if self.layer.bias is not None:
            out = out + self.layer.bias.reshape([1, -1] + [1] * (x.dim() - 2))
        return self.bn(out)
