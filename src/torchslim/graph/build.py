"""Building the channel dependency graph: trace, then run every call's handler.

Example::

    >>> import torch
    >>> from torchslim.graph import build_graph
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8),
    ...                             torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3))
    >>> print(build_graph(model, torch.zeros(1, 3, 16, 16)).prunable_report())
    0: 8 channels over 0, 1, 3; prunable
    0:in: 3 channels over 0; NOT prunable: model input
    3: 4 channels over 3; NOT prunable: model output
"""

from __future__ import annotations

from typing import Any

import torch
from torch import fx, nn

from .dependency import ChannelGroup, DependencyGraph
from .frontends import Call, trace_calls
from .handlers import Unsupported
from .registry import function_handler, handler_for, op_name
from .rewrite import family_of, owner_rewritable
from .tracer import Axis, ChannelTracer, Layout, Site, TensorMeta


def _has_tensor(value: Any) -> bool:
    if isinstance(value, TensorMeta):
        return True
    return isinstance(value, tuple | list) and any(_has_tensor(v) for v in value)


def _full(value: Any) -> Any:
    if isinstance(value, Layout):
        return value.full()
    if isinstance(value, tuple | list):
        return type(value)(_full(v) for v in value)
    return value


class TracedCall:
    """One call as a handler sees it: resolved arguments (a :class:`Layout` where a traced
    tensor was passed, the recorded value elsewhere), the tracer, and helpers."""

    def __init__(self, builder: _Builder, call: Call, args: tuple, kwargs: dict) -> None:
        self.builder = builder
        self.call = call
        self.args = args
        self.kwargs = kwargs
        self.tracer = builder.tracer

    # -- what was called ------------------------------------------------------------------------
    @property
    def module(self) -> nn.Module | None:
        return self.call.module

    @property
    def path(self) -> str:
        """The module path of a module call."""
        return str(self.call.target)

    @property
    def frontend(self) -> str:
        return self.builder.frontend

    def op_name(self) -> str:
        """A short name of the called function: ``getitem``, ``pad``, ``slice``, ``view``..."""
        target = self.call.target
        if self.call.kind == "method":
            return str(target)
        name = op_name(target)
        if name is not None:
            return name.split("::")[-1]
        return getattr(target, "__name__", str(target))

    def describe(self) -> str:
        """``function pad() in 'layer2.0.shortcut'``, for messages."""
        what = f"method .{self.call.target}()" if self.call.kind == "method" else (
            f"module '{self.call.target}' ({type(self.module).__name__})"
            if self.call.kind == "module" else f"function {self.op_name()}()"
        )
        where = f" in '{self.call.owner}'" if self.call.owner and self.call.kind != "module" else ""
        return f"{what}{where}"

    # -- arguments ------------------------------------------------------------------------------
    def layouts(self) -> list[Layout]:
        """Every traced tensor among the arguments, in order (lists flattened)."""
        found: list[Layout] = []

        def walk(value: Any) -> None:
            if isinstance(value, Layout):
                found.append(value)
            elif isinstance(value, tuple | list):
                for item in value:
                    walk(item)
            elif isinstance(value, dict):
                for item in value.values():
                    walk(item)

        walk(self.args)
        walk(self.kwargs)
        return found

    def input(self, index: int = 0) -> Layout:
        """The ``index``-th traced tensor argument."""
        layouts = self.layouts()
        if len(layouts) <= index:
            raise Unsupported("its input is not a tensor the graph follows")
        return layouts[index]

    def arg(self, position: int, keyword: str, default: Any = None) -> Any:
        """A resolved argument, by position or keyword."""
        if len(self.args) > position:
            return self.args[position]
        return self.kwargs.get(keyword, default)

    @property
    def out_shape(self) -> tuple[int, ...]:
        out = self.call.out
        if not isinstance(out, TensorMeta):
            raise Unsupported("its result is not one tensor")
        return out.shape

    def execute(self) -> Any:
        """Run the call on the full id tensors of its tensor arguments."""
        args, kwargs = _full(self.args), _full(self.kwargs)
        if self.call.kind == "method":
            return getattr(args[0], self.call.target)(*args[1:], **kwargs)
        return self.call.target(*args, **kwargs)

    # -- sites thinning may rewrite -------------------------------------------------------------
    def constant_bounds(self) -> bool:
        """Whether every argument but the tensor itself was written as a constant (fx only: an
        exported graph has constants everywhere, so it cannot tell)."""
        if self.frontend != "fx":
            return False
        nodes: list[fx.Node] = []
        fx.node.map_arg((self.call.args[1:], self.call.kwargs), nodes.append)
        return not nodes

    def site_index(self, family: str) -> int:
        """Which call of ``family`` (pads, slices) this is within its owner's forward."""
        return self.builder.indices[self.call.name]

    def rewritable(self, family: str) -> str | None:
        """None when thinning can rewrite this call, else why not."""
        if self.frontend != "fx":
            return "the model is traced with torch.export"
        if self.call.name not in self.builder.indices:
            return "it is not a plain call in a forward"
        return owner_rewritable(self.builder.model, self.call.owner)

    def add_site(self, site: Site) -> None:
        """Record a call thinning must rewrite when it removes positions it names."""
        self.tracer.sites.append(site)


