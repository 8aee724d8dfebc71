"""Depth pruning: whole residual blocks removed, ranked by what their removal costs.

A *residual block* is a submodule whose forward is ``x + f(x)`` or ``relu(x + f(x))`` with the
shortcut ``x`` its own input (through ``nn.Identity`` at most, and not overwritten in place by
the branch) and an output shaped like its input (:func:`residual_blocks` finds them by tracing
each submodule with torch.fx; blocks that downsample or change width keep their place, and so
does a block registered under two names). Removing one drops its branch ``f``: the block is
replaced by ``nn.ReLU()`` or ``nn.Identity()``, which computes exactly what the block would with
``f`` returning zeros. Unlike thinning, the layers that remain keep their full width, so the MACs
saved turn into speed on runtimes whose kernels favour wide layers (ONNX Runtime's CPU
convolutions work on blocks of 8 or 16 channels).

Which blocks go is decided by an importance strategy, higher meaning keep:
:class:`LossImportance` (the rise of the loss on a few training batches when the block alone is
removed) or :class:`CosineImportance` (Men et al. 2024's *block influence*, one minus the cosine
similarity of a block's input and output: a block that barely turns its input matters little).
:class:`BlockPruner` removes the lowest-ranked blocks, a given number or until the model keeps a
target fraction of its MACs, optionally re-ranking after each removal (``iterative``). The removal
is an edit (``"block_removal"``): a saved model reloads into a freshly created one.

Example::

    >>> import torch
    >>> from torchslim.models import create_model
    >>> from torchslim.pruning.depth import BlockPruner, CosineImportance, residual_blocks
    >>> model = create_model("cifar_resnet20").eval()
    >>> [b.name for b in residual_blocks(model, torch.zeros(1, 3, 32, 32))][:4]
    ['layer1.0', 'layer1.1', 'layer1.2', 'layer2.1']
    >>> batches = [(torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,)))]
    >>> record = BlockPruner(blocks=2, importance=CosineImportance()).prune(model, batches)
    >>> len(record["blocks"]), sum(isinstance(m, torch.nn.ReLU) for m in model.modules())
    (2, 2)
"""

from __future__ import annotations

import operator
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..core.edits import register_edit
from ..core.errors import UserError
from ..core.modules import eval_mode, sync_optimizer
from ..core.names import select_names
from ..core.steps import Step, StepContext
from .allocation import layer_macs

#: what replaces a removed block, by the activation after its residual addition
REPLACEMENTS: dict[str, Callable[[], nn.Module]] = {"relu": nn.ReLU, "identity": nn.Identity}
Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class ResidualBlock:
    """A removable block: its ``name``, what replaces it (``activation``: ``"relu"`` or
    ``"identity"``) and the MACs its branch costs for one example."""

    name: str
    activation: str
    macs: int


_ADDS = {operator.add, operator.iadd, torch.add}
_RELUS = {F.relu, torch.relu, torch.relu_}


def _module(root: nn.Module, node: fx.Node) -> nn.Module | None:
    return root.get_submodule(str(node.target)) if node.op == "call_module" else None


def _is_relu(root: nn.Module, node: fx.Node) -> bool:
    if node.op == "call_function" and node.target in _RELUS:
        return True
    if node.op == "call_method" and node.target in ("relu", "relu_"):
        return True
    return isinstance(_module(root, node), nn.ReLU)


def _is_add(node: fx.Node) -> bool:
    if node.kwargs.get("alpha", 1) != 1 or len(node.args) != 2:
        return False
    return (node.op == "call_function" and node.target in _ADDS) or (
        node.op == "call_method" and node.target in ("add", "add_"))


