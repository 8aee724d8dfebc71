"""Quantization: observers, scale and zero point, fake quantization (STE, LSQ, PACT, DoReFa),
BatchNorm folding, and post-training static quantization of any model torch.fx can trace.

Example::

    >>> import torch
    >>> from torchslim.quantization import QuantConfig, quantize
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8),
    ...                             torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(288, 4))
    >>> batches = [torch.randn(4, 3, 8, 8) for _ in range(3)]
    >>> quantized = quantize(model.eval(), QuantConfig(), batches, torch.zeros(1, 3, 8, 8))
    >>> quantized(torch.randn(2, 3, 8, 8)).shape
    torch.Size([2, 4])
"""

from .bias_correction import correct_bias, ensure_biases, mean_output_error
from .config import METHODS, QuantConfig
from .dynamic import (
    dynamic_layers,
    load_dynamic,
    quantize_dynamic,
    quantize_dynamic_onnx,
    save_dynamic,
)
from .equalize import equalize
from .fake import (
    ClippedLinear,
    DoReFaWeight,
    FakeQuantize,
    LSQQuantize,
    PACTQuantize,
    Quantizer,
    SharedQuantize,
    WRPNWeight,
    pact_penalty,
)
from .fold import fold_batchnorms, fold_into
from .modules import QuantConv, QuantConvBn, QuantLinear
from .observers import (
    OBSERVERS,
    HistogramObserver,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MSEObserver,
    Observer,
    PercentileObserver,
    make_observer,
)
from .prepare import (
    activation_quantizers,
    calibrate,
    freeze,
    is_prepared,
    prepare,
    quantize,
    weight_quantizers,
)
from .qparams import QuantSpec, fake_quantize, qparams
from .sensitivity import SensitivityReport, SensitivityRow, quantization_sensitivity
from .weight_only import (
    PackedWeight,
    load_weight_only,
    quantize_weights,
    read_weight_only,
    save_weight_only,
)

__all__ = [
    "SensitivityReport",
    "SensitivityRow",
    "correct_bias",
    "ensure_biases",
    "equalize",
    "mean_output_error",
    "quantization_sensitivity",
    "PackedWeight",
    "dynamic_layers",
    "load_dynamic",
    "load_weight_only",
    "quantize_dynamic",
    "quantize_dynamic_onnx",
    "quantize_weights",
    "read_weight_only",
    "save_dynamic",
    "save_weight_only",
    "METHODS",
    "OBSERVERS",
    "ClippedLinear",
    "DoReFaWeight",
    "WRPNWeight",
    "FakeQuantize",
    "HistogramObserver",
    "LSQQuantize",
    "MSEObserver",
    "MinMaxObserver",
    "MovingAverageMinMaxObserver",
    "Observer",
    "PACTQuantize",
    "PercentileObserver",
    "QuantConfig",
    "QuantConv",
    "QuantConvBn",
    "QuantLinear",
    "QuantSpec",
    "Quantizer",
    "activation_quantizers",
    "SharedQuantize",
    "calibrate",
    "fake_quantize",
    "fold_batchnorms",
    "fold_into",
    "freeze",
    "is_prepared",
    "make_observer",
    "pact_penalty",
    "prepare",
    "qparams",
    "quantize",
    "weight_quantizers",
]