class _Builder:
    def __init__(self, model: nn.Module, calls: list[Call], frontend: str) -> None:
        self.model = model
        self.calls = calls
        self.frontend = frontend
        self.tracer = ChannelTracer(model)
        self.values: dict[fx.Node, Any] = {}
        self.indices: dict[str, int] = {}
        counters: dict[tuple[str, str], int] = {}
        if frontend == "fx":
            for call in calls:
                family = family_of(call.node) if call.node is not None else None
                if family is not None:
                    key = (call.owner, family)
                    self.indices[call.name] = counters.get(key, 0)
                    counters[key] = self.indices[call.name] + 1

    def resolve(self, value: Any) -> Any:
        return fx.node.map_aggregate(
            value, lambda v: self.values.get(v) if isinstance(v, fx.Node) else v
        )

    def run(self) -> None:
        for call in self.calls:
            value = self.visit(call)
            if call.node is not None:
                self.values[call.node] = value

    def fresh_for(self, out: Any, reason: str) -> Any:
        if isinstance(out, TensorMeta):
            return self.tracer.fresh_layout(out.shape, reason)
        if isinstance(out, tuple | list):
            return tuple(self.fresh_for(o, reason) for o in out)
        return out

    def visit(self, call: Call) -> Any:
        t = self.tracer
        if call.kind == "input":
            return self.fresh_for(call.out, "model input")
        if call.kind == "attr":
            return self.fresh_for(
                call.out,
                f"tensor '{call.target}' of the model is used directly in a forward (register "
                "a handler for the module that owns it: torchslim.graph.register_module)",
            )
        if call.kind == "output":
            for layout in TracedCall(self, call, self.resolve(call.args), {}).layouts():
                t.fix(layout.ids, "model output")
            return None
        if call.kind != "module" and not _has_tensor(call.out):
            return call.out  # sizes, shapes, Python arithmetic on them
        traced = TracedCall(self, call, tuple(self.resolve(call.args)),
                            dict(self.resolve(call.kwargs)))
        handler = (handler_for(call.module) if call.kind == "module"
                   else function_handler(call.kind, call.target))
        if handler is None:
            return self.unsupported(
                traced, "the graph does not know how it treats channels (teach it with "
                "torchslim.graph.register_function)"
            )
        try:
            value = handler.trace(traced)
        except Unsupported as problem:
            return self.unsupported(traced, str(problem))
        except (RuntimeError, TypeError, ValueError, IndexError) as err:
            return self.unsupported(traced, f"following it failed ({str(err).splitlines()[0]})")
        return value if value is not None else self.fresh_for(call.out, "no channels")

    def unsupported(self, call: TracedCall, problem: str) -> Any:
        reason = f"{call.describe()}: {problem}"
        self.tracer.unsupported(call.layouts(), reason)
        value = self.fresh_for(call.call.out, reason)
        if call.call.kind == "module" and isinstance(value, Layout):  # name it in the report
            handler = handler_for(call.module)
            size = handler.size(call.module, "out") if handler is not None else None
            if size is not None and len(value.shape) > 1 and value.shape[1] == size:
                self.tracer.couple(self.tracer.channels(value, 1),
                                   self.tracer.axis(call.path, "out", size))
        return value


def _group_name(axes: tuple[Axis, ...], taken: set[str]) -> str:
    producer = next((axis.module for axis in axes if axis.role == "out"), None)
    name = producer if producer is not None else f"{axes[0].module}:in"
    suffix, unique = 2, name
    while unique in taken:
        unique, suffix = f"{name}#{suffix}", suffix + 1
    taken.add(unique)
    return unique


def _groups(tracer: ChannelTracer) -> list[ChannelGroup]:
    channels: dict[int, dict[Axis, tuple[int, ...]]] = {}
    for axis, elements in tracer.axes.items():
        for position, element in enumerate(elements.tolist()):
            channel = channels.setdefault(tracer.find(element), {})
            channel[axis] = (*channel.get(axis, ()), position)
    by_signature: dict[tuple[tuple[Axis, ...], bool], list[int]] = {}
    for root, channel in channels.items():
        by_signature.setdefault((tuple(channel), root in tracer.reasons), []).append(root)
    groups, taken = [], set()
    for (axes, _), roots in by_signature.items():
        reasons = dict.fromkeys(tracer.reasons[r] for r in roots if r in tracer.reasons)
        approximate = {a.module: tracer.approximate[a.module] for a in axes
                       if a.module in tracer.approximate}
        groups.append(ChannelGroup(
            _group_name(axes, taken), axes, [channels[r] for r in roots],
            "; ".join(reasons) or None, approximate, roots,
        ))
    return groups


def build_graph(model: nn.Module, example_input: torch.Tensor) -> DependencyGraph:
    """Trace ``model`` on ``example_input`` (one batch; shapes only) into its channel
    dependency graph (torch.fx first, torch.export when fx cannot trace it)."""
    calls, frontend = trace_calls(model, example_input)
    builder = _Builder(model, calls, frontend)
    builder.run()
    tracer = builder.tracer
    site_elements = {e for site in tracer.sites for e in site.inputs}
    site_elements |= {e for site in tracer.sites for part in site.outputs for e in part}
    roots = {element: tracer.find(element) for element in site_elements}
    return DependencyGraph(model, _groups(tracer), tracer.sites, frontend, roots)