def _in_place(root: nn.Module, node: fx.Node) -> bool:
    """Whether ``node`` may overwrite its first argument (``relu_``, ``x.mul_``, ``+=``,
    ``nn.ReLU(inplace=True)``, ``inplace=True``)."""
    if node.kwargs.get("inplace") is True:
        return True
    if node.op == "call_method":
        return str(node.target).endswith("_")
    if node.op == "call_function":
        return node.target in (operator.iadd, operator.isub, operator.imul, operator.itruediv) \
            or getattr(node.target, "__name__", "").endswith("_")
    module = _module(root, node)
    return bool(getattr(module, "inplace", False))


def _through_identity(root: nn.Module, node: Any) -> Any:
    while isinstance(node, fx.Node) and isinstance(_module(root, node), nn.Identity):
        node = node.args[0]
    return node


def _shortcut_form(module: nn.Module) -> str | None:
    """``"relu"``/``"identity"`` when ``module``'s forward is ``relu(x + f(x))``/``x + f(x)``
    with its own input as the shortcut; None otherwise (or when torch.fx cannot trace it)."""
    try:
        graph = fx.Tracer().trace(module)
    except Exception:  # any module torch.fx cannot trace is simply not a candidate
        return None
    inputs = [n for n in graph.nodes if n.op == "placeholder"]
    outputs = [n for n in graph.nodes if n.op == "output"]
    if len(inputs) != 1 or len(outputs) != 1 or not isinstance(outputs[0].args[0], fx.Node):
        return None
    node, form = outputs[0].args[0], "identity"
    if _is_relu(module, node):
        node, form = node.args[0], "relu"
    if not isinstance(node, fx.Node) or not _is_add(node):
        return None
    left, right = (_through_identity(module, arg) for arg in node.args)
    x = inputs[0]
    if (left is x) == (right is x):  # no shortcut from the input, or x + x
        return None
    # the shortcut must carry the input as it came: a branch that overwrites it in place
    # (an in-place ReLU on x, x.mul_(...), x += ...) makes removal differ from a zero branch
    aliases, frontier = {x}, [x]
    while frontier:
        current = frontier.pop()
        for user in current.users:
            if _in_place(module, user) and user.args and user.args[0] is current:
                return None
            if isinstance(_module(module, user), nn.Identity) and user not in aliases:
                aliases.add(user)
                frontier.append(user)
    return form


def residual_blocks(model: nn.Module, example_input: torch.Tensor) -> list[ResidualBlock]:
    """The blocks of ``model`` that can be removed (see the module docstring), in model order.
    Blocks nested in a removable block are not listed: the outer one is the unit."""
    shapes: dict[str, tuple] = {}

    def hook(name):
        def record(module, args, output):
            if len(args) == 1 and isinstance(args[0], torch.Tensor) and isinstance(
                    output, torch.Tensor):
                shapes[name] = (tuple(args[0].shape), tuple(output.shape))
        return record

    example_input = _on_device(model, example_input)
    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if n]
    try:
        with torch.no_grad(), eval_mode(model):
            model(example_input)
    finally:
        for handle in handles:
            handle.remove()
    macs = layer_macs(model, example_input)
    names = Counter(id(m) for _, m in model.named_modules(remove_duplicate=False))
    blocks: list[ResidualBlock] = []
    for name, module in model.named_modules():
        if not name or name not in shapes or shapes[name][0] != shapes[name][1]:
            continue
        if names[id(module)] > 1:
            continue  # registered under two names: replacing one would leave the other
        if any(name.startswith(b.name + ".") for b in blocks):
            continue
        if not any(True for _ in module.children()):
            continue  # a lone layer has no branch to drop
        form = _shortcut_form(module)
        if form is not None:
            cost = sum(v for k, v in macs.items() if k.startswith(name + "."))
            blocks.append(ResidualBlock(name, form, cost))
    return blocks


def block_names(blocks: Sequence[ResidualBlock], patterns: Iterable[str],
                label: str = "") -> set[str]:
    """The names of ``blocks`` that ``patterns`` (exact, globs or regular expressions) select;
    a UserError naming the first pattern that selects none."""
    names = [b.name for b in blocks]
    return select_names(patterns, names, label + "'{pattern}' names no removable block",
                        f"; removable: {', '.join(names)}")


