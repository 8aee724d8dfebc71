"""Putting quantizers into a model, where an int8 runtime quantizes.

:func:`prepare` traces the model with torch.fx (the channel graph's leaf policy: layers with a
registered handler are leaves), folds BatchNorms into the convolutions before them (or, for
quantization-aware training, keeps them and quantizes the folded weight), swaps every
convolution and Linear layer for one with a weight quantizer, and puts an activation quantizer
after every value an int8 runtime requantizes:

* the model's inputs;
* the outputs of layers, additions and multiplications of tensors, concatenations, average
  pooling, means and interpolation, non-linear activations (sigmoid, hard-swish, ...) and
  anything else that computes new values;
* a ReLU (ReLU6, hardtanh) right after such an op takes the quantizer: the runtime fuses it;
* ops that only move or select values (max pooling, flatten, view, permute, slicing, padding,
  dropout), and a ReLU that cannot be fused, keep their input's grid: they get a quantizer that
  shares the scale and zero point of their input's (exact, and what lets the runtime run them
  on int8).

Layers named in ``config.exclude`` stay in float: no weight quantizer, no quantizer after them,
and none on a model input that only they read. What computes on their outputs (additions,
activations, pooling) stays in float too, up to the next quantized layer, whose input is
quantized there: a float region costs the runtime one dequantize and one quantize at its edges,
not a pair around every excluded layer.

:func:`calibrate` runs batches through the prepared model with the observers recording (nothing
is rounded yet); :func:`freeze` fixes every scale and zero point; :func:`quantize` does the three.

Example::

    >>> import torch
    >>> from torchslim.models import create_model
    >>> from torchslim.quantization import QuantConfig, activation_quantizers, quantize
    >>> model = create_model("demo_cnn").eval()
    >>> batches = [(torch.randn(8, 1, 8, 8), None) for _ in range(4)]
    >>> quantized = quantize(model, QuantConfig(), batches, torch.zeros(1, 1, 8, 8))
    >>> sorted(activation_quantizers(quantized))[:3]
    ['adaptive_avg_pool2d', 'flatten', 'max_pool2d']
    >>> x = torch.randn(2, 1, 8, 8)
    >>> bool((quantized(x) - model(x)).abs().max() < 0.5)
    True
"""

from __future__ import annotations

import copy
import itertools
import operator
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import TensorMetadata
from torch.nn.modules.conv import _ConvNd

from ..core.errors import UserError
from ..core.modules import eval_mode
from ..core.names import select_names
from ..graph.frontends import LeafTracer, propagate_shapes
from .bias_correction import correct_bias
from .config import QuantConfig
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
)
from .fold import fold_batchnorms, fold_into, foldable_pairs
from .modules import QuantConv, QuantConvBn, QuantLinear
from .observers import MovingAverageMinMaxObserver, Observer, make_observer

_FUSED_ACTIVATIONS = {F.relu, F.relu6, F.hardtanh, torch.relu, torch.relu_}
_FUSED_METHODS = {"relu", "relu_"}
_PRESERVING_FUNCTIONS = {
    F.max_pool1d, F.max_pool2d, F.max_pool3d, F.adaptive_max_pool1d, F.adaptive_max_pool2d,
    F.adaptive_max_pool3d, torch.flatten, torch.reshape, torch.permute, torch.transpose,
    torch.squeeze, torch.unsqueeze, F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.pad,
    operator.getitem, torch.chunk, torch.split, torch.narrow,
}
_PRESERVING_METHODS = {
    "view", "reshape", "flatten", "permute", "transpose", "contiguous", "clone", "squeeze",
    "unsqueeze", "expand", "expand_as", "chunk", "split", "narrow", "detach", "to", "float",
}
_PRESERVING_MODULES = (nn.Identity, nn.Dropout, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d,
                       nn.Flatten, nn.AdaptiveMaxPool2d)


