"""ONNX export, int8 packing of quantize/dequantize graphs, and ONNX Runtime sessions.

:func:`export_onnx` writes any model torch can export (pruned and thinned ones included; the
batch dimension stays dynamic). A model with fake quantization (:mod:`torchslim.quantization`)
exports as QuantizeLinear/DequantizeLinear pairs; :func:`pack_int8` then stores each quantized
weight as an int8 initializer feeding its DequantizeLinear, and each bias of a quantized
convolution or Gemm as int32 at ``input scale * weight scale``, the QDQ format ONNX Runtime
turns into int8 kernels (QLinearConv, QGemm, QLinearAdd, ...). :func:`runtime_report` lists the
nodes of the graph ONNX Runtime really runs, and which of them compute in float.

Example::

    >>> import tempfile, torch
    >>> from torchslim.export.onnx import export_onnx, session
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()).eval()
    >>> path = export_onnx(model, torch.zeros(1, 3, 8, 8), tempfile.mktemp(suffix=".onnx"))
    >>> x = torch.randn(2, 3, 8, 8)
    >>> out = session(path).run(None, {"input": x.numpy()})[0]
    >>> bool(abs(out - model(x).detach().numpy()).max() < 1e-5)
    True
"""

from __future__ import annotations

import io
import os
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..core.errors import UserError
from ..core.fileio import atomic_write
from ..core.modules import eval_mode

OPSET = 17

#: The ONNX Runtime ops that compute in integers.
INTEGER_OPS = {
    "QLinearConv", "QLinearMatMul", "QGemm", "QLinearAdd", "QLinearMul", "QLinearConcat",
    "QLinearGlobalAveragePool", "QLinearAveragePool", "QLinearSigmoid", "QLinearLeakyRelu",
    "QLinearSoftmax", "MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul",
    "MatMulIntegerToFloat", "DynamicQuantizeLinear", "QAttention", "QLinearReduceMean",
    "QLinearWhere", "QLinearHardSigmoid", "DynamicQuantizeLSTM",
}
#: Ops that only convert, move or select values: they run on whatever type they get.
CONVERSION_OPS = {
    "QuantizeLinear", "DequantizeLinear", "Reshape", "Flatten", "Transpose", "Squeeze",
    "Unsqueeze", "MaxPool", "NhwcMaxPool", "Slice", "Pad", "Gather", "Identity", "Shape",
    "Concat", "Split",
}


def _channel_pad_symbolic(g, x, dim, index, size):
    """``torchslim::channel_pad`` as ONNX: Gather over the input with one zero slot appended."""
    from torch.onnx import symbolic_helper

    dim = symbolic_helper._get_const(dim, "i", "dim")
    index = symbolic_helper._get_const(index, "is", "index")
    size = symbolic_helper._get_const(size, "i", "size")
    zero_slot = g.op("Mul", g.op("Slice", x, g.op("Constant", value_t=torch.tensor([0])),
                                 g.op("Constant", value_t=torch.tensor([1])),
                                 g.op("Constant", value_t=torch.tensor([dim]))),
                     g.op("Constant", value_t=torch.tensor(0.0)))
    padded = g.op("Concat", x, zero_slot, axis_i=dim)
    slot = len(index)
    mapping = [slot] * size
    for source, position in enumerate(index):
        mapping[position] = source
    return g.op("Gather", padded, g.op("Constant", value_t=torch.tensor(mapping)), axis_i=dim)


def _channel_select_symbolic(g, x, dim, index):
    """``torchslim::channel_select`` as ONNX: Gather."""
    from torch.onnx import symbolic_helper

    dim = symbolic_helper._get_const(dim, "i", "dim")
    index = symbolic_helper._get_const(index, "is", "index")
    return g.op("Gather", x, g.op("Constant", value_t=torch.tensor(index)), axis_i=dim)


def _register_symbolics(opset: int) -> None:
    from ..core import ops as _ops  # noqa: F401  (the torch.ops.torchslim operators)

    torch.onnx.register_custom_op_symbolic("torchslim::channel_pad", _channel_pad_symbolic,
                                           opset)
    torch.onnx.register_custom_op_symbolic("torchslim::channel_select",
                                           _channel_select_symbolic, opset)


