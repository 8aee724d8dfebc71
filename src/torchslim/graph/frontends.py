"""From a model to one list of calls: torch.fx first, torch.export when fx cannot trace.

``torch.fx`` symbolic tracing keeps every layer with a registered handler as one
``call_module`` and records the model's own Python ops (``+``, ``torch.cat``, ``x.view``,
slicing); running the traced graph once on the example input gives every value's shape and every
size the forward computes. Where fx fails (Python arithmetic on sizes such as
``int(x.size(1) * 0.5)``, data-dependent control flow on shapes), ``torch.export`` traces the
model at the ATen level instead; the ATen nodes of each layer with a handler (found from their
``nn_module_stack``) are folded back into one module call, so handlers see the same calls either
way.

Example::

    >>> import torch
    >>> from torchslim.graph.frontends import trace_calls
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    >>> calls, frontend = trace_calls(model, torch.zeros(1, 3, 8, 8))
    >>> frontend, [call.kind for call in calls], calls[1].target
    ('fx', ['input', 'module', 'function', 'output'], '0')
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn

from ..core.errors import UserError
from ..core.modules import eval_mode
from .registry import handler_for
from .tracer import TensorMeta


@dataclass
class Call:
    """One traced call. ``args``/``kwargs`` keep fx nodes where the traced program passed a
    traced value; ``out`` is a :class:`TensorMeta`, a tuple of them, or a plain value;
    ``owner`` is the module whose ``forward`` made the call (``""`` = the model's own)."""

    kind: str
    name: str
    target: Any
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    out: Any = None
    owner: str = ""
    module: nn.Module | None = None
    node: fx.Node | None = None


def describe(value: Any) -> Any:
    """The metadata of a traced value: tensors become :class:`TensorMeta`, recursively."""
    if isinstance(value, torch.Tensor):
        return TensorMeta(tuple(value.shape), value.dtype)
    if isinstance(value, tuple):
        return tuple(describe(v) for v in value)
    if isinstance(value, list):
        return [describe(v) for v in value]
    if isinstance(value, torch.SymInt | torch.SymFloat | torch.SymBool):
        return value.node.hint if hasattr(value.node, "hint") else value
    return value


def propagate_shapes(model: nn.Module, graph: fx.Graph, example_input: torch.Tensor) -> None:
    """Record every node's tensor metadata (``node.meta["tensor_meta"]``) by running the
    traced ``graph`` of ``model`` on ``example_input``; a model that does not run on it is a
    :class:`UserError`."""
    from torch.fx.passes.shape_prop import ShapeProp

    with torch.no_grad():
        try:
            ShapeProp(fx.GraphModule(model, graph)).propagate(example_input)
        except Exception as err:
            raise UserError(
                f"the model does not run on an example input of shape "
                f"{tuple(example_input.shape)} ({str(err).splitlines()[0]}): pass an input the "
                "model accepts"
            ) from err


class LeafTracer(fx.Tracer):
    """fx tracing that keeps exactly the layers with a registered handler as leaves."""

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return handler_for(module) is not None


def innermost(node: fx.Node) -> str:
    """The innermost module whose forward made ``node`` (``""`` for the model's own)."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path = list(stack.values())[-1][0]
    if node.op == "call_module":  # the layer itself is the last entry: its caller owns it
        paths = [value[0] for value in stack.values()]
        return paths[-2] if len(paths) > 1 else ""
    return path


class _Recorder(fx.Interpreter):
    def __init__(self, module: fx.GraphModule) -> None:
        super().__init__(module)
        self.values: dict[fx.Node, Any] = {}

    def run_node(self, node: fx.Node) -> Any:
        result = super().run_node(node)
        self.values[node] = describe(result)
        return result


def fx_calls(model: nn.Module, example_input: torch.Tensor) -> list[Call]:
    """The calls of ``model`` traced with torch.fx (raises what fx raises)."""
    graph = LeafTracer().trace(model)
    module = fx.GraphModule(model, graph)
    recorder = _Recorder(module)
    recorder.run(example_input)
    calls = []
    for node in graph.nodes:
        out = recorder.values.get(node)
        kind = {"placeholder": "input", "get_attr": "attr", "call_module": "module",
                "call_function": "function", "call_method": "method", "output": "output"}[node.op]
        calls.append(Call(
            kind, node.name, node.target, tuple(node.args), dict(node.kwargs), out,
            innermost(node),
            model.get_submodule(node.target) if node.op == "call_module" else None, node,
        ))
    return calls


def _stack_paths(node: fx.Node) -> list[tuple[str, str]]:
    """(key, module path) from the outermost to the innermost module of an exported node."""
    stack = node.meta.get("nn_module_stack") or {}
    return [(key, value[0]) for key, value in stack.items()]


def export_calls(model: nn.Module, example_input: torch.Tensor) -> list[Call]:
    """The calls of ``model`` traced with torch.export, layers with handlers folded back into
    one call each (raises what export raises)."""
    program = torch.export.export(model, (example_input,), strict=False)
    signature = program.graph_signature
    lifted = {**signature.inputs_to_parameters, **signature.inputs_to_buffers,
              **getattr(signature, "inputs_to_lifted_tensor_constants", {})}
    graph = program.graph_module.graph
    modules = dict(model.named_modules())

    def region(node: fx.Node) -> tuple[str, str] | None:
        for key, path in _stack_paths(node):
            if path in modules and path and handler_for(modules[path]) is not None:
                return key, path
        return None

    calls: list[Call] = []
    members: dict[tuple[str, str], list[fx.Node]] = {}
    order: list[Any] = []
    for node in graph.nodes:
        if node.op == "call_function" and (key := region(node)) is not None:
            if key not in members:
                members[key] = []
                order.append(key)
            members[key].append(node)
        else:
            order.append(node)
    alias: dict[fx.Node, fx.Node] = {}
    for item in order:
        if isinstance(item, tuple):
            nodes = members[item]
            inside = set(nodes)
            inputs = []
            for node in nodes:
                for arg in node.all_input_nodes:
                    if arg not in inside and arg.name not in lifted and arg not in inputs:
                        inputs.append(alias.get(arg, arg))
            used_outside = [n for n in nodes if any(u not in inside for u in n.users)]
            last = used_outside[-1] if used_outside else nodes[-1]
            for node in nodes:
                alias[node] = last
            calls.append(Call(
                "module", last.name, item[1], tuple(inputs), {}, describe(last.meta.get("val")),
                "", modules[item[1]], last,
            ))
            continue
        node = item
        if node.op == "placeholder":
            if node.name in lifted:
                calls.append(Call("attr", node.name, lifted[node.name],
                                  out=describe(node.meta.get("val")), node=node))
            else:
                calls.append(Call("input", node.name, node.target,
                                  out=describe(node.meta.get("val")), node=node))
            continue
        args = fx.node.map_arg(node.args, lambda n: alias.get(n, n))
        kwargs = fx.node.map_arg(node.kwargs, lambda n: alias.get(n, n))
        paths = _stack_paths(node)
        owner = paths[-1][1] if paths else ""
        kind = "output" if node.op == "output" else "function"
        calls.append(Call(kind, node.name, node.target, tuple(args), dict(kwargs),
                          describe(node.meta.get("val")), owner, None, node))
    return calls


def trace_calls(model: nn.Module, example_input: torch.Tensor) -> tuple[list[Call], str]:
    """The calls of ``model`` on ``example_input`` and the frontend that traced them (``"fx"``,
    else ``"export"``); a :class:`UserError` when neither can."""
    reference = next(iter(model.parameters()), None)
    if reference is not None:
        example_input = example_input.to(reference.device)
    with eval_mode(model), torch.no_grad():
        try:
            model(example_input)
        except Exception as err:
            raise UserError(
                f"the model does not run on an example input of shape "
                f"{tuple(example_input.shape)} ({str(err).splitlines()[0] if str(err) else err!r})"
                ": pass an input the model accepts"
            ) from err
        try:
            return fx_calls(model, example_input), "fx"
        except Exception as fx_error:
            try:
                return export_calls(model, example_input), "export"
            except Exception as export_error:
                raise UserError(
                    f"cannot trace {type(model).__name__}: torch.fx failed "
                    f"({_first_line(fx_error)}) and torch.export failed "
                    f"({_first_line(export_error)}); structured pruning needs a forward one of "
                    "them can trace"
                ) from export_error


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
