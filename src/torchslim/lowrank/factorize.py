"""Factorize a model: choose the layers and their ranks, replace them, record the edit.

:func:`factorize` replaces, in place, every selected layer (default: every Conv2d with
``groups=1`` and every Linear the method applies to, minus ``exclude``) with its decomposition
(:mod:`torchslim.lowrank.decompose`). The rank of each layer comes from one of:

* ``rank``: the same rank everywhere (a rank larger than a layer allows is an error);
* ``energy``: the smallest rank keeping that fraction of the weight's energy (the sum of its
  squared singular values; per side for Tucker-2);
* ``ratio``: the largest rank whose factorized weights are at most that fraction of the
  layer's (a layer that would not get smaller is left as it is).

:func:`ratio_for_macs` finds the ``ratio`` that brings the whole model's MACs down by a factor
(``torchslim.analysis.summarize`` counts them). The conversions ``depthwise_separable`` and
``group`` take no rank. The returned record (``{"kind": "factorization", "layers": {name:
{"method": ..., "rank": ...}}}``) is an architecture edit (:mod:`torchslim.core.edits`): saved
in ``meta["edits"]``, it rebuilds the factorized structure on a fresh model before its weights
load, so a factorized model reloads with no code changes.

Example::

    >>> import torch
    >>> from torchslim.lowrank import factorize
    >>> from torchslim.models import create_model
    >>> model = create_model("demo_cnn").eval()
    >>> record = factorize(model, "svd", ratio=0.5, exclude=["features.0.0"])
    >>> sorted(record["layers"]), record["layers"]["features.1.0"]
    (['classifier', 'features.1.0', 'features.3.0'], {'method': 'svd', 'rank': 26})
    >>> model.features[1][0]  # doctest: +NORMALIZE_WHITESPACE
    Sequential(
      (0): Conv2d(32, 26, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), bias=False)
      (1): Conv2d(26, 64, kernel_size=(1, 1), stride=(1, 1), bias=False)
    )
"""

from __future__ import annotations

import copy
import math
import operator
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..analysis import summarize
from ..core.edits import register_edit
from ..core.errors import UserError
from ..core.names import match_names
from .decompose import (
    check_rank,
    depthwise_separable,
    factorized_params,
    group_conv,
    max_rank,
    svd_conv,
    svd_linear,
    tucker2_conv,
)

METHODS = ("svd", "tucker2", "depthwise_separable", "group")
RECORD_VERSION = 1


def _eligible(module: nn.Module, method: str) -> bool:
    if isinstance(module, nn.Linear):
        return method == "svd"
    if not isinstance(module, nn.Conv2d) or module.transposed or module.groups != 1:
        return False
    if method in ("tucker2", "depthwise_separable"):
        return module.kernel_size != (1, 1)
    return True


def select_layers(model: nn.Module, method: str, layers: Sequence[str] | None = None,
                  exclude: Iterable[str] = ()) -> list[str]:
    """The names of the layers ``method`` would replace: ``layers`` (names or patterns; each
    must match a layer it applies to) or every eligible one, minus ``exclude``."""
    if method not in METHODS:
        raise UserError(f"unknown factorization method '{method}': choose one of "
                        f"{', '.join(METHODS)}")
    modules = dict(model.named_modules())
    eligible = [name for name, m in modules.items() if name and _eligible(m, method)]
    if layers is None:
        chosen = list(eligible)
    else:
        chosen = []
        for pattern in layers:
            hits = [n for n in match_names(pattern, list(modules)) if n in eligible]
            if not hits:
                raise UserError(
                    f"layer '{pattern}' matches no layer that '{method}' factorizes (2-D "
                    f"convolutions{', Linears' if method == 'svd' else ''}); such layers: "
                    f"{', '.join(eligible[:6])}{', ...' if len(eligible) > 6 else ''}"
                )
            chosen += [h for h in hits if h not in chosen]
    dropped = set()
    for pattern in exclude:
        hits = match_names(pattern, list(modules))
        if not hits:
            raise UserError(f"excluded layer '{pattern}' matches no layer of the model")
        dropped.update(hits)
    return [name for name in chosen
            if not any(name == d or name.startswith(d + ".") for d in dropped)]


def _energy_rank(values: torch.Tensor, energy: float) -> int:
    squared = values.double() ** 2
    kept = torch.cumsum(squared, 0) / squared.sum().clamp_min(1e-30)
    return int((kept < energy - 1e-12).sum().item()) + 1


def _side_values(weight: torch.Tensor, dim: int) -> torch.Tensor:
    w = weight.detach().double().transpose(0, dim)
    return torch.linalg.svdvals(w.reshape(w.shape[0], -1))


