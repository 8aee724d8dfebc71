"""Dynamic quantization: int8 weights ahead of time, activations quantized per batch on the fly.

For models whose time goes into Linear, LSTM and GRU layers (MLPs, recurrent and attention
models) on the CPU: no calibration data is needed, since each batch's activation range is
measured as it runs. The work is done by the maintained implementations, not by kernels of ours:

* :func:`quantize_dynamic` for a PyTorch model: ``torch.ao.quantization.quantize_dynamic``
  (fbgemm/x86 or qnnpack int8 kernels; per-tensor symmetric int8 weights, uint8 activations).
  ``torch.ao.quantization`` warns that it is deprecated in favour of torchao; it still works in
  torch 2.13 and its warnings are silenced here.
* :func:`quantize_dynamic_onnx` for an exported ONNX model:
  ``onnxruntime.quantization.quantize_dynamic`` (Gemm and MatMul become DynamicQuantizeLinear +
  MatMulInteger, LSTM becomes DynamicQuantizeLSTM; ONNX Runtime has no dynamic GRU, which stays
  float).

Saving: a dynamic-quantized PyTorch model's ``state_dict`` holds the packed weights of LSTM and
GRU layers as TorchScript objects, which ``torch.load(..., weights_only=True)`` refuses (Linear
layers alone would load). :func:`save_dynamic` therefore writes the int8 weights with their
scales and zero points as plain tensors (biases and all other layers unchanged), and
:func:`load_dynamic` rebuilds the dynamic model from the float architecture: the same integers,
so the same outputs, with no pickled code. The ONNX file of :func:`quantize_dynamic_onnx` is
the other way to ship it.

Example::

    >>> import torch
    >>> from torchslim.quantization.dynamic import dynamic_layers, quantize_dynamic
    >>> model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(),
    ...                             torch.nn.Linear(32, 4)).eval()
    >>> quantized = quantize_dynamic(model)
    >>> dynamic_layers(quantized)
    {'0': 'Linear', '2': 'Linear'}
    >>> x = torch.randn(8, 16)
    >>> bool((quantized(x) - model(x)).abs().max() < 0.05)
    True
"""

from __future__ import annotations

import copy
import json
import logging
import os
import tempfile
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.edits import apply_edits
from ..core.errors import UserError
from ..core.fileio import atomic_torch_save, atomic_write
from ..models.checkpoint import read_checkpoint

FORMAT = "torchslim.dynamic/1"

#: The float layer types dynamic quantization replaces, by name.
LAYER_TYPES: dict[str, type[nn.Module]] = {
    "Linear": nn.Linear, "LSTM": nn.LSTM, "GRU": nn.GRU,
    "LSTMCell": nn.LSTMCell, "GRUCell": nn.GRUCell, "RNNCell": nn.RNNCell,
}
#: The layers :func:`quantize_dynamic` replaces by default.
DEFAULT_LAYERS: tuple[type[nn.Module], ...] = (nn.Linear, nn.LSTM, nn.GRU)
#: The weight types: int8 (activations quantized per batch) or float16 (weights only).
DTYPES = {"qint8": torch.qint8, "float16": torch.float16}
#: The ONNX op types :func:`quantize_dynamic_onnx` quantizes by default (a Gemm counts as a
#: MatMul: ONNX Runtime rewrites it before quantizing). "Conv" (ConvInteger) is left out: for
#: convolutions, static quantization is the faster choice.
ONNX_OPS = ("MatMul", "LSTM", "Attention")
#: The ops of a dynamically quantized ONNX graph that compute in integers.
DYNAMIC_ONNX_OPS = frozenset({
    "DynamicQuantizeLinear", "MatMulInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat",
    "DynamicQuantizeLSTM", "ConvInteger", "QAttention",
})


def _check_dtype(dtype: Any) -> torch.dtype:
    if dtype not in DTYPES.values():
        raise UserError(f"dynamic quantization stores weights as torch.qint8 or torch.float16, "
                        f"got {dtype!r}")
    return dtype


