"""Per-layer summary of a model: output shapes, parameters, sparsity and MACs from one forward.

MACs come from :class:`torch.utils.flop_counter.FlopCounterMode` (MACs = FLOPs / 2), so they
cover every op PyTorch has a FLOP formula for (convolutions, matmuls, attention) and nothing
else: BatchNorm, activations and pooling count as 0.

Example::

    >>> import torch
    >>> from torchslim.analysis import summarize
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    >>> summary = summarize(model, (5, 4))
    >>> summary.params, summary.macs, [row.name for row in summary.layers]
    (23, 90, ['0', '2'])
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..core.errors import UserError
from ..core.modules import batch_shape, eval_mode, example_input
from .text import format_columns, format_count

ROOT_NAME = "(root)"


@dataclass
class LayerRow:
    """One layer: a leaf module with parameters or MAC-counted ops, or a container's own part.

    A container (a module with children) gets a row only for what is its own: parameters
    attached directly to it (``type`` is then ``"Parameter"``) and ops it runs outside its
    children. ``output_shape`` is the first call's output (``[]`` when never called); ``macs``
    sums all calls. ``sparsity`` is the percentage of zeros among the row's parameters.

    >>> LayerRow("fc", "Linear", [1, 2], params=10, nonzero_params=5, sparsity=50.0, macs=8).macs
    8
    """

    name: str
    type: str
    output_shape: list[int]
    params: int
    nonzero_params: int
    sparsity: float
    macs: int


@dataclass
class ModelSummary:
    """Totals of one forward pass plus its :class:`LayerRow` list, in execution order.

    ``params`` counts shared parameters once, ``macs`` is the whole forward pass (so it also
    holds ops that no layer row owns), ``input_shape`` is the full shape used, batch included.

    >>> ModelSummary(params=4, nonzero_params=3, macs=0, sparsity=25.0, input_shape=(1, 2)).params
    4
    """

    params: int
    nonzero_params: int
    macs: int
    sparsity: float
    input_shape: tuple[int, ...]
    layers: list[LayerRow] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with the stable keys ``params``, ``nonzero_params``, ``macs``,
        ``sparsity``, ``input_shape`` and ``layers`` (a list of :class:`LayerRow` dicts).

        >>> ModelSummary(1, 1, 0, 0.0, (1, 2)).to_dict()["input_shape"]
        [1, 2]
        """
        return {
            "params": self.params,
            "nonzero_params": self.nonzero_params,
            "macs": self.macs,
            "sparsity": self.sparsity,
            "input_shape": list(self.input_shape),
            "layers": [asdict(row) for row in self.layers],
        }

    def format_table(self) -> str:
        """An aligned text table, one line per layer, with a totals line.

        >>> print(ModelSummary(1, 1, 2_000_000, 0.0, (1, 2)).format_table().splitlines()[-1])
        total: 1 params, 1 nonzero (0.00 % sparse), 2.000 M MACs, input 1x2
        """
        headers = ["layer", "type", "output", "params", "nonzero", "sparsity %", "MACs"]
        rows = [
            [
                row.name,
                row.type,
                "x".join(map(str, row.output_shape)) or "-",
                f"{row.params:,}",
                f"{row.nonzero_params:,}",
                f"{row.sparsity:.2f}",
                f"{row.macs:,}",
            ]
            for row in self.layers
        ]
        lines = format_columns(headers, rows, right=[3, 4, 5, 6])
        rule = "-" * max(len(line) for line in lines)
        total = (
            f"total: {self.params:,} params, {self.nonzero_params:,} nonzero "
            f"({self.sparsity:.2f} % sparse), {format_count(self.macs)} MACs, "
            f"input {'x'.join(map(str, self.input_shape))}"
        )
        return "\n".join([lines[0], rule, *lines[1:], rule, total])


