"""Rewriting pads and slices of the channel dimension when thinning removes channels.

A forward that pads the channels with constants (``F.pad(x, (0, 0, 0, 0, 8, 8))``, the option-A
shortcut of the CIFAR ResNets, whether in a zoo module or a user's lambda) or slices them by
position (``x[:, :64]``, a dual-path network) names channel positions in its code. When thinning
removes some of those positions, the call must change too. Thinning therefore traces the module
that makes the call (its *owner*) alone with torch.fx, replaces the call by
``torch.ops.torchslim.channel_pad`` / ``channel_select`` with the new positions, and puts the
rewritten :class:`torch.fx.GraphModule` in the owner's place; the record says which call of which
owner changed, so a fresh model is rewritten the same way before its weights load.

An owner can be rewritten when fx traces it alone and its forward is the same in training and
evaluation (a rewrite must not freeze a ``self.training`` branch). The model's own forward cannot
be replaced in place; a pad or slice there keeps its channels.

Example::

    >>> import torch
    >>> from torchslim.graph.rewrite import owner_rewritable
    >>> class Pad(torch.nn.Module):
    ...     def forward(self, x):
    ...         return torch.nn.functional.pad(x, (0, 0, 0, 0, 2, 2))
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), Pad())
    >>> owner_rewritable(model, "1") is None, owner_rewritable(model, "")
    (True, "it is in the model's own forward, which thinning cannot replace")
"""

from __future__ import annotations

import operator
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..core import ops as _ops  # noqa: F401  (registers torch.ops.torchslim)
from .frontends import LeafTracer
from .registry import op_name

_CHECKED: weakref.WeakKeyDictionary[nn.Module, str | None] = weakref.WeakKeyDictionary()


def _is_slicing(index: Any) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return any(isinstance(item, slice) or item is Ellipsis or item is None for item in items)


def family_of(node: fx.Node | None) -> str | None:
    """``"pad"``, ``"slice"`` or None: which rewritable family a traced call belongs to, by its
    syntax alone (so a trace of the owner alone counts the same calls)."""
    if node is None:
        return None
    if node.op == "call_method":
        return "slice" if node.target == "narrow" else None
    if node.op != "call_function":
        return None
    name = op_name(node.target)
    if node.target is F.pad or name == "torchslim::channel_pad":
        return "pad"
    if name == "torchslim::channel_select" or node.target is torch.narrow:
        return "slice"
    if node.target is operator.getitem and len(node.args) > 1 and _is_slicing(node.args[1]):
        return "slice"
    return None


def _trace(module: nn.Module, training: bool) -> fx.Graph:
    modes = [(m, m.training) for m in module.modules()]
    module.train(training)
    try:
        return LeafTracer().trace(module)
    finally:
        for m, mode in modes:
            m.training = mode


def owner_rewritable(model: nn.Module, owner: str) -> str | None:
    """None when thinning can rewrite calls in the forward of ``owner`` (a module path), else
    why not."""
    if owner == "":
        return "it is in the model's own forward, which thinning cannot replace"
    module = model.get_submodule(owner)
    if module not in _CHECKED:
        try:
            codes = {_trace(module, mode).python_code("self").src for mode in (False, True)}
            _CHECKED[module] = (
                None if len(codes) == 1
                else f"the forward of '{owner}' differs between training and evaluation"
            )
        except Exception as err:  # whatever fx raises on this module's code
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            _CHECKED[module] = f"torch.fx cannot trace '{owner}' alone ({first})"
    return _CHECKED[module]


def _without(index: Any, dim: int, rank: int) -> tuple:
    """``index`` with the component that indexes input dim ``dim`` made a full slice."""
    items = list(index) if isinstance(index, tuple) else [index]
    explicit = sum(1 for item in items if item is not None and item is not Ellipsis)
    current = 0
    for position, item in enumerate(items):
        if item is None:
            continue
        if item is Ellipsis:
            current += rank - explicit
            continue
        if current == dim:
            items[position] = slice(None)
        current += 1
    return tuple(items)


def _trivial(index: tuple) -> bool:
    return all(item == slice(None) or item is Ellipsis for item in index)


def _replace(graph: fx.Graph, node: fx.Node, change: Mapping[str, Any]) -> None:
    x = node.args[0]
    dim = change["dim"]
    name = op_name(node.target) if node.op == "call_function" else None
    if change["family"] == "pad":
        if name == "torchslim::channel_pad":
            node.args = (x, dim, list(change["positions"]), change["size"])
            return
        with graph.inserting_before(node):
            source = x
            if any(change["spatial"]):
                source = graph.call_function(F.pad, (x, tuple(change["spatial"])))
            new = graph.call_function(
                torch.ops.torchslim.channel_pad.default,
                (source, dim, list(change["positions"]), change["size"]),
            )
    else:
        if name == "torchslim::channel_select":
            node.args = (x, dim, list(change["kept"]))
            return
        with graph.inserting_before(node):
            new = graph.call_function(
                torch.ops.torchslim.channel_select.default, (x, dim, list(change["kept"]))
            )
            if node.target is operator.getitem:
                rest = _without(node.args[1], dim, change["rank"])
                if not _trivial(rest):
                    new = graph.call_function(operator.getitem, (new, rest))
    node.replace_all_uses_with(new)
    graph.erase_node(node)


def _members(graph: fx.Graph) -> dict[str, list[fx.Node]]:
    found: dict[str, list[fx.Node]] = {"pad": [], "slice": []}
    for node in graph.nodes:
        family = family_of(node)
        if family is not None and not node.meta.get("nn_module_stack"):
            found[family].append(node)
    return found


def rewrite_owner(model: nn.Module, owner: str, changes: Sequence[Mapping[str, Any]]) -> None:
    """Replace the calls ``changes`` name (``family``, ``index`` among that family's calls in
    the owner's own forward, and the new positions) and put the rewritten owner in place."""
    module = model.get_submodule(owner)
    graph = _trace(module, False)
    members = _members(graph)
    targets = []
    for change in changes:
        nodes = members[change["family"]]
        if change["index"] >= len(nodes):
            raise ValueError(
                f"'{owner}' has {len(nodes)} {change['family']} calls, the record names "
                f"number {change['index']}"
            )
        targets.append((nodes[change["index"]], change))
    for node, change in targets:
        _replace(graph, node, change)
    graph.lint()
    rewritten = fx.GraphModule(module, graph, class_name=type(module).__name__)
    for name, child in module.named_children():
        if not hasattr(rewritten, name):
            rewritten.add_module(name, child)
    for name, param in module.named_parameters(recurse=False):
        if name not in rewritten._parameters:
            rewritten.register_parameter(name, param)
    for name, buffer in module.named_buffers(recurse=False):
        if name not in rewritten._buffers:
            rewritten.register_buffer(name, buffer, persistent=name not in
                                      module._non_persistent_buffers_set)
    rewritten.train(module.training)
    parent, _, attribute = owner.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attribute, rewritten)