def _on_device(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x`` on the device of ``model``'s parameters (the schedule's example input stays on the
    CPU when training moves the model)."""
    param = next(model.parameters(), None)
    return x if param is None else x.to(param.device)


def _swap(model: nn.Module, name: str, module: nn.Module) -> nn.Module:
    parent, _, child = name.rpartition(".")
    owner = model.get_submodule(parent) if parent else model
    old = owner.get_submodule(child)
    setattr(owner, child, module)
    return old


@contextmanager
def without_block(model: nn.Module, block: ResidualBlock) -> Iterator[nn.Module]:
    """``model`` with ``block`` removed inside the ``with``, restored (the same module) after."""
    old = _swap(model, block.name, REPLACEMENTS[block.activation]())
    try:
        yield model
    finally:
        _swap(model, block.name, old)


def remove_blocks(model: nn.Module, blocks: Iterable[ResidualBlock]) -> dict[str, Any]:
    """Replace each of ``blocks`` in ``model`` (in place) and return the edit record."""
    removed = {block.name: block.activation for block in blocks}
    record = {"kind": "block_removal", "blocks": removed}
    apply_block_removal(model, record)
    return record


@register_edit("block_removal")
def apply_block_removal(model: nn.Module, record: Mapping[str, Any]) -> nn.Module:
    """Replay a ``"block_removal"`` record on a freshly created ``model``."""
    for name, activation in record["blocks"].items():
        if activation not in REPLACEMENTS:
            raise UserError(f"the block removal record replaces '{name}' with an unknown "
                            f"'{activation}': compress the model again with this version")
        try:
            model.get_submodule(name)
        except AttributeError:
            raise UserError(f"the block removal record removes '{name}', which the model lacks: "
                            "apply it to the model it was made for") from None
        _swap(model, name, REPLACEMENTS[activation]())
    return model


class BlockImportance(Protocol):
    """Scores for ``blocks`` of ``model`` on ``batches`` of (inputs, targets): higher = keep."""

    def __call__(self, model: nn.Module, blocks: Sequence[ResidualBlock],
                 batches: Sequence[Batch]) -> dict[str, float]: ...


def _mean_loss(model: nn.Module, batches: Sequence[Batch], criterion) -> float:
    total, count = 0.0, 0
    for inputs, targets in batches:
        if not isinstance(targets, torch.Tensor):
            raise UserError("the loss importance needs (inputs, targets) batches with targets; "
                            "rank without labels with CosineImportance (importance: cosine)")
        inputs, targets = _on_device(model, inputs), _on_device(model, targets)
        total += float(criterion(model(inputs), targets)) * len(targets)
        count += len(targets)
    return total / max(count, 1)


class LossImportance:
    """How much the loss (``criterion``, cross entropy by default) on the batches rises when the
    block alone is removed; the model is scored in eval mode, without gradients."""

    def __init__(self, criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
                 = F.cross_entropy) -> None:
        self.criterion = criterion

    def __call__(self, model, blocks, batches):
        with torch.no_grad(), eval_mode(model):
            base = _mean_loss(model, batches, self.criterion)
            scores = {}
            for block in blocks:
                with without_block(model, block):
                    scores[block.name] = _mean_loss(model, batches, self.criterion) - base
        return scores


class CosineImportance:
    """Block influence (Men et al. 2024, *ShortGPT*): the mean over samples of one minus the
    cosine similarity between the block's input and output, flattened; needs no labels."""

    def __call__(self, model, blocks, batches):
        sums = dict.fromkeys((b.name for b in blocks), 0.0)
        seen = 0

        def hook(name):
            def record(module, args, output):
                cos = F.cosine_similarity(args[0].flatten(1).double(),
                                          output.flatten(1).double(), dim=1)
                sums[name] += float((1.0 - cos).sum())
            return record

        handles = [model.get_submodule(b.name).register_forward_hook(hook(b.name))
                   for b in blocks]
        try:
            with torch.no_grad(), eval_mode(model):
                for inputs, _ in batches:
                    model(_on_device(model, inputs))
                    seen += len(inputs)
        finally:
            for handle in handles:
                handle.remove()
        return {name: total / max(seen, 1) for name, total in sums.items()}