def _choose(layer: nn.Module, method: str, rank: Any, energy: float | None,
            ratio: float | None) -> dict[str, Any] | None:
    """The layer's entry in the record, or None when the target would not shrink it."""
    if method == "depthwise_separable":
        return {"method": method}
    if method == "group":
        return {"method": method, "groups": int(rank)}
    original = layer.weight.numel()
    if method == "svd":
        if rank is not None:
            chosen = int(rank)
        elif energy is not None:
            values = torch.linalg.svdvals(layer.weight.detach().double().reshape(
                layer.weight.shape[0], -1))
            chosen = _energy_rank(values, energy)
        else:
            per_rank = factorized_params(layer, "svd", 1)
            chosen = min(max_rank(layer), int(ratio * original // per_rank))
            if chosen < 1:
                return None
        if rank is None and factorized_params(layer, "svd", chosen) >= original:
            return None
        return {"method": method, "rank": chosen}
    out_ch, in_ch = layer.weight.shape[:2]
    if rank is not None:
        ranks = tuple(rank) if isinstance(rank, Sequence) else (int(rank), int(rank))
    elif energy is not None:
        ranks = (_energy_rank(_side_values(layer.weight, 1), energy),
                 _energy_rank(_side_values(layer.weight, 0), energy))
    else:
        ranks = None
        for step in range(1000, 0, -1):  # the largest common fraction of both sides that fits
            f = step / 1000
            candidate = (max(1, math.ceil(f * in_ch)), max(1, math.ceil(f * out_ch)))
            if factorized_params(layer, "tucker2", candidate) <= ratio * original:
                ranks = candidate
                break
        if ranks is None:
            return None
    if rank is None and factorized_params(layer, "tucker2", ranks) >= original:
        return None
    return {"method": method, "ranks": [int(r) for r in ranks]}


def _replacement(layer: nn.Module, entry: Mapping[str, Any]) -> nn.Module:
    method = entry["method"]
    if method == "svd":
        return (svd_linear if isinstance(layer, nn.Linear) else svd_conv)(layer, entry["rank"])
    if method == "tucker2":
        return tucker2_conv(layer, tuple(entry["ranks"]))
    if method == "depthwise_separable":
        return depthwise_separable(layer)
    if method == "group":
        return group_conv(layer, entry["groups"])
    raise UserError(f"unknown factorization method '{method}' in the record")


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def _replace_all(model: nn.Module, layers: Mapping[str, Mapping[str, Any]], what: str) -> None:
    modules = dict(model.named_modules())
    for name, entry in layers.items():
        if name not in modules:
            raise UserError(f"{what} factorizes layer '{name}', which this model does not have: "
                            "load it into the model it was made from")
        try:
            replacement = _replacement(modules[name], entry)
        except UserError as err:
            raise UserError(f"layer '{name}': {err}") from None
        if not any(p.requires_grad for p in modules[name].parameters()):
            replacement.requires_grad_(False)  # a frozen layer stays frozen
        _set(model, name, replacement)


def plan_factorization(
    model: nn.Module,
    method: str = "svd",
    *,
    rank: int | tuple[int, int] | None = None,
    energy: float | None = None,
    ratio: float | None = None,
    layers: Sequence[str] | None = None,
    exclude: Iterable[str] = (),
) -> dict[str, dict[str, Any]]:
    """What :func:`factorize` would do, layer by layer, without changing ``model`` (every
    impossible request is a :class:`UserError` here)."""
    targets = [v is not None for v in (rank, energy, ratio)]
    if method in ("svd", "tucker2") and sum(targets) != 1:
        raise UserError(f"'{method}' needs exactly one of rank, energy or ratio")
    if method == "group" and rank is None:
        raise UserError("'group' needs the number of groups (rank=groups)")
    _check_rank_form(method, rank)
    if energy is not None and not 0 < energy <= 1:
        raise UserError(f"the kept energy must be in (0, 1], got {energy}")
    if ratio is not None and not 0 < ratio < 1:
        raise UserError(f"the params ratio must be in (0, 1), got {ratio}")
    names = select_layers(model, method, layers, exclude)
    modules = dict(model.named_modules())
    plan: dict[str, dict[str, Any]] = {}
    for name in names:
        try:
            entry = _choose(modules[name], method, rank, energy, ratio)
            if entry is not None:
                _check_entry(modules[name], entry)
        except UserError as err:
            raise UserError(f"layer '{name}': {err}") from None
        if entry is not None:
            plan[name] = entry
    return plan


def _whole(value: Any) -> bool:
    """A whole number (Python's, numpy's or a one-element integer tensor), not a bool."""
    if isinstance(value, bool):
        return False
    try:
        operator.index(value)
    except TypeError:
        return False
    return True


def _check_rank_form(method: str, rank: Any) -> None:
    """``rank`` as ``method`` takes it: one whole number, or two for Tucker-2 (input side,
    output side); none for the depthwise-separable form, whose shape is fixed."""
    if rank is None:
        return
    if method == "depthwise_separable":
        raise UserError("the depthwise-separable form has no rank (its shape follows the "
                        "layer): leave rank out")
    pair = method == "tucker2" and isinstance(rank, Sequence) and not isinstance(rank, str)
    values = list(rank) if pair else [rank]
    if pair and len(values) != 2:
        raise UserError(f"a Tucker-2 rank is one number or two (input side, output side), got "
                        f"{list(rank)}")
    if not all(_whole(v) for v in values):
        what = "the number of groups" if method == "group" else f"a '{method}' rank"
        form = "a whole number or two" if method == "tucker2" else "a whole number"
        raise UserError(f"{what} must be {form}, got {rank!r}")


def _check_entry(layer: nn.Module, entry: Mapping[str, Any]) -> None:
    """Raise what building the replacement would raise, without building it."""
    method = entry["method"]
    if method == "svd":
        check_rank(entry["rank"], max_rank(layer), f"a {tuple(layer.weight.shape)} weight")
    elif method == "tucker2":
        out_ch, in_ch = layer.weight.shape[:2]
        check_rank(entry["ranks"][0], in_ch, f"the input side of a {in_ch}->{out_ch} conv")
        check_rank(entry["ranks"][1], out_ch, f"the output side of a {in_ch}->{out_ch} conv")
    elif method == "group":
        groups, (out_ch, in_ch) = entry["groups"], layer.weight.shape[:2]
        if groups < 2 or in_ch % groups or out_ch % groups:
            raise UserError(f"groups={groups} must be a whole number >= 2 dividing both the "
                            f"{in_ch} input and {out_ch} output channels")


def factorize(
    model: nn.Module,
    method: str = "svd",
    *,
    rank: int | tuple[int, int] | None = None,
    energy: float | None = None,
    ratio: float | None = None,
    layers: Sequence[str] | None = None,
    exclude: Iterable[str] = (),
    reinitialize: bool = False,
) -> dict[str, Any]:
    """Replace the selected layers of ``model`` in place; return the edit record (see the
    module docstring). ``reinitialize`` gives the new layers fresh random weights (a student
    trained from scratch) instead of the decomposition of the trained ones."""
    plan = plan_factorization(model, method, rank=rank, energy=energy, ratio=ratio,
                              layers=layers, exclude=exclude)
    _replace_all(model, plan, "the plan")
    if reinitialize:
        for name in plan:
            for module in model.get_submodule(name).modules():
                if hasattr(module, "reset_parameters") and module is not model:
                    module.reset_parameters()
    return {"kind": "factorization", "version": RECORD_VERSION, "layers": plan}


@register_edit("factorization")
def apply_factorization(model: nn.Module, record: Mapping[str, Any]) -> nn.Module:
    """Rebuild the factorized structure ``record`` describes on ``model`` (weights to be loaded
    afterwards)."""
    if record.get("version") != RECORD_VERSION:
        raise UserError(f"factorization record version {record.get('version')} is not supported "
                        f"(this torchslim writes version {RECORD_VERSION})")
    _replace_all(model, record["layers"], "the file")
    return model


def ratio_for_macs(
    model: nn.Module,
    input_shape: Sequence[int],
    speedup: float,
    method: str = "svd",
    *,
    layers: Sequence[str] | None = None,
    exclude: Iterable[str] = (),
    tolerance: float = 0.002,
) -> float:
    """The largest per-layer params ``ratio`` for which :func:`factorize` leaves at most
    ``1 / speedup`` of ``model``'s MACs (bisection on a copy). A target the selected layers
    cannot reach is a :class:`UserError` saying how far they go."""
    if not speedup > 1:
        raise UserError(f"the MACs reduction must be > 1 (e.g. 1.5), got {speedup}")
    base = summarize(model, tuple(input_shape)).macs
    goal = base / speedup

    def macs(ratio: float) -> int:
        trial = copy.deepcopy(model)
        factorize(trial, method, ratio=ratio, layers=layers, exclude=exclude)
        return summarize(trial, tuple(input_shape)).macs

    # Below this ratio some selected layer cannot be factorized at rank 1 and stays whole.
    modules = dict(model.named_modules())
    floors = [factorized_params(modules[name], method, 1 if method == "svd" else (1, 1))
              / modules[name].weight.numel()
              for name in select_layers(model, method, layers, exclude)]
    if method not in ("svd", "tucker2") or not floors:
        raise UserError(f"a MACs target chooses ranks: use 'svd' or 'tucker2' on layers they "
                        f"apply to, not '{method}'")
    low, high = min(max(floors) * 1.001, 0.999), 1.0
    smallest = macs(low)
    if smallest > goal:
        raise UserError(f"factorizing the selected layers brings the MACs down at most "
                        f"{base / smallest:.2f}x, short of {speedup}x: select more layers")
    while high - low > tolerance:
        mid = (low + high) / 2
        if macs(mid) <= goal:
            low = mid
        else:
            high = mid
    return low