def activation_quantizers(model: nn.Module) -> dict[str, Quantizer]:
    """A prepared model's activation quantizers, by the name of the value each follows."""
    return {name[len("quant_"):]: module for name, module in model.named_children()
            if name.startswith("quant_") and isinstance(module, Quantizer)}


def weight_quantizers(model: nn.Module) -> dict[str, Quantizer]:
    """A prepared model's weight quantizers, by layer name."""
    return {name.rpartition(".")[0]: module for name, module in model.named_modules()
            if name.endswith(".weight_quantizer") and isinstance(module, Quantizer)}


def is_prepared(model: nn.Module) -> bool:
    """Whether :func:`prepare` put quantizers into ``model``."""
    return isinstance(getattr(model, "quant_config", None), QuantConfig)


class _Tracer(LeafTracer):
    """The graph's leaf policy, plus quantized layers and quantizers as leaves."""

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return isinstance(module, Quantizer | QuantConv | QuantLinear | QuantConvBn) or (
            super().is_leaf_module(module, qualified_name)
        )


def _set(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, name, module)


def _weight_quantizer(config: QuantConfig, channels: int) -> Quantizer:
    spec = config.weight_spec()
    if config.method == "lsq":
        init = (make_observer(config.weight_observer, spec.axis, config.weight_bits,
                              spec=spec) if config.lsq_init == "observer" else None)
        return LSQQuantize(spec, channels, init)
    if config.method in ("dorefa", "pact"):  # PACT quantizes weights as DoReFa does
        return DoReFaWeight(config.weight_bits)
    if config.method == "wrpn":
        return WRPNWeight(config.weight_bits)
    if config.weight_observer == "minmax":
        # The range of the weight as it is now: training moves it, and a range that only
        # grows would keep the grid of weights long gone (torch.ao and Distiller follow the
        # current weights too).
        observer: Observer = MovingAverageMinMaxObserver(1.0, axis=spec.axis)
    else:  # the MSE search runs on the grid the weights use
        observer = make_observer(config.weight_observer, spec.axis, config.weight_bits,
                                 spec=spec)
    return FakeQuantize(spec, observer)


def _activation_quantizer(config: QuantConfig, after_relu: bool) -> Quantizer:
    """The quantizer of one activation. PACT and DoReFa clip at zero, as the ReLUs they replace
    do, so values that may be negative (the model's input, a layer's output before a residual
    addition) get an observer-driven affine quantizer instead; LSQ quantizes them signed."""
    spec = config.activation_spec()
    if config.method == "lsq":
        spec = spec if after_relu else spec.with_(signed=True, symmetric=True)
        init = (make_observer(config.observer, None, config.activation_bits, spec=spec)
                if config.lsq_init == "observer" else None)
        return LSQQuantize(spec, init=init)
    if config.method == "pact" and after_relu:
        return PACTQuantize(config.activation_bits, config.pact_alpha)
    if config.method in ("dorefa", "wrpn") and after_relu:
        return ClippedLinear(config.activation_bits)
    observer_kind = config.observer if config.method == "static" else "moving_average"
    observer = make_observer(observer_kind, None, config.activation_bits, config.momentum)
    return FakeQuantize(spec, observer, config.multiplier, config.center)


def _excluded(model: nn.Module, patterns: Iterable[str]) -> set[str]:
    names = [name for name, _ in model.named_modules() if name]
    chosen = select_names(patterns, names,
                          "layer '{pattern}' to keep in float matches no layer of the model")
    return chosen | {n for n in names if any(n.startswith(h + ".") for h in chosen)}


def _is_float_tensor(node: fx.Node) -> bool:
    meta = node.meta.get("tensor_meta")
    return isinstance(meta, TensorMetadata) and meta.dtype.is_floating_point


def _carries_tensors(node: fx.Node) -> bool:
    """A float tensor, or a tuple or list of them (a chunk); not a size or a shape."""
    meta = node.meta.get("tensor_meta")
    if isinstance(meta, TensorMetadata):  # a NamedTuple: before the tuple test
        return meta.dtype.is_floating_point
    return isinstance(meta, tuple | list) and any(
        isinstance(m, TensorMetadata) and m.dtype.is_floating_point for m in meta)