IMPORTANCES: dict[str, Callable[[], BlockImportance]] = {
    "loss": LossImportance, "cosine": CosineImportance}


class BlockPruner:
    """Remove the least important residual blocks of a model.

    Give ``blocks`` (how many to remove) or ``target_macs`` (remove blocks, least important
    first, until the model keeps at most this fraction of its MACs). ``importance`` ranks them
    (:class:`LossImportance` by default); ``iterative`` re-ranks the remaining blocks after each
    removal (slower, better when many go: removals interact). ``exclude`` names blocks (exact,
    globs or regular expressions) that stay.
    """

    def __init__(self, blocks: int | None = None, *, target_macs: float | None = None,
                 importance: BlockImportance | None = None, iterative: bool = False,
                 exclude: Iterable[str] = ()) -> None:
        if (blocks is None) == (target_macs is None):
            raise UserError("give the block pruner either blocks (how many to remove) or "
                            "target_macs (the fraction of the MACs to keep), not both or none")
        if blocks is not None and (isinstance(blocks, bool) or blocks < 1):
            raise UserError(f"blocks must be a whole number >= 1, got {blocks!r}")
        if target_macs is not None and not 0.0 < target_macs < 1.0:
            raise UserError(f"target_macs must be between 0 and 1 (the fraction of the MACs to "
                            f"keep), got {target_macs}")
        self.blocks = blocks
        self.target_macs = target_macs
        self.importance = importance or LossImportance()
        self.iterative = iterative
        self.exclude = list(exclude)

    def candidates(self, model: nn.Module, example_input: torch.Tensor) -> list[ResidualBlock]:
        """The removable blocks not excluded; a UserError when there are none, when an
        ``exclude`` pattern names no removable block, or when ``blocks``/``target_macs``
        cannot be reached with them (checked before anything is removed)."""
        found = residual_blocks(model, example_input)
        if not found:
            raise UserError(f"{type(model).__name__} has no residual block that can be removed "
                            "(a submodule computing x + f(x) or relu(x + f(x)) with an output "
                            "shaped like its input)")
        excluded = block_names(found, self.exclude, "exclude ")
        candidates = [b for b in found if b.name not in excluded]
        if self.blocks is not None and self.blocks > len(candidates):
            raise UserError(f"cannot remove {self.blocks} blocks: {type(model).__name__} has "
                            f"{len(candidates)} removable")
        if self.target_macs is not None:
            total = sum(layer_macs(model, _on_device(model, example_input)).values())
            floor = total - sum(b.macs for b in candidates)
            if floor > self.target_macs * total:
                raise UserError(f"removing every removable block keeps {floor / total:.1%} of "
                                f"the MACs, above target_macs {self.target_macs}: raise the "
                                "target or thin the layers too")
        return candidates

    def prune(self, model: nn.Module, batches: Sequence[Batch],
              example_input: torch.Tensor | None = None) -> dict[str, Any]:
        """Remove blocks from ``model`` in place, ranked on ``batches`` of (inputs, targets);
        return the edit record, with each removed block's ``scores`` as ranked."""
        if not batches:
            raise UserError("the block pruner needs at least one batch to rank the blocks")
        example = example_input if example_input is not None else batches[0][0][:1]
        candidates = self.candidates(model, example)
        total = sum(layer_macs(model, _on_device(model, example)).values())
        budget = None if self.target_macs is None else self.target_macs * total
        count = self.blocks
        chosen: list[ResidualBlock] = []
        scored: dict[str, float] = {}
        macs = total

        def more() -> bool:
            return (count is None or len(chosen) < count) and (budget is None or macs > budget)

        while candidates and more():
            scores = self.importance(model, candidates, batches)
            ranked = sorted(candidates, key=lambda b: scores[b.name])
            for block in ranked[:1] if self.iterative else ranked:
                if not more():
                    break
                chosen.append(block)
                scored[block.name] = scores[block.name]
                macs -= block.macs
            if not self.iterative:
                break
            remove_blocks(model, chosen[-1:])
            candidates = [b for b in candidates if b.name not in scored]
        if not self.iterative:
            remove_blocks(model, chosen)
        return {"kind": "block_removal", "blocks": {b.name: b.activation for b in chosen},
                "scores": scored}