class _Tracer:
    """Forward hooks that charge every counted FLOP to the innermost module running it."""

    def __init__(self, counter: FlopCounterMode) -> None:
        self.counter = counter
        self.flops: dict[nn.Module, int] = defaultdict(int)
        self.first_call: dict[nn.Module, int] = {}
        self.output_shapes: dict[nn.Module, list[int]] = {}
        self.stack: list[nn.Module] = []
        self.mark = 0

    def _charge(self) -> None:
        total = self.counter.get_total_flops()
        if self.stack:
            self.flops[self.stack[-1]] += total - self.mark
        self.mark = total

    def pre(self, module: nn.Module, args: Any) -> None:
        self._charge()
        self.first_call.setdefault(module, len(self.first_call))
        self.stack.append(module)

    def post(self, module: nn.Module, args: Any, output: Any) -> None:
        self._charge()
        self.stack.pop()
        self.output_shapes.setdefault(module, _first_tensor_shape(output))


def _first_tensor_shape(output: Any) -> list[int]:
    if isinstance(output, torch.Tensor):
        return list(output.shape)
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, list | tuple):
        for item in output:
            shape = _first_tensor_shape(item)
            if shape:
                return shape
    return []


def _count(params: Sequence[torch.Tensor]) -> tuple[int, int, float]:
    """Total, nonzero and percent-zero of ``params``."""
    total = sum(p.numel() for p in params)
    nonzero = sum(int(torch.count_nonzero(p.detach())) for p in params)
    return total, nonzero, 100.0 * (total - nonzero) / total if total else 0.0


def summarize(model: nn.Module, input_shape: Sequence[int]) -> ModelSummary:
    """Run one forward pass (eval mode, no grad) and summarize parameters, shapes and MACs.

    ``input_shape`` is one sample, ``(C, H, W)`` or ``(F,)`` (batch 1 is added), or a full
    ``(N, C, H, W)`` / ``(N, F)`` shape. The model's train/eval mode is restored afterwards.

    >>> summary = summarize(torch.nn.Conv2d(3, 8, 3, bias=False), (3, 10, 10))
    >>> summary.macs == 8 * 8 * 8 * 3 * 3 * 3, summary.layers[0].output_shape
    (True, [1, 8, 8, 8])
    """
    shape = batch_shape(input_shape)
    names: dict[nn.Module, str] = {module: name for name, module in model.named_modules()}
    counter = FlopCounterMode(display=False)
    tracer = _Tracer(counter)
    handles = []
    try:
        for module in names:
            handles.append(module.register_forward_pre_hook(tracer.pre))
            handles.append(module.register_forward_hook(tracer.post))
        with eval_mode(model), torch.no_grad(), counter:
            model(example_input(model, shape))
    except RuntimeError as err:
        raise UserError(
            f"the model cannot run on input shape {shape}: {str(err).splitlines()[0]} "
            "(give the shape it expects, e.g. --input-shape 3,32,32)"
        ) from err
    finally:
        for handle in handles:
            handle.remove()

    never_called = len(tracer.first_call)
    layers = []
    for module in sorted(names, key=lambda m: tracer.first_call.get(m, never_called)):
        is_leaf = next(module.children(), None) is None
        own = list(module.parameters(recurse=False))
        macs = tracer.flops[module] // 2
        if not own and not macs:
            continue
        total, nonzero, sparsity = _count(own)
        layers.append(LayerRow(
            name=names[module] or ROOT_NAME,
            type=type(module).__name__ if is_leaf or not own else "Parameter",
            output_shape=tracer.output_shapes.get(module, []),
            params=total,
            nonzero_params=nonzero,
            sparsity=sparsity,
            macs=macs,
        ))
    params, nonzero, sparsity = _count(list(model.parameters()))
    return ModelSummary(
        params=params,
        nonzero_params=nonzero,
        macs=counter.get_total_flops() // 2,
        sparsity=sparsity,
        input_shape=shape,
        layers=layers,
    )