def _tensor_inputs(node: fx.Node) -> list[fx.Node]:
    return [a for a in node.all_input_nodes if _is_float_tensor(a)]


def _preserves(node: fx.Node, model: nn.Module) -> bool:
    """Ops that only move or select values keep their input's quantization."""
    if node.op == "call_module":
        return isinstance(model.get_submodule(node.target), _PRESERVING_MODULES)
    if node.op == "call_method":
        return node.target in _PRESERVING_METHODS
    if node.op == "call_function":
        return node.target in _PRESERVING_FUNCTIONS
    return False


def _is_activation(node: fx.Node, model: nn.Module) -> bool:
    if node.op == "call_module":
        return isinstance(model.get_submodule(node.target), nn.ReLU | nn.ReLU6 | nn.Hardtanh)
    if node.op == "call_method":
        return node.target in _FUSED_METHODS
    return node.op == "call_function" and node.target in _FUSED_ACTIVATIONS


def prepare(
    model: nn.Module,
    example_input: torch.Tensor,
    config: QuantConfig | None = None,
    *,
    inplace: bool = False,
) -> nn.Module:
    """``model`` (a copy unless ``inplace``) with weight and activation quantizers (see the
    module docstring); the quantizers start out observing only. In place, the model keeps its
    class and parameters (so an optimizer built on it keeps working); its ``forward`` becomes the
    traced forward with the quantizers, which are registered as its submodules."""
    config = config or QuantConfig()
    if is_prepared(model):
        raise UserError("the model is already quantized: prepare the float model")
    if not inplace:
        model = copy.deepcopy(model)
    training = model.training
    model.eval()
    excluded = _excluded(model, config.exclude)
    try:
        pairs = [(layer, bn) for layer, bn in foldable_pairs(model)
                 if layer not in excluded and bn not in excluded]
        if config.fold_bn:
            fold_batchnorms_only(model, pairs)
            pairs = []
        elif config.method in ("dorefa", "pact", "wrpn"):
            pairs = []  # their weights drop the weight's scale: the BatchNorm after it stays
        else:
            pairs = [(layer, bn) for layer, bn in pairs
                     if isinstance(model.get_submodule(layer), _ConvNd)]
        graph = _Tracer().trace(model)
    except Exception as err:
        raise UserError(
            f"cannot trace {type(model).__name__} with torch.fx to place quantizers "
            f"({str(err).splitlines()[0] if str(err) else type(err).__name__}): quantization "
            "needs a forward torch.fx can trace"
        ) from err
    propagate_shapes(model, graph, example_input)
    _swap_layers(model, graph, config, excluded, dict(pairs))
    _insert_activation_quantizers(model, graph, config, excluded)
    _link_inputs(model, graph)
    traced = fx.GraphModule(model, graph, class_name=f"Quantized{type(model).__name__}")
    object.__setattr__(model, "_quantized_forward", traced)
    model.forward = traced.forward
    object.__setattr__(model, "quant_config", config)
    object.__setattr__(model, "input_shape", tuple(example_input.shape[1:]))
    device = next(iter(model.parameters()), example_input).device
    for quantizer in _quantizers(model):  # made on the CPU: with the model (on a GPU, say)
        quantizer.to(device)
    model.train(training)
    return model


def fold_batchnorms_only(model: nn.Module, pairs: list[tuple[str, str]]) -> None:
    """Fold the given (layer, BatchNorm) pairs."""
    for layer, bn in pairs:
        fold_into(model.get_submodule(layer), model.get_submodule(bn))
        _set(model, bn, nn.Identity())