def export_onnx(
    model: nn.Module,
    example_input: torch.Tensor,
    path: str | os.PathLike,
    *,
    opset: int = OPSET,
    int8: bool = True,
) -> Path:
    """Export ``model`` (in evaluation mode) to ``path`` atomically; with ``int8`` and fake
    quantization in the model, pack the quantized weights as int8 (see the module docstring)."""
    path = Path(path)
    buffer = io.BytesIO()
    _register_symbolics(opset)
    with eval_mode(model), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                model, (example_input,), buffer, dynamo=False, opset_version=opset,
                input_names=["input"], output_names=["output"],
                dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
            )
        except Exception as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            first = first.split("  [Caused by")[0][:300]
            raise UserError(f"torch.onnx cannot export {type(model).__name__}: {first}") from err
    import onnx

    proto = onnx.load_from_string(buffer.getvalue())
    if int8:
        pack_int8(proto)
    data = proto.SerializeToString()
    atomic_write(path, lambda handle: handle.write(data))
    return path


def _constants(graph) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attribute in node.attribute:
                if attribute.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(attribute.t)
        elif node.op_type == "Identity" and node.input[0] in values:
            values[node.output[0]] = values[node.input[0]]
        elif node.op_type == "Cast" and node.input[0] in values:  # learned steps, zero points
            from onnx import helper

            to = next(a.i for a in node.attribute if a.name == "to")
            values[node.output[0]] = values[node.input[0]].astype(
                helper.tensor_dtype_to_np_dtype(to))
        elif node.op_type in _FOLDABLE and node.input and all(
            name in values for name in node.input if name
        ):  # a narrower-than-8-bit weight grid's clip, a bias rounded to its int32 grid
            args = [values[name] if name else None for name in node.input]
            values[node.output[0]] = _FOLDABLE[node.op_type](*args)
    return values


#: Element-wise ops on constants that :func:`pack_int8` evaluates to find constant weights.
_FOLDABLE = {
    "Min": np.minimum, "Max": np.maximum, "Mul": np.multiply, "Sub": np.subtract,
    "Add": np.add, "Round": np.round,  # ONNX's Round and numpy's both round half to even
    "Clip": lambda x, low=None, high=None: np.clip(x, low, high), "Abs": np.abs,
    "Sqrt": np.sqrt, "Neg": np.negative,
    "Div": lambda a, b: (np.divide(a, b) if np.issubdtype(np.result_type(a, b), np.floating)
                         else np.trunc(np.divide(a, b)).astype(np.result_type(a, b))),
    "Reshape": lambda x, shape: x.reshape([x.shape[i] if size == 0 else size
                                           for i, size in enumerate(shape.tolist())]),
}


