"""The channel dependency graph: which channels of which layers must be removed together, for
any model torch.fx or torch.export can trace, and the handler registry that teaches it layers
and functions.

:func:`build_graph` traces a model on one example input, runs the handler of every call
(:mod:`~torchslim.graph.handlers` for layers, :mod:`~torchslim.graph.functions` for the ops
between them) and returns a :class:`DependencyGraph` of :class:`ChannelGroup`\\ s. Structured
pruning ranks and zeroes whole channels of a group; thinning removes them, consulting the same
handlers to slice each layer's tensors. Nothing here is specific to one model: the zero-padding
shortcut of a CIFAR ResNet is recognised from its traced ``F.pad``, whatever module makes it.

Teach the graph a layer of your own with one call (``register_module``); a model, or a part of
one, the graph does not understand is reported group by group with the reason, never a
traceback.

Example::

    >>> import torch
    >>> from torchslim.graph import build_graph
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(),
    ...                             torch.nn.Conv2d(8, 8, 3, groups=2), torch.nn.Conv2d(8, 2, 1))
    >>> graph = build_graph(model, torch.zeros(1, 3, 16, 16))
    >>> [(g.name, len(g.channels), g.prunable) for g in graph.groups]
    [('0', 4, True), ('0:in', 3, False), ('2', 4, True), ('3', 2, False)]
"""

from . import functions as _functions  # noqa: F401  (registers the built-in function handlers)
from .build import TracedCall, build_graph
from .dependency import AxisTensor, Channel, ChannelGroup, DependencyGraph
from .functions import FunctionHandler
from .handlers import ModuleHandler, PassThrough, Unsupported
from .registry import handler_for, register_function, register_module
from .tracer import Axis, Layout

__all__ = [
    "Axis",
    "AxisTensor",
    "Channel",
    "ChannelGroup",
    "DependencyGraph",
    "FunctionHandler",
    "Layout",
    "ModuleHandler",
    "PassThrough",
    "TracedCall",
    "Unsupported",
    "build_graph",
    "handler_for",
    "register_function",
    "register_module",
]
