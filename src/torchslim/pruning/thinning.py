"""Thinning: physically remove pruned channels, so the model really gets smaller and faster.

:func:`thin` builds the channel graph of a model (:mod:`torchslim.graph`), finds every prunable
channel whose parameters are all exactly zero (filters, biases, BatchNorm gamma and beta, the
input slices of its consumers: what the structured pruners zero), or that no layer reads (its
consumers' input slices all zero, as group lasso or a threshold on input channels leaves them,
whatever its producing filter and BatchNorm hold), and asks each layer's handler
to keep only the other positions (tensors sliced, sizes such as ``in_channels`` updated). Pads
and slices of the channel dimension that name removed positions (the zero-padding shortcut of a
CIFAR ResNet, a dual-path split ``x[:, :d]``) are rewritten (:mod:`torchslim.graph.rewrite`).
Removed channels contribute nothing, so the outputs do not change; :func:`thin` checks that on
a copy first and refuses, with the reason, a thinning that would change them. An optimizer and a
:class:`~torchslim.pruning.masks.Masks` object given to :func:`thin` follow the new tensors
(momentum and masks sliced alike), so training goes on.

The returned :data:`ThinningRecord` is a plain dict of JSON types, an edit of kind
``"thinning"`` (see :mod:`torchslim.core.edits`). Saved next to the weights (``meta["edits"]``),
it lets a fresh process rebuild the thinned architecture with :func:`apply_thinning` before
``load_state_dict``, with no pickled code. Thinning again later gives another record; apply the
records in the order they were made.

Example::

    >>> import json, torch
    >>> from torchslim.graph import build_graph
    >>> from torchslim.models import create_model
    >>> from torchslim.pruning.masks import Masks
    >>> from torchslim.pruning.structured import FilterNormPruner
    >>> from torchslim.pruning.thinning import apply_thinning, thin
    >>> model, x = create_model("demo_cnn").eval(), torch.randn(2, 1, 8, 8)
    >>> _ = FilterNormPruner(0.5).apply(build_graph(model, x), Masks(model))
    >>> before = model(x)
    >>> record = thin(model, x)
    >>> model.classifier.in_features, bool((model(x) - before).abs().max() < 1e-5)
    (32, True)
    >>> record["kind"], sorted(record["layers"])[:2]
    ('thinning', ['classifier', 'features.0.0'])
    >>> fresh = apply_thinning(create_model("demo_cnn"), json.loads(json.dumps(record)))
    >>> fresh.load_state_dict(model.state_dict())
    <All keys matched successfully>
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

from ..core.edits import register_edit
from ..core.errors import UserError
from ..core.modules import eval_mode
from ..graph import DependencyGraph, build_graph, handler_for
from ..graph.rewrite import rewrite_owner
from ..graph.tracer import Axis, Site
from .masks import Masks

RECORD_VERSION = 2

#: (dim, kept indices) cuts applied to one tensor, in order.
Cuts = list[tuple[int, torch.Tensor]]

#: What :func:`thin` changed, as a plain dict (JSON types only, so it can be saved anywhere and
#: loaded with ``weights_only=True``): ``{"kind": "thinning", "version": 2, "layers": ...,
#: "rewrites": ...}``. ``layers`` maps a layer name to ``{"type", "sizes", "kept"}`` (``sizes``:
#: each changed axis' size before thinning, ``kept``: the positions kept on it); ``rewrites``
#: maps a module to the pad and slice calls of its forward that were rewritten.
ThinningRecord = dict[str, Any]


def removable_channels(graph: DependencyGraph) -> dict[str, list[int]]:
    """Group name -> indices of its channels that are pruned: all their parameters exactly
    zero, or every layer reading them zero there (input channels zeroed in their readers, by
    group lasso or a threshold: whatever their producers hold, nothing sees it)."""
    removable = {}
    for group in graph.groups:
        if group.prunable:
            pruned = graph.zero_channels(group)
            dead = pruned | graph.unread_channels(group)
            if bool(dead.all()) and not bool(pruned.all()):
                dead = pruned  # nothing reads the group at all: leave it (a layer keeps one)
            zero = dead.nonzero().flatten().tolist()
            if zero:
                removable[group.name] = zero
    return removable


def _site_change(site: Site, gone: set[int], graph: DependencyGraph) -> dict[str, Any] | None:
    """The new arguments of a pad or slice call, or None when its constants still hold."""
    gone_in = [graph.root(e) in gone for e in site.inputs]
    new_in = {}
    for position, removed in enumerate(gone_in):
        if not removed:
            new_in[position] = len(new_in)
    if site.family == "pad":
        outputs, carried = site.outputs[0], site.parts[0]
        gone_out = [graph.root(e) in gone for e in outputs]
        padding = set(range(len(outputs))) - set(carried)
        if not any(gone_out[p] for p in padding):
            return None  # only carried channels went: the pad's constants are still right
        kept_out = [p for p in range(len(outputs)) if not gone_out[p]]
        new_out = {p: i for i, p in enumerate(kept_out)}
        positions = [new_out[carried[i]] for i in range(len(site.inputs)) if not gone_in[i]]
        return {"family": "pad", "index": site.index, "dim": site.dim, "positions": positions,
                "size": len(kept_out), "spatial": list(site.spatial)}
    part = site.parts[0]
    if not any(gone_in[: max(part) + 1]):
        return None  # nothing went before the slice's end: its bounds are still right
    kept = [new_in[p] for p in part if not gone_in[p]]
    if not kept:
        raise UserError(
            f"every channel of the slice '{site.node}' in '{site.owner}' is pruned: keep at "
            "least one"
        )
    return {"family": "slice", "index": site.index, "dim": site.dim, "kept": kept,
            "rank": site.rank}


def plan_thinning(graph: DependencyGraph) -> tuple[ThinningRecord, bool]:
    """The record :func:`thin` would apply, and whether its effect is exact (False when a layer
    whose statistics run over the channels, a LayerNorm or GroupNorm, loses channels)."""
    removed: dict[Axis, set[int]] = {}
    gone: set[int] = set()
    exact = True
    for name, indices in removable_channels(graph).items():
        group = graph.group(name)
        exact = exact and not group.approximate
        for index in indices:
            gone.add(group.roots[index])
            for axis, positions in group.channels[index].items():
                removed.setdefault(axis, set()).update(positions)
    layers: dict[str, dict[str, Any]] = {}
    for axis, dropped in removed.items():
        kept = [position for position in range(axis.size) if position not in dropped]
        if not kept:
            raise UserError(
                f"every {axis.role}put channel of '{axis.module}' is pruned: keep at least one "
                "channel per layer (the structured pruners always do)"
            )
        entry = layers.setdefault(
            axis.module, {"type": type(graph.module(axis)).__name__, "sizes": {}, "kept": {}}
        )
        entry["sizes"][axis.role] = axis.size
        entry["kept"][axis.role] = kept
    rewrites: dict[str, list[dict[str, Any]]] = {}
    for site in graph.sites:
        change = _site_change(site, gone, graph) if gone else None
        if change is not None:
            rewrites.setdefault(site.owner, []).append(change)
    record = {"kind": "thinning", "version": RECORD_VERSION, "layers": layers,
              "rewrites": rewrites}
    return record, exact


def _cut(tensor: torch.Tensor, cuts: Cuts) -> torch.Tensor:
    for dim, index in cuts:
        tensor = tensor.index_select(dim, index.to(tensor.device))
    return tensor


def _shrink(
    model: nn.Module, name: str, entry: Mapping[str, Any]
) -> dict[str, tuple[nn.Parameter, nn.Parameter, Cuts]]:
    """Cut one layer down to ``entry["kept"]``; returns parameter name -> (old, new, cuts)."""
    module = model.get_submodule(name)
    handler = handler_for(module)
    cuts: dict[str, Cuts] = {}
    for role, kept in entry["kept"].items():
        for tensor_name, dim, _ in handler.tensors(module, role):
            cuts.setdefault(tensor_name, []).append((dim, torch.tensor(kept)))
    old = {tensor_name: getattr(module, tensor_name) for tensor_name in cuts}
    handler.resize(module, entry["kept"])
    prefix = f"{name}." if name else ""
    return {
        prefix + tensor_name: (tensor, getattr(module, tensor_name), cuts[tensor_name])
        for tensor_name, tensor in old.items()
        if tensor_name in module._parameters
    }


def _apply(model: nn.Module, record: Mapping[str, Any]) -> dict[str, tuple]:
    replaced: dict[str, tuple] = {}
    for name, entry in record["layers"].items():
        replaced.update(_shrink(model, name, entry))
    for owner, changes in record.get("rewrites", {}).items():
        rewrite_owner(model, owner, changes)
    return replaced


def _update_optimizer(
    optimizer: torch.optim.Optimizer, replaced: dict[str, tuple[nn.Parameter, nn.Parameter, Cuts]]
) -> None:
    new_of = {id(old): new for old, new, _ in replaced.values()}
    for group in optimizer.param_groups:
        group["params"] = [new_of.get(id(param), param) for param in group["params"]]
    for old, new, cuts in replaced.values():
        state = optimizer.state.pop(old, None)
        if state is not None:
            optimizer.state[new] = {
                key: _cut(value, cuts)
                if isinstance(value, torch.Tensor) and value.shape == old.shape
                else value
                for key, value in state.items()
            }


def _update_masks(
    masks: Masks, replaced: dict[str, tuple[nn.Parameter, nn.Parameter, Cuts]]
) -> None:
    for name, (_, _, cuts) in replaced.items():
        if name in masks:
            smaller = _cut(masks[name], cuts)
            masks.remove(name)
            masks.set(name, smaller)


def _largest_difference(before: Any, after: Any) -> float:
    if isinstance(before, torch.Tensor):
        if not isinstance(after, torch.Tensor) or before.shape != after.shape:
            return float("inf")
        scale = 1.0 + float(before.detach().abs().max()) if before.numel() else 1.0
        return float((before.detach() - after.detach()).abs().max()) / scale if before.numel() \
            else 0.0
    if isinstance(before, tuple | list) and isinstance(after, tuple | list):
        return max((_largest_difference(b, a) for b, a in zip(before, after, strict=True)),
                   default=0.0)
    if isinstance(before, dict) and isinstance(after, dict):
        return max((_largest_difference(before[k], after[k]) for k in before), default=0.0)
    return 0.0


@contextlib.contextmanager
def _full_float32() -> Iterator[None]:
    """No TF32 on CUDA while comparing: its 10-bit mantissa moves outputs by ~1e-3."""
    matmul = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        cudnn = torch.backends.cudnn  # flags() resets what it is not given: keep the user's
        with cudnn.flags(enabled=cudnn.enabled, benchmark=cudnn.benchmark,
                         deterministic=cudnn.deterministic, allow_tf32=False):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul


def _check(model: nn.Module, record: ThinningRecord, example_input: torch.Tensor) -> None:
    trial = copy.deepcopy(model)
    _apply(trial, record)
    with eval_mode(model), eval_mode(trial), torch.no_grad(), _full_float32():
        expected = model(example_input)
        try:
            got = trial(example_input)
        except Exception as err:
            difference, problem = float("inf"), str(err).splitlines()[0]
        else:
            difference, problem = _largest_difference(expected, got), ""
    if difference > 1e-4:
        found = f"it fails: {problem}" if problem else f"its output moves by {difference:.3g}"
        raise UserError(
            f"thinning would change the model ({found}): its forward computes channel counts "
            "or positions in a way the graph cannot see (a size hard-coded in a view, slice "
            "bounds that are not proportional); prune other layers, or write the bounds from "
            "x.size(1)"
        )


def thin(
    model: nn.Module,
    example_input: torch.Tensor,
    optimizer: torch.optim.Optimizer | None = None,
    masks: Masks | None = None,
    check: bool = True,
) -> ThinningRecord:
    """Remove every pruned channel of ``model`` in place (see the module docstring).

    ``example_input`` is one batch the model accepts. ``optimizer`` and ``masks``, when given,
    are updated to the new parameters. With ``check`` (the default), the thinning is first tried
    on a copy and refused if the outputs would change (skipped when a norm over the channels
    makes the change inexact by nature).
    """
    if masks is not None and masks.model is not model:
        raise UserError("the masks given to thin() belong to another model")
    reference = next(iter(model.parameters()), None)
    if reference is not None:
        example_input = example_input.to(reference.device)
    record, exact = plan_thinning(build_graph(model, example_input))
    _check_untied(model, record["layers"])
    if check and exact and (record["layers"] or record["rewrites"]):
        _check(model, record, example_input)
    replaced = _apply(model, record)
    if optimizer is not None:
        _update_optimizer(optimizer, replaced)
    if masks is not None:
        _update_masks(masks, replaced)
    return record


def _check_untied(model: nn.Module, layers: Mapping[str, Any]) -> None:
    """Thinning gives each resized layer new parameters: a tensor two layers share (tied
    embedding and output weights) would come apart. A :class:`UserError` instead."""
    owners: dict[int, list[str]] = {}
    for module_name, module in model.named_modules():  # one module under two names is no tie
        for name, param in module.named_parameters(recurse=False):
            owners.setdefault(id(param), []).append(
                f"{module_name}.{name}" if module_name else name)
    for names in owners.values():
        if len(names) > 1 and any(n.rpartition(".")[0] in layers for n in names):
            raise UserError(
                f"'{names[0]}' and '{names[1]}' are one tied tensor, and thinning would give "
                "them separate ones: untie them first, or leave their layers out of pruning"
            )


def _check_entry(model: nn.Module, name: str, entry: Mapping[str, Any]) -> None:
    try:
        module = model.get_submodule(name)
    except AttributeError:
        raise UserError(
            f"the thinning record names layer '{name}', which the model lacks: apply it to the "
            "model it was made for"
        ) from None
    if type(module).__name__ != entry["type"]:
        raise UserError(
            f"layer '{name}' is a {type(module).__name__}, the thinning record expects "
            f"a {entry['type']}: apply it to the model it was made for"
        )
    handler = handler_for(module)
    for role, size in entry["sizes"].items():
        current = handler.size(module, role) if handler is not None else None
        if current != size:
            raise UserError(
                f"layer '{name}' has {current} {role}put channels, the thinning record expects "
                f"{size}: apply records in the order they were made, to the model they were "
                "made for"
            )


@register_edit("thinning")
def apply_thinning(model: nn.Module, record: Mapping[str, Any]) -> nn.Module:
    """Reshape a freshly created ``model`` as ``record`` says (then load the thinned weights)."""
    if record.get("version") != RECORD_VERSION:
        raise UserError(
            f"thinning record version {record.get('version')} is not supported (this torchslim "
            f"writes version {RECORD_VERSION}): compress the model again with this version"
        )
    for name, entry in record["layers"].items():
        _check_entry(model, name, entry)
    for owner in record.get("rewrites", {}):
        try:
            model.get_submodule(owner)
        except AttributeError:
            raise UserError(
                f"the thinning record rewrites '{owner}', which the model lacks: apply it to the "
                "model it was made for"
            ) from None
    try:
        _apply(model, record)
    except ValueError as err:
        raise UserError(f"the thinning record does not fit this model ({err})") from None
    return model