def pack_int8(proto) -> dict[str, int]:
    """Rewrite a QDQ graph in place: constant weights behind QuantizeLinear become integer
    initializers feeding their DequantizeLinear directly; float biases of Conv/Gemm nodes whose
    input and weight come from DequantizeLinear become int32 initializers with a
    DequantizeLinear at ``input scale * weight scale``. Returns counts of what changed."""
    from onnx import helper, numpy_helper

    graph = proto.graph
    constants = _constants(graph)
    producer = {output: node for node in graph.node for output in node.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    packed = biases = 0
    removed, added = [], []
    for node in list(graph.node):
        if node.op_type != "QuantizeLinear" or node.input[0] not in constants:
            continue
        x, scale, zero = (constants.get(name) for name in node.input[:3])
        if scale is None or zero is None:
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        shape = [1] * x.ndim
        if scale.ndim == 1 and scale.size > 1:
            shape[axis] = -1
        info = np.iinfo(zero.dtype)
        q = np.clip(np.rint(x / scale.reshape(shape)) + zero.reshape(shape).astype(np.int64),
                    info.min, info.max).astype(zero.dtype)
        name = f"{node.input[0]}_quantized"
        graph.initializer.append(numpy_helper.from_array(q, name))
        for user in consumers.get(node.output[0], []):
            for index, value in enumerate(user.input):
                if value == node.output[0]:
                    user.input[index] = name
        removed.append(node)
        packed += 1
    for node in removed:
        graph.node.remove(node)
    constants = _constants(graph)
    producer = {output: node for node in graph.node for output in node.output}
    for node in list(graph.node):
        if node.op_type not in ("Conv", "Gemm") or len(node.input) < 3:
            continue
        bias_name = node.input[2]
        if bias_name not in constants or producer.get(bias_name, None) is not None and (
            producer[bias_name].op_type == "DequantizeLinear"
        ):
            continue
        sources = [producer.get(name) for name in node.input[:2]]
        if any(s is None or s.op_type != "DequantizeLinear" for s in sources):
            continue
        scales = [constants.get(s.input[1]) for s in sources]
        if any(s is None for s in scales):
            continue
        transposed_gemm = node.op_type == "Gemm" and any(
            a.name == "transB" and a.i == 0 for a in node.attribute
        )
        if transposed_gemm:
            continue
        bias = constants[bias_name].astype(np.float64)
        scale = (scales[0].astype(np.float64) * scales[1].astype(np.float64)).reshape(-1)
        scale = np.broadcast_to(scale, bias.shape) if scale.size == 1 else scale
        q = np.rint(bias / scale).astype(np.int64)
        q = np.clip(q, -(2**31), 2**31 - 1).astype(np.int32)
        q_name, s_name, z_name = (f"{bias_name}_{suffix}" for suffix in ("int32", "scale",
                                                                         "zero"))
        graph.initializer.extend([
            numpy_helper.from_array(q, q_name),
            numpy_helper.from_array(scale.astype(np.float32), s_name),
            numpy_helper.from_array(np.zeros(scale.shape, np.int32), z_name),
        ])
        dequantized = f"{bias_name}_dequantized"
        added.append((node, helper.make_node(
            "DequantizeLinear", [q_name, s_name, z_name], [dequantized], axis=0,
            name=f"{bias_name}_DequantizeLinear",
        )))
        node.input[2] = dequantized
        biases += 1
    for node, dequantize in added:
        graph.node.insert(list(graph.node).index(node), dequantize)
    _drop_unused(graph)
    return {"weights": packed, "biases": biases}


def _drop_unused(graph) -> None:
    """Remove nodes none of whose outputs are used (repeatedly), then unused initializers."""
    outputs = {output.name for output in graph.output}
    while True:
        used = {name for node in graph.node for name in node.input} | outputs
        dead = [node for node in graph.node if not any(out in used for out in node.output)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    keep = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)


#: ONNX Runtime passes a session must disable to run the exported model as it was quantized:
#: ``WeightBiasQuantization`` (ONNX Runtime 1.20+) quantizes the float weights of a Conv/Gemm whose
#: input comes from a DequantizeLinear to int8 per tensor, so a layer kept in float next to int8
#: ones would not stay in float.
KEEP_FLOAT = ["WeightBiasQuantization"]


def session(path: str | os.PathLike, threads: int | None = None, optimized: str | None = None):
    """An ONNX Runtime CPU session (``threads`` intra-op threads; the graph optimised ONNX
    Runtime runs is written to ``optimized`` when given), with the passes in :data:`KEEP_FLOAT`
    disabled (pass ``disabled_optimizers=KEEP_FLOAT`` to your own sessions too)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if optimized is not None:
        options.optimized_model_filepath = str(optimized)
        options.log_severity_level = 3  # the warning that the file is machine specific
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"],
                                disabled_optimizers=KEEP_FLOAT)


@dataclass
class RuntimeReport:
    """The ops of the graph ONNX Runtime runs: how many of each, and the float computations."""

    ops: Counter = field(default_factory=Counter)
    float_nodes: list[str] = field(default_factory=list)

    @property
    def integer_nodes(self) -> int:
        return sum(count for op, count in self.ops.items() if op in INTEGER_OPS)

    def format(self) -> str:
        ops = ", ".join(f"{op} x{count}" for op, count in sorted(self.ops.items()))
        lines = [f"ONNX Runtime runs: {ops}"]
        if self.float_nodes:
            lines.append(f"in float ({len(self.float_nodes)}): " + ", ".join(self.float_nodes))
        else:
            lines.append("nothing computes in float")
        return "\n".join(lines)


def _why_float(node, producers: dict, consumers: dict) -> str:
    inputs = [producers.get(name) for name in node.input if name in producers]
    quantized_in = any(p is not None and p.op_type == "DequantizeLinear" for p in inputs)
    quantized_out = any(c.op_type == "QuantizeLinear" for c in consumers.get(node.output[0], []))
    if not quantized_out:
        return "its output is not quantized" + (" (the model's output)" if not consumers.get(
            node.output[0]) else "")
    if not quantized_in:
        return "its inputs are not quantized"
    return "ONNX Runtime has no integer kernel for it here"


def runtime_report(path: str | os.PathLike, directory: str | os.PathLike) -> RuntimeReport:
    """What ONNX Runtime runs for the model at ``path`` after its graph optimisations: the op
    counts, and each node that computes in float with the reason."""
    import onnx

    optimized = Path(directory) / f"{Path(path).stem}.optimized.onnx"
    session(path, threads=1, optimized=str(optimized))
    graph = onnx.load(str(optimized)).graph
    producers = {output: node for node in graph.node for output in node.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    report = RuntimeReport(Counter(node.op_type for node in graph.node))
    for node in graph.node:
        if node.op_type not in INTEGER_OPS and node.op_type not in CONVERSION_OPS:
            reason = _why_float(node, producers, consumers)
            report.float_nodes.append(f"{node.op_type} '{node.name}': {reason}")
    optimized.unlink(missing_ok=True)
    return report
