"""A quantized model as an architecture edit, so its file reloads into a fresh model.

:func:`quantization_record` describes a prepared model as plain data (``{"kind":
"quantization", "config": ..., "input_shape": ...}``); replaying it (:func:`apply_quantization`,
registered as the ``"quantization"`` edit) prepares a fresh model the same way, with every
quantizer quantizing, so the saved scales and zero points load into it with ``weights_only``.

Example::

    >>> import tempfile, torch
    >>> from torchslim.core.storage import save_compressed
    >>> from torchslim.models import create_model, load_weights
    >>> from torchslim.quantization import QuantConfig, quantize
    >>> from torchslim.quantization.record import quantization_record
    >>> model = create_model("demo_cnn").eval()
    >>> batches = [torch.randn(8, 1, 8, 8) for _ in range(2)]
    >>> config = QuantConfig(observer="minmax")
    >>> quantized = quantize(model, config, batches, torch.zeros(1, 1, 8, 8))
    >>> path = tempfile.mktemp(suffix=".pt")
    >>> _ = save_compressed(quantized, path, meta={"edits": [quantization_record(quantized)]})
    >>> fresh = load_weights(create_model("demo_cnn"), path)
    >>> x = torch.randn(2, 1, 8, 8)
    >>> torch.equal(fresh.eval()(x), quantized(x))
    True
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..core.edits import register_edit
from ..core.errors import UserError
from .bias_correction import ensure_biases
from .config import QuantConfig
from .fake import Quantizer
from .fold import fold_batchnorms
from .prepare import is_prepared, prepare

RECORD_VERSION = 1


def quantization_record(model: nn.Module) -> dict[str, Any]:
    """The edit record of a prepared model (see the module docstring)."""
    if not is_prepared(model):
        raise UserError("the model is not quantized: quantize it first")
    return {"kind": "quantization", "version": RECORD_VERSION,
            "config": model.quant_config.to_dict(), "input_shape": list(model.input_shape)}


@register_edit("quantization")
def apply_quantization(model: nn.Module, record: Mapping[str, Any]) -> nn.Module:
    """Prepare ``model`` in place as ``record`` says, every quantizer quantizing."""
    if record.get("version") != RECORD_VERSION:
        raise UserError(f"quantization record version {record.get('version')} is not supported "
                        f"(this torchslim writes version {RECORD_VERSION})")
    config = QuantConfig.from_dict(dict(record["config"]))
    if config.equalize:  # quantize() folded every BatchNorm before equalizing
        fold_batchnorms(model)
    prepare(model, torch.zeros(1, *record["input_shape"]), config, inplace=True)
    if config.bias_correction:
        ensure_biases(model)  # corrected layers that had no bias have one now
    for quantizer in model.modules():
        if isinstance(quantizer, Quantizer):
            quantizer.observing, quantizer.quantizing = False, True
    return model