def _swap_layers(
    module: nn.Module, graph: fx.Graph, config: QuantConfig, excluded: set[str],
    bn_of: dict[str, str],
) -> None:
    for node in list(graph.nodes):
        if node.op != "call_module" or node.target in excluded:
            continue
        layer = module.get_submodule(node.target)
        if isinstance(layer, _ConvNd) and not layer.transposed:
            quantizer = _weight_quantizer(config, layer.out_channels)
            if node.target in bn_of:
                bn_path = bn_of[node.target]
                bn_node = next(u for u in node.users if u.op == "call_module"
                               and u.target == bn_path)
                _set(module, node.target,
                     QuantConvBn(layer, module.get_submodule(bn_path), quantizer))
                bn_node.replace_all_uses_with(node)
                graph.erase_node(bn_node)
                _set(module, bn_path, nn.Identity())
            else:
                _set(module, node.target, QuantConv(layer, quantizer))
        elif isinstance(layer, nn.Linear):
            _set(module, node.target, QuantLinear(layer, _weight_quantizer(config,
                                                                           layer.out_features)))


def _insert_activation_quantizers(
    module: nn.Module, graph: fx.Graph, config: QuantConfig, excluded: set[str]
) -> None:
    own: list[fx.Node] = []  # values that get a quantizer of their own (an observer)
    shared: dict[fx.Node, fx.Node] = {}  # value -> the value whose quantizer it reuses
    grid: dict[fx.Node, fx.Node] = {}  # value -> the value whose quantizer defines its grid

    def grid_of(node: fx.Node) -> fx.Node | None:
        if node in grid:
            return grid[node]
        if not _is_float_tensor(node) and _preserves(node, module) and node.all_input_nodes:
            return grid_of(node.all_input_nodes[0])  # the tuple of a chunk or split
        return None

    outputs = {n for n in graph.nodes if n.op == "output" for n in n.all_input_nodes}

    def quantized_layer(node: fx.Node) -> bool:
        return node.op == "call_module" and isinstance(
            module.get_submodule(node.target), QuantConv | QuantLinear | QuantConvBn)

    # Values computed in float: excluded layers and what computes on them, up to a value a
    # quantized layer reads, which is quantized there (and read quantized by all its users).
    floating: set[fx.Node] = set()
    requantized: set[fx.Node] = set()
    for node in graph.nodes:
        if node.op in ("output", "get_attr"):
            continue
        if (node.op == "call_module" and node.target in excluded) or (  # float in, float out
            not quantized_layer(node) and _carries_tensors(node)
            and any(a in floating for a in node.all_input_nodes)
        ):
            if _is_float_tensor(node) and any(quantized_layer(u) for u in node.users):
                requantized.add(node)  # the edge of the float region
                own.append(node)
                grid[node] = node
            else:
                floating.add(node)
            continue
        if not _is_float_tensor(node):
            continue
        if node in outputs and quantized_layer(node):
            continue  # the model's output stays in float: the last layer dequantizes it
        source = node.all_input_nodes[0] if node.all_input_nodes else None
        if node.op != "placeholder" and (
            _preserves(node, module) or _is_activation(node, module)
        ):
            fusable = (_is_activation(node, module) and source in own
                       and len(source.users) == 1)
            if fusable:  # the runtime fuses the activation into the op before it
                own.remove(source)
                del grid[source]
            elif source is not None and grid_of(source) is not None:
                shared[node] = grid[node] = grid_of(source)
                continue
            elif not _is_activation(node, module):
                continue
        own.append(node)
        grid[node] = node

    def float_users_only(node: fx.Node) -> bool:  # a model input only excluded layers read
        return node.op == "placeholder" and bool(node.users) and all(
            user.op == "call_module" and user.target in excluded for user in node.users)

    referenced = set(shared.values())
    own = [node for node in own if node in referenced or not float_users_only(node)]
    names = {}
    for node in own:
        names[node] = f"quant_{node.name}"
        after_relu = node.op != "placeholder" and _is_activation(node, module)
        module.add_module(names[node], _activation_quantizer(config, after_relu))
    for node, source in shared.items():
        names[node] = f"quant_{node.name}"
        module.add_module(names[node], SharedQuantize(module.get_submodule(names[source])))
    for node, name in names.items():
        with graph.inserting_after(node):  # create_node: the module is the model's, not
            quantized = graph.create_node("call_module", name, (node,))  # the graph owner's
        # the edge of a float region: what the model returns of it stays float
        node.replace_all_uses_with(quantized, delete_user_cb=lambda user, q=quantized, n=node: (
            user is not q and not (n in requantized and user.op == "output")))


