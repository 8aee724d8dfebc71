"""Per-group pruning ratios from a sensitivity analysis, to meet a MACs target losing the least.

Structured pruning at one uniform ratio treats every channel group alike; a sensitivity analysis
at ``group`` granularity (:mod:`torchslim.pruning.sensitivity`) measures how much accuracy each
group loses at each ratio. :func:`allocate_ratios` starts from nothing pruned and, step by step,
raises the ratio of the group whose next level costs the least accuracy per MAC saved, until the
model's MACs fall to ``target`` times the dense MACs. MACs of a plan are computed per layer: a
conv or linear layer keeps ``(1 - removed outputs) * (1 - removed inputs)`` of its MACs.

Example::

    >>> import torch
    >>> from torchslim.pruning.sensitivity import sensitivity_analysis
    >>> from torchslim.models import create_model
    >>> from torchslim.pruning.allocation import allocate_ratios, layer_macs, plan_macs
    >>> from torchslim.graph import build_graph
    >>> model, x = create_model("demo_cnn"), torch.zeros(1, 1, 8, 8)
    >>> score = lambda m: {"top1": 100.0 * float((m.features[3][0].weight != 0).float().mean())}
    >>> curves = sensitivity_analysis(model, score, [0.25, 0.5, 0.75], granularities=["group"],
    ...                               progress=False, example_input=x)
    >>> graph, macs = build_graph(model, x), layer_macs(model, x)
    >>> plan = allocate_ratios(graph, macs, curves.rows, target=0.5)
    >>> plan  # the group this score does not see goes first
    {'features.0.0': 0.75}
    >>> round(plan_macs(graph, macs, plan) / plan_macs(graph, macs, {}), 2)
    0.5
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn

from ..analysis.summary import summarize
from ..core.errors import UserError
from ..graph import DependencyGraph
from .masks import Masks
from .structured import FilterNormPruner, removal_count


def layer_macs(model: nn.Module, example_input: torch.Tensor) -> dict[str, int]:
    """MACs per layer for one ``example_input`` (batch size 1)."""
    summary = summarize(model, tuple(example_input.shape[1:]))
    return {row.name: row.macs for row in summary.layers if row.macs}


def plan_macs(graph: DependencyGraph, macs: Mapping[str, int], plan: Mapping[str, float],
              round_to: int = 1) -> float:
    """MACs of the model after removing ``plan[group]`` of each group's channels (the kept
    channels rounded to a multiple of ``round_to``, as the pruner will)."""
    removed: dict[tuple[str, str], float] = {}
    for group in graph.groups:
        ratio = plan.get(group.name, 0.0)
        if not ratio:
            continue
        fraction = removal_count(ratio, len(group.channels), round_to) / len(group.channels)
        for axis in group.axes:
            positions = sum(len(channel[axis]) for channel in group.channels)
            share = fraction * positions / axis.size
            removed[(axis.module, axis.role)] = removed.get((axis.module, axis.role), 0.0) + share
    return sum(
        count
        * (1.0 - min(removed.get((layer, "out"), 0.0), 1.0))
        * (1.0 - min(removed.get((layer, "in"), 0.0), 1.0))
        for layer, count in macs.items()
    )


def _curves(rows: Iterable) -> tuple[dict[str, dict[float, float]], list[float]]:
    curves: dict[str, dict[float, float]] = {}
    for row in rows:
        if row.granularity == "group":
            curves.setdefault(row.name, {})[row.level] = row.top1
    if not curves:
        raise UserError(
            "the sensitivity results hold no 'group' rows: run the analysis with granularity "
            "'group' (torchslim sensitivity --granularity group)"
        )
    levels = sorted({level for curve in curves.values() for level in curve})
    return curves, levels


def allocate_ratios(
    graph: DependencyGraph,
    macs: Mapping[str, int],
    rows: Iterable,
    target: float,
    dense_top1: float | None = None,
    round_to: int = 1,
) -> dict[str, float]:
    """Group name -> ratio, keeping ``target`` (0 < target < 1) of the dense MACs at the least
    summed accuracy drop measured in ``rows`` (sensitivity rows of granularity ``group``).
    With ``round_to`` > 1 every group keeps a multiple of ``round_to`` channels (CPU kernels
    work on blocks of 8 channels: 7 channels cost as much as 8), and the MACs count that."""
    if not 0.0 < target < 1.0:
        raise UserError(f"the MACs target is a fraction of the dense MACs in (0, 1), got {target}")
    curves, levels = _curves(rows)
    prunable = {group.name for group in graph.select(None)}
    curves = {name: curve for name, curve in curves.items() if name in prunable}
    baseline = dense_top1 if dense_top1 is not None else max(
        curve[min(curve)] for curve in curves.values()
    )
    plan = dict.fromkeys(curves, 0.0)
    budget = target * plan_macs(graph, macs, {})
    current = plan_macs(graph, macs, plan, round_to)
    while current > budget:
        candidates = []  # (accuracy cost, MACs after, group, level)
        for name, curve in curves.items():
            # the next level that removes channels (rounding may keep a level's count)
            for step in (level for level in levels if level > plan[name] and level in curve):
                trial = plan_macs(graph, macs, {**plan, name: step}, round_to)
                if trial < current:
                    break
            else:
                continue
            candidates.append((max(curve.get(plan[name], baseline) - curve[step], 0.0), trial,
                               name, step))
        if not candidates:
            rounding = f" and round_to {round_to}" if round_to > 1 else ""
            raise UserError(
                f"cannot reach {target:.0%} of the dense MACs with the levels analysed "
                f"(up to {levels[-1]}){rounding}: analyse higher levels, relax the target"
                + (" or lower round_to" if round_to > 1 else "")
            )
        chosen = min(candidates, key=lambda c: c[0] / (current - c[1]))
        if chosen[1] <= budget:  # the last step: of those that meet the target, the one that
            # loses least, keeping most MACs (the best per MAC saved may overshoot it by far)
            chosen = min((c for c in candidates if c[1] <= budget), key=lambda c: (c[0], -c[1]))
        _, current, name, step = chosen
        plan[name] = step
    return {name: ratio for name, ratio in plan.items() if ratio > 0}


def prune_by_plan(
    graph: DependencyGraph, masks: Masks, plan: Mapping[str, float], norm: int = 1,
    round_to: int = 1,
) -> dict[str, list[int]]:
    """Zero each group's ``plan`` ratio of channels by filter norm (keeping a multiple of
    ``round_to``); return what was removed."""
    removed = {}
    for group, ratio in plan.items():
        pruner = FilterNormPruner(ratio, norm=norm, round_to=round_to)
        removed.update(pruner.apply(graph, masks, [group]))
    return removed
