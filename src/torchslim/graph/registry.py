"""The handler registry: what the channel graph knows about each layer type and each traced
function, and the one call a user makes to teach it their own.

Module handlers are looked up by the module's class along its MRO (a subclass of ``nn.Conv2d``
is a convolution unless registered otherwise); a module type with a handler is a leaf of the
trace, every other module is traced through. Function handlers are looked up by the traced
target: a Python callable (``torch.cat``, ``F.pad``, ``operator.add``), a tensor method name
(``"view"``) or an operator name of ``torch.ops`` (``"aten::cat"``, for graphs from
``torch.export``).

Example::

    >>> import torch
    >>> from torchslim.graph import PassThrough, handler_for, register_module
    >>> class Scale(torch.nn.Module):
    ...     def __init__(self, channels):
    ...         super().__init__()
    ...         self.scale = torch.nn.Parameter(torch.ones(channels))
    ...     def forward(self, x):
    ...         return x * self.scale.view(1, -1, 1, 1)
    >>> _ = register_module(Scale, PassThrough({"scale": 0}))
    >>> type(handler_for(Scale(4))).__name__
    'PassThrough'
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable
from typing import Any

from torch import nn

MODULES: dict[type, Any] = {}
FUNCTIONS: dict[Any, Any] = {}
METHODS: dict[str, Any] = {}
OPS: dict[str, Any] = {}


def register_module(module_type: type[nn.Module], handler: Any) -> Any:
    """Teach the graph a layer type: ``handler`` is a
    :class:`~torchslim.graph.handlers.ModuleHandler` (for a layer that only scales or shifts each
    channel, :class:`~torchslim.graph.handlers.PassThrough` with the names of its per-channel
    tensors is all it takes). Returns the handler."""
    MODULES[module_type] = handler
    return handler


def register_function(
    handler: Any,
    functions: Iterable[Callable] = (),
    methods: Iterable[str] = (),
    ops: Iterable[str] = (),
) -> Any:
    """Teach the graph a traced function: Python callables, tensor method names and
    ``torch.ops`` operator names (``"aten::add"``, ``"mylib::op"``) that ``handler`` (a
    :class:`~torchslim.graph.handlers.FunctionHandler`) handles. Returns the handler."""
    for function in functions:
        FUNCTIONS[function] = handler
    for method in methods:
        METHODS[method] = handler
    for op in ops:
        OPS[op] = handler
    return handler


def handler_for(module: nn.Module) -> Any | None:
    """The handler registered for ``module``'s class or its nearest registered base class."""
    for cls in type(module).__mro__:
        if cls in MODULES:
            return MODULES[cls]
    return None


def op_name(target: Any) -> str | None:
    """``"ns::name"`` of a ``torch.ops`` operator (an overload or its packet), else None."""
    schema = getattr(target, "_schema", None)
    if schema is not None:
        return schema.name
    return getattr(target, "_qualified_op_name", None)


def function_handler(kind: str, target: Any) -> Any | None:
    """The handler of a traced ``call_function`` (``kind="function"``) or ``call_method``
    (``kind="method"``) target."""
    if kind == "method":
        return METHODS.get(target)
    name = op_name(target)
    if name is not None:
        return OPS.get(name)
    try:
        return FUNCTIONS.get(target)
    except TypeError:  # an unhashable target
        return None


#: Python operators fx records for ``a + b`` and friends.
ARITHMETIC = {
    "add": (operator.add, operator.iadd),
    "sub": (operator.sub, operator.isub),
    "mul": (operator.mul, operator.imul),
    "div": (operator.truediv, operator.itruediv),
    "neg": (operator.neg,),
}