def _check_layers(layers: type[nn.Module] | Iterable[type[nn.Module]]) -> tuple[type, ...]:
    layers = (layers,) if isinstance(layers, type) else tuple(layers)
    unknown = [layer for layer in layers if layer not in LAYER_TYPES.values()]
    if unknown or not layers:
        names = ", ".join(getattr(layer, "__name__", repr(layer)) for layer in unknown)
        raise UserError(
            f"dynamic quantization replaces nn.{', nn.'.join(LAYER_TYPES)} layers, not "
            f"{names or 'nothing'}: for convolutions use static quantization (quantize) or "
            "weight-only storage (save_weight_only)"
        )
    return layers


@contextmanager
def _quiet():
    """Silence torch.ao's deprecation warnings (and those of the quantized tensor factories)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r"(?s).*quantiz.*deprecated")
        yield


def quantize_dynamic(
    model: nn.Module,
    *,
    dtype: torch.dtype = torch.qint8,
    layers: type[nn.Module] | Iterable[type[nn.Module]] = DEFAULT_LAYERS,
) -> nn.Module:
    """A copy of ``model`` on the CPU, in evaluation mode, whose ``layers`` (exactly these types,
    not subclasses) are dynamically quantized; ``model`` itself is not changed. ``dtype`` is
    ``torch.qint8`` (int8 weights and per-batch int8 activations) or ``torch.float16``.

    >>> quantize_dynamic(torch.nn.Conv2d(1, 1, 3))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    torchslim.core.errors.UserError: Conv2d has no nn.Linear, nn.LSTM, nn.GRU layer: ...
    """
    dtype = _check_dtype(dtype)
    layers = _check_layers(layers)
    if not any(type(module) in layers for module in model.modules()):
        names = ", ".join(f"nn.{layer.__name__}" for layer in layers)
        raise UserError(f"{type(model).__name__} has no {names} layer: dynamic quantization "
                        "would change nothing (for convolutions use static quantization)")
    quantized = copy.deepcopy(model).cpu().eval()
    wrapped = type(quantized) in layers  # torch.ao replaces children only
    root = nn.Sequential(quantized) if wrapped else quantized
    with _quiet():
        from torch.ao.quantization import quantize_dynamic as ao_quantize_dynamic

        ao_quantize_dynamic(root, set(layers), dtype=dtype, inplace=True)
    return root[0] if wrapped else root


def _dynamic_classes() -> dict[type, str]:
    with _quiet():
        from torch.ao.quantization.quantization_mappings import (
            get_default_dynamic_quant_module_mappings,
        )

        mapping = get_default_dynamic_quant_module_mappings()
    return {mapping[layer]: name for name, layer in LAYER_TYPES.items()}


def dynamic_layers(model: nn.Module) -> dict[str, str]:
    """``{module name: float layer type}`` of the dynamically quantized layers of ``model``.

    >>> dynamic_layers(torch.nn.Linear(2, 2))
    {}
    """
    classes = _dynamic_classes()
    return {name: classes[type(module)] for name, module in model.named_modules()
            if type(module) in classes}


def _is_cell(kind: str) -> bool:
    return kind.endswith("Cell")


def _layer_tensors(module: nn.Module, kind: str) -> dict[str, torch.Tensor | None]:
    """The weights (quantized, or float for float16) and float biases of a dynamic layer."""
    if kind == "Linear":
        weight, bias = module._weight_bias()
        return {"weight": weight, "bias": bias}
    nested = module._weight_bias()
    return {**nested["weight"], **nested["bias"]}


def _set_layer_tensors(module: nn.Module, kind: str, tensors: dict[str, Any]) -> None:
    if kind == "Linear":
        module.set_weight_bias(tensors["weight"], tensors["bias"])
    elif _is_cell(kind):
        module.set_weight_bias({
            "weight": {k: v for k, v in tensors.items() if k.startswith("weight")},
            "bias": {k: v for k, v in tensors.items() if k.startswith("bias")},
        })
    else:
        module.set_weight_bias(tensors)


def _encode(tensor: torch.Tensor | None) -> dict[str, Any]:
    if tensor is None:
        return {"kind": "none"}
    tensor = tensor.detach().cpu()
    if not tensor.is_quantized:
        return {"kind": "float", "tensor": tensor.clone()}
    entry: dict[str, Any] = {"kind": "qint8", "int8": tensor.int_repr().clone()}
    if tensor.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
        entry.update(scale=float(tensor.q_scale()), zero_point=int(tensor.q_zero_point()))
    else:
        entry.update(scales=tensor.q_per_channel_scales().clone(),
                     zero_points=tensor.q_per_channel_zero_points().clone(),
                     axis=int(tensor.q_per_channel_axis()))
    return entry


def _decode(entry: Mapping[str, Any]) -> torch.Tensor | None:
    if entry["kind"] == "none":
        return None
    if entry["kind"] == "float":
        return entry["tensor"]
    if entry["kind"] != "qint8":
        raise ValueError(f"unknown tensor kind {entry['kind']!r}")
    with _quiet():
        if "axis" in entry:
            return torch._make_per_channel_quantized_tensor(
                entry["int8"], entry["scales"].double(), entry["zero_points"].long(),
                int(entry["axis"]))
        return torch._make_per_tensor_quantized_tensor(entry["int8"], float(entry["scale"]),
                                                       int(entry["zero_point"]))


def _under(key: str, names: Iterable[str]) -> bool:
    return any(name == "" or key.startswith(f"{name}.") for name in names)


def _dtype_of(module: nn.Module) -> torch.dtype:
    if hasattr(module, "_packed_params"):
        return module._packed_params.dtype
    return getattr(module, "weight_dtype", None) or module.dtype


def save_dynamic(
    model: nn.Module, path: str | os.PathLike, meta: Mapping[str, Any] | None = None
) -> Path:
    """Write a model made by :func:`quantize_dynamic` (atomically) as plain tensors: the int8
    weights of its dynamic layers with their scales and zero points, their float biases, and the
    ``state_dict`` of every other layer unchanged; ``meta`` (JSON-like) beside them. The file
    loads with ``torch.load(..., weights_only=True)``; :func:`load_dynamic` rebuilds the model.

    >>> import tempfile
    >>> path = tempfile.mktemp(suffix=".pt")
    >>> model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU())
    >>> _ = save_dynamic(quantize_dynamic(model), path)
    >>> x = torch.randn(2, 64)
    >>> torch.equal(load_dynamic(model, path)(x), quantize_dynamic(model)(x))
    True
    """
    layers = dynamic_layers(model)
    if not layers:
        raise UserError(f"{type(model).__name__} has no dynamically quantized layer: quantize it "
                        "with quantize_dynamic first, or save a float model with save_compressed")
    modules = dict(model.named_modules())
    dtypes = {_dtype_of(modules[name]) for name in layers}
    if len(dtypes) != 1 or next(iter(dtypes)) not in DTYPES.values():
        raise UserError(f"the dynamic layers of {type(model).__name__} mix weight types "
                        f"{sorted(map(str, dtypes))}: quantize the float model once with one dtype")
    dtype = next(iter(dtypes))
    entries = {}
    for name, kind in layers.items():
        tensors = _layer_tensors(modules[name], kind)
        if dtype == torch.float16:  # the weights are float16 values: store them as such
            tensors = {k: v.half() if k.startswith("weight") else v for k, v in tensors.items()}
        entries[name] = {"kind": kind, "tensors": {k: _encode(v) for k, v in tensors.items()}}
    rest = {}
    for key, value in model.state_dict().items():
        if _under(key, layers):
            continue
        if not isinstance(value, torch.Tensor) or value.is_quantized:
            raise UserError(f"'{key}' of {type(model).__name__} is neither a dynamic layer nor a "
                            "float tensor: only models made by quantize_dynamic can be saved")
        rest[key] = value.detach().cpu().clone()
    try:  # plain JSON types only, so that weights_only loading accepts the file
        plain_meta = json.loads(json.dumps(dict(meta or {})))
    except (TypeError, ValueError) as err:
        raise UserError(f"the meta of a dynamic model must be JSON-like: {err}") from None
    dtype_name = next(key for key, value in DTYPES.items() if value == dtype)
    payload = {"format": FORMAT, "dtype": dtype_name, "layers": entries, "state": rest,
               "meta": plain_meta}
    return atomic_torch_save(payload, path)


def _check_payload(checkpoint: Any, path: str | os.PathLike) -> None:
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        found = checkpoint.get("format") if isinstance(checkpoint, dict) else None
        what = f"format '{found}'" if found else "a plain checkpoint"
        raise UserError(f"'{path}' is not a torchslim dynamic-quantized model ({what}, not "
                        f"{FORMAT}): write one with save_dynamic")
    layers, state = checkpoint.get("layers"), checkpoint.get("state")
    if checkpoint.get("dtype") not in DTYPES or not isinstance(layers, dict) \
            or not isinstance(state, dict) \
            or any(entry.get("kind") not in LAYER_TYPES for entry in layers.values()):
        raise UserError(f"'{path}' is damaged (dtype, layers or state): write it again")


def _mismatch(path: str | os.PathLike, what: str) -> UserError:
    return UserError(f"dynamic model '{path}' does not fit the model: {what}; is it the file of "
                     "another model?")


def _shape(tensor: torch.Tensor | None) -> tuple[int, ...] | None:
    return None if tensor is None else tuple(tensor.shape)


def load_dynamic(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """The dynamic-quantized model a file of :func:`save_dynamic` holds, rebuilt from ``model``
    (the float architecture, whose weights are replaced; ``model`` itself is not changed).
    Architecture edits in the file's ``meta["edits"]`` are replayed first. A file of another
    model is a :class:`UserError` naming the layer or key that does not fit."""
    checkpoint = read_checkpoint(path)
    _check_payload(checkpoint, path)
    meta = dict(checkpoint.get("meta") or {})
    entries: dict[str, dict] = checkpoint["layers"]
    model = apply_edits(copy.deepcopy(model), meta.get("edits") or [])
    kinds = sorted({entry["kind"] for entry in entries.values()})
    types = tuple(LAYER_TYPES[kind] for kind in kinds)
    try:
        quantized = quantize_dynamic(model, dtype=DTYPES[checkpoint["dtype"]], layers=types)
    except UserError:
        raise _mismatch(path, f"it has no {', '.join(kinds)} layer") from None
    have = dynamic_layers(quantized)
    wanted = {name: entry["kind"] for name, entry in entries.items()}
    if have != wanted:
        extra = sorted(set(have.items()) - set(wanted.items()))
        lacking = sorted(set(wanted.items()) - set(have.items()))
        parts = [f"the file has {name or 'the model'} ({kind})" for name, kind in lacking[:3]]
        parts += [f"the model has {name or 'the model'} ({kind})" for name, kind in extra[:3]]
        raise _mismatch(path, "its dynamic layers differ: " + ", ".join(parts))
    modules = dict(quantized.named_modules())
    for name, entry in entries.items():
        try:
            tensors = {key: _decode(value) for key, value in entry["tensors"].items()}
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise UserError(f"'{path}': layer '{name}' is damaged ({err}): write it again") \
                from None
        current = _layer_tensors(modules[name], entry["kind"])
        shapes = {key: _shape(value) for key, value in tensors.items()}
        expected = {key: _shape(value) for key, value in current.items()}
        if shapes != expected:
            raise _mismatch(path, f"layer '{name}' has tensors {shapes} in the file but "
                                  f"{expected} in the model")
        if checkpoint["dtype"] == "float16":
            tensors = {k: v.float() if k.startswith("weight") else v for k, v in tensors.items()}
        _set_layer_tensors(modules[name], entry["kind"], tensors)
    _load_rest(quantized, checkpoint["state"], set(entries), path)
    return quantized


def _load_rest(model: nn.Module, state: dict[str, torch.Tensor], layers: set[str],
               path: str | os.PathLike) -> None:
    expected = {k: v for k, v in model.state_dict().items() if not _under(k, layers)}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        what = []
        if missing:
            what.append(f"missing keys {', '.join(missing[:3])}")
        if unexpected:
            what.append(f"unexpected keys {', '.join(unexpected[:3])}")
        raise _mismatch(path, "; ".join(what))
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise _mismatch(path, f"'{key}' has shape {tuple(tensor.shape)} in the file but "
                                  f"{tuple(expected[key].shape)} in the model")
    full = model.state_dict()  # the dynamic layers load their own (already set) entries back
    full.update(state)
    model.load_state_dict(full)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else type(err).__name__


@contextmanager
def _no_root_warnings():
    """ONNX Runtime's quantizer logs advice ("consider pre-processing") on the root logger."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def quantize_dynamic_onnx(
    fp32_path: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    op_types: Sequence[str] = ONNX_OPS,
    per_channel: bool = False,
    reduce_range: bool = True,
) -> Path:
    """Dynamically quantize the float ONNX model at ``fp32_path`` (e.g. written by
    :func:`torchslim.export.onnx.export_onnx`) with ONNX Runtime and write it to ``out_path``
    (atomically): int8 weights (symmetric, per tensor or per output channel with
    ``per_channel``), uint8 activations quantized per batch. ``op_types`` are the ONNX op types
    to quantize (see :data:`ONNX_OPS`). A model with nothing to quantize is a
    :class:`UserError`. Returns ``out_path``.

    ``reduce_range`` keeps the weights on 7 bits (-64..64): ONNX Runtime's uint8 x int8 kernels
    on x86 CPUs without VNNI add pairs of products in int16, which overflows with full 8-bit
    weights (on a random 768-512-256-10 MLP, on an AMD EPYC without VNNI: 12 % relative output
    error with 8 bits, 1.6 % with 7; PyTorch's fbgemm kernels avoid the same overflow by
    quantizing the activations to 7 bits). Set it False on CPUs with VNNI and on ARM.

    >>> quantize_dynamic_onnx("missing.onnx", "out.onnx")
    Traceback (most recent call last):
    ...
    torchslim.core.errors.UserError: ONNX model 'missing.onnx' not found: check the path
    """
    import onnx
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization import quantize_dynamic as ort_quantize_dynamic
    from onnxruntime.quantization.registry import IntegerOpsRegistry

    fp32_path, out_path = Path(fp32_path), Path(out_path)
    if not fp32_path.is_file():
        raise UserError(f"ONNX model '{fp32_path}' not found: check the path")
    op_types = [op_types] if isinstance(op_types, str) else list(op_types)
    unknown = [op for op in op_types if op not in IntegerOpsRegistry and op != "Gemm"]
    if unknown or not op_types:
        raise UserError(f"ONNX Runtime quantizes {', '.join(sorted(IntegerOpsRegistry))} "
                        f"dynamically, not {', '.join(unknown) or 'nothing'}")
    try:
        onnx.load(str(fp32_path), load_external_data=False)
    except Exception as err:  # any failure to parse the file is a bad input, not a bug
        raise UserError(f"'{fp32_path}' is not a readable ONNX model: {_first_line(err)}") \
            from None
    with tempfile.TemporaryDirectory(prefix="torchslim-dynamic-") as folder:
        target = Path(folder) / "model.onnx"
        try:
            with _no_root_warnings():
                ort_quantize_dynamic(fp32_path, target, op_types_to_quantize=op_types,
                                     per_channel=per_channel, reduce_range=reduce_range,
                                     weight_type=QuantType.QInt8)
        except Exception as err:
            raise UserError(f"ONNX Runtime cannot quantize '{fp32_path}' dynamically: "
                            f"{_first_line(err)}") from err
        data = target.read_bytes()
    ops = Counter(node.op_type for node in onnx.load_from_string(data).graph.node)
    if not DYNAMIC_ONNX_OPS & set(ops):
        raise UserError(f"'{fp32_path}' has no {'/'.join(op_types)} node with constant weights: "
                        "dynamic quantization would change nothing")
    atomic_write(out_path, lambda handle: handle.write(data))
    return out_path