def _link_inputs(module: nn.Module, graph: fx.Graph) -> None:
    """Tell each quantized layer which quantizer sets its input's grid (for its bias)."""
    for node in graph.nodes:
        if node.op != "call_module":
            continue
        layer = module.get_submodule(node.target)
        if not isinstance(layer, QuantConv | QuantLinear | QuantConvBn):
            continue
        source = node.args[0] if node.args else None
        quantizer = (module.get_submodule(source.target)
                     if isinstance(source, fx.Node) and source.op == "call_module" else None)
        layer.link_input(quantizer if isinstance(quantizer, Quantizer) else None)


def _quantizers(model: nn.Module) -> list[Quantizer]:
    return [m for m in model.modules() if isinstance(m, Quantizer)]


def calibrate(
    model: nn.Module, batches: Iterable[Any], num_batches: int | None = None
) -> int:
    """Run ``batches`` (``(inputs, targets)`` pairs or input tensors) through ``model`` with the
    observers recording and nothing rounded; return the number of batches used."""
    for quantizer in _quantizers(model):
        quantizer.observing, quantizer.quantizing = True, False
    used = 0
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    tensors = [*model.parameters(), *model.buffers()]
    layout = (torch.channels_last  # a quarter faster on CPU; 4-D tensors only
              if device.type == "cpu" and all(t.dim() != 5 for t in tensors) else None)
    try:
        with eval_mode(model), torch.no_grad():
            for batch in batches:
                if num_batches is not None and used >= num_batches:
                    break
                inputs = (batch[0] if isinstance(batch, tuple | list) else batch).to(device)
                if layout is not None and inputs.dim() == 4:
                    if used == 0:
                        model.to(memory_format=layout)
                    inputs = inputs.contiguous(memory_format=layout)
                model(inputs)
                used += 1
    finally:
        if layout is not None:
            model.to(memory_format=torch.contiguous_format)
    if used == 0:
        raise UserError("the calibration data yielded no batches: is the calibration split "
                        "empty?")
    return used


def freeze(model: nn.Module) -> nn.Module:
    """Fix every quantizer's scale and zero point and quantize from now on."""
    for quantizer in _quantizers(model):
        if isinstance(quantizer, SharedQuantize):
            quantizer.freeze()
            continue
        if isinstance(quantizer, FakeQuantize) and not quantizer.observer.observed:
            continue  # never reached by the calibration data (a branch not taken)
        quantizer.freeze()
    return model


def quantize(
    model: nn.Module,
    config: QuantConfig,
    batches: Iterable[Any],
    example_input: torch.Tensor,
    num_batches: int | None = None,
    *,
    inplace: bool = False,
) -> nn.Module:
    """Post-training static quantization: :func:`prepare`, :func:`calibrate`, :func:`freeze`
    (of a copy, unless ``inplace``); with ``config.equalize`` the weights are first equalized
    across layers, with ``config.bias_correction`` the biases then absorb the mean output error
    on the same batches."""
    if config.equalize:
        if not inplace:
            model, inplace = copy.deepcopy(model), True
        with eval_mode(model):
            fold_batchnorms(model)
            equalize(model, example_input)
    reference = None
    if config.bias_correction:
        batches = list(itertools.islice(batches, num_batches))
        reference = copy.deepcopy(model)
    prepared = prepare(model, example_input, config, inplace=inplace)
    calibrate(prepared, batches, num_batches)
    freeze(prepared)
    if reference is not None:
        correct_bias(reference, prepared, batches, max_batches=num_batches)
    return prepared