class BlockRemovalStep(Step):
    """Depth pruning in a schedule: on its firing epoch the step keeps copies of the first
    ``collect_batches`` training minibatches (inputs and targets), ranks the blocks on them,
    removes the chosen ones and moves the optimizer off their parameters; the rest of training
    fine-tunes what remains. The removal is recorded as an edit."""

    kind = "pruner"
    resumes_mid_epoch = True

    def __init__(self, pruner: BlockPruner, collect_batches: int = 4) -> None:
        if collect_batches < 1:
            raise UserError(f"collect_batches must be >= 1, got {collect_batches}")
        self.pruner = pruner
        self.collect_batches = collect_batches
        self.done = False
        self._batches: list[Batch] = []
        self._result: dict[str, Any] | None = None

    def attach(self, ctx: StepContext) -> None:
        if ctx.example_input is None:
            raise UserError("block removal traces the model: create the CompressionScheduler "
                            "with example_input= (one batch the model accepts)")
        self.pruner.candidates(ctx.model, ctx.example_input)  # bad names fail before training

    def mid_epoch_checkpoint_ok(self) -> bool:
        return self.done or not self._batches  # the collected batches are not checkpointed

    def before_backward_pass(self, ctx: StepContext, loss: torch.Tensor, **batch: Any) -> None:
        if self.done or len(self._batches) >= self.collect_batches:
            return None
        inputs, targets = batch.get("inputs"), batch.get("targets")
        if not isinstance(inputs, torch.Tensor):
            raise UserError("block removal ranks the blocks on tensor minibatches; this training "
                            f"loop gives {type(inputs).__name__} inputs: call "
                            "BlockPruner.prune(model, batches) yourself instead")
        kept = targets.detach().clone() if isinstance(targets, torch.Tensor) else None
        self._batches.append((inputs.detach().clone(), kept))
        return None

    def on_minibatch_end(self, ctx: StepContext, minibatch_id: int,
                         minibatches_per_epoch: int) -> None:
        last = minibatches_per_epoch - 1 if minibatches_per_epoch > 0 else -1
        if not self.done and (len(self._batches) >= self.collect_batches or minibatch_id == last):
            self._remove(ctx)

    def on_epoch_end(self, ctx: StepContext) -> dict[str, Any] | None:
        if not self.done and self._batches:
            self._remove(ctx)
        result, self._result = self._result, None
        return result

    def _remove(self, ctx: StepContext) -> None:
        before = {id(p) for p in ctx.model.parameters()}
        record = self.pruner.prune(ctx.model, self._batches, ctx.example_input)
        ctx.edits.append({"kind": record["kind"], "blocks": record["blocks"]})
        if ctx.optimizer is not None:
            sync_optimizer(ctx.optimizer, ctx.model, before)
        self.done, self._batches = True, []
        self._result = {"removed_blocks": record["blocks"], "block_scores": record["scores"]}

    def state_dict(self) -> dict[str, Any]:
        return {"done": self.done, "result": self._result}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.done = bool(state.get("done", False))
        self._result = state.get("result")  # logged at the end of the epoch it happened in
