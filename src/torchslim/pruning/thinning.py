"""Thinning: physically remove pruned channels, so the model really gets smaller and faster.

:func:`thin` builds the :mod:`~torchslim.pruning.graph` of a model, finds every prunable channel
whose parameters are all exactly zero (filters, biases, BatchNorm gamma and beta, the input slices
of its consumers: what the structured pruners zero) and replaces the parameters and buffers of the
layers it spans by smaller tensors, updating ``in_channels``, ``out_channels``, ``groups``,
``num_features``, ``in_features``, ``out_features`` and the ``channel_index`` of option-A
shortcuts. Such channels contribute nothing, so the outputs do not change. An optimizer and a
:class:`~torchslim.pruning.masks.Masks` object given to :func:`thin` follow the new tensors
(momentum and masks sliced alike), so training goes on.

The returned :data:`ThinningRecord` is a plain dict of JSON types, an edit of kind
``"thinning"`` (see :mod:`torchslim.core.edits`). Saved next to the weights (``meta["edits"]``),
it lets a fresh process rebuild the thinned architecture with :func:`apply_thinning` before
``load_state_dict``, with no pickled code. Thinning again later gives another record; apply the
records in the order they were made.

Example::

    >>> import json, torch
    >>> from torchslim.models import create_model
    >>> from torchslim.pruning.graph import build_graph
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

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..core.edits import register_edit
from ..core.errors import UserError
from ..models.cifar_resnet import ChannelPadShortcut
from .graph import Axis, DependencyGraph, axis_size, axis_tensors, build_graph, is_depthwise
from .masks import Masks

RECORD_VERSION = 2

#: (dim, kept indices) cuts applied to one tensor, in order.
Cuts = list[tuple[int, torch.Tensor]]


#: What :func:`thin` changed, as a plain dict (JSON types only, so it can be saved anywhere and
#: loaded with ``weights_only=True``): ``{"kind": "thinning", "version": 2, "layers": ...}``
#: where ``layers`` maps a layer name to ``{"type", "sizes", "kept"}``. ``sizes`` maps each
#: changed axis (``"out"``, ``"in"``) to its size before thinning, ``kept`` to the indices kept on
#: it; a shortcut's entry also shows its new ``channel_index``.
ThinningRecord = dict[str, Any]


def removable_channels(graph: DependencyGraph) -> dict[str, list[int]]:
    """Group name -> indices of its channels that are pruned (all parameters exactly zero)."""
    removable = {}
    for group in graph.groups:
        if group.prunable:
            zero = graph.zero_channels(group).nonzero().flatten().tolist()
            if zero:
                removable[group.name] = zero
    return removable


def _plan(graph: DependencyGraph) -> dict[str, dict[str, Any]]:
    removed: dict[Axis, set[int]] = {}
    for name, indices in removable_channels(graph).items():
        for index in indices:
            for axis, positions in graph.group(name).channels[index].items():
                removed.setdefault(axis, set()).update(positions)
    record: dict[str, dict[str, Any]] = {}
    for axis, gone in removed.items():
        kept = [position for position in range(axis.size) if position not in gone]
        if not kept:
            raise UserError(
                f"every {axis.role}put channel of '{axis.module}' is pruned: keep at least one "
                "channel per layer (the structured pruners always do)"
            )
        entry = record.setdefault(
            axis.module, {"type": type(graph.module(axis)).__name__, "sizes": {}, "kept": {}}
        )
        entry["sizes"][axis.role] = axis.size
        entry["kept"][axis.role] = kept
    return record


def _cut(tensor: torch.Tensor, cuts: Cuts) -> torch.Tensor:
    for dim, index in cuts:
        tensor = tensor.index_select(dim, index.to(tensor.device))
    return tensor


def _resize(module: nn.Module, sizes: dict[str, int]) -> None:
    if isinstance(module, _BatchNorm):
        module.num_features = sizes["out"]
    elif isinstance(module, nn.Linear):
        module.out_features = sizes.get("out", module.out_features)
        module.in_features = sizes.get("in", module.in_features)
    elif is_depthwise(module):
        multiplier = module.out_channels // module.in_channels
        module.out_channels = sizes["out"]
        module.in_channels = module.groups = sizes["out"] // multiplier
    else:
        module.out_channels = sizes.get("out", module.out_channels)
        module.in_channels = sizes.get("in", module.in_channels)


def _remap_shortcut(shortcut: ChannelPadShortcut, kept: Mapping[str, list[int]]) -> list[int]:
    positions = shortcut.input_positions()
    kept_out = kept.get("out", range(shortcut.out_channels))
    new_position = {old: new for new, old in enumerate(kept_out)}
    shortcut.channel_index = [
        new_position[positions[i]] for i in kept.get("in", range(len(positions)))
    ]
    shortcut.out_channels = len(kept_out)
    return shortcut.channel_index


def _shrink(
    model: nn.Module, name: str, entry: dict[str, Any]
) -> dict[str, tuple[nn.Parameter, nn.Parameter, Cuts]]:
    """Cut one layer down to ``entry["kept"]``; returns parameter name -> (old, new, cuts)."""
    module = model.get_submodule(name)
    if isinstance(module, ChannelPadShortcut):
        entry["channel_index"] = _remap_shortcut(module, entry["kept"])
        return {}
    cuts: dict[str, Cuts] = {}
    for role, kept in entry["kept"].items():
        for tensor_name, dim in axis_tensors(module, role):
            cuts.setdefault(tensor_name, []).append((dim, torch.tensor(kept)))
    _resize(module, {role: len(kept) for role, kept in entry["kept"].items()})
    replaced = {}
    for tensor_name, tensor_cuts in cuts.items():
        old = getattr(module, tensor_name)
        smaller = _cut(old.detach(), tensor_cuts)
        if tensor_name in module._parameters:
            new = nn.Parameter(smaller, requires_grad=old.requires_grad)
            replaced[f"{name}.{tensor_name}"] = (old, new, tensor_cuts)
            setattr(module, tensor_name, new)
        else:
            setattr(module, tensor_name, smaller)
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


def thin(
    model: nn.Module,
    example_input: torch.Tensor,
    optimizer: torch.optim.Optimizer | None = None,
    masks: Masks | None = None,
) -> ThinningRecord:
    """Remove every pruned channel of ``model`` in place (see the module docstring).

    ``example_input`` is one batch the model accepts (only its shapes matter). ``optimizer`` and
    ``masks``, when given, are updated to the new parameters.
    """
    if masks is not None and masks.model is not model:
        raise UserError("the masks given to thin() belong to another model")
    layers = _plan(build_graph(model, example_input))
    replaced = {}
    for name, entry in layers.items():
        replaced.update(_shrink(model, name, entry))
    if optimizer is not None:
        _update_optimizer(optimizer, replaced)
    if masks is not None:
        _update_masks(masks, replaced)
    return {"kind": "thinning", "version": RECORD_VERSION, "layers": layers}


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
    for role, size in entry["sizes"].items():
        current = axis_size(module, role)
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
    layers = record["layers"]
    for name, entry in layers.items():
        _check_entry(model, name, entry)
    for name, entry in layers.items():
        _shrink(model, name, dict(entry))
    return model
