"""Freezing and unfreezing layers by name pattern, as functions and as schedule steps.

:func:`freeze` stops the selected parameters from training (``requires_grad=False``: no
gradient, so neither the optimizer step nor weight decay touches them; they stay bit-identical)
and, by default, keeps the BatchNorm layers among them in eval mode (a forward pre-hook), so their
running statistics do not drift either. :func:`unfreeze` undoes both and puts the parameters
into the optimizer when they are not in it. Patterns are module or parameter names, globs or
regular expressions (``layer1``, ``layer*``, ``*.bn*``); ``"*"`` is every layer.

As steps (:class:`Freeze`, :class:`Unfreeze`; recipe classes ``Freeze``/``Unfreeze`` in
``extensions``) they make seed 004's schedule: the backbone frozen with a new head trained
first, then everything fine-tuned; with ``gradual=True`` an :class:`Unfreeze` step releases
one entry of its ``layers`` per firing epoch (ULMFiT's gradual unfreezing).

Example::

    >>> import torch
    >>> from torchslim.transfer import freeze, unfreeze
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4),
    ...                             torch.nn.Linear(4, 2))
    >>> freeze(model, ["*"], exclude=["2"])
    ['0.weight', '0.bias', '1.weight', '1.bias']
    >>> [p.requires_grad for p in model.parameters()]
    [False, False, False, False, True, True]
    >>> _ = model.train()(torch.randn(8, 4))
    >>> model[1].num_batches_tracked.item()  # the frozen BatchNorm stayed in eval mode
    0
    >>> unfreeze(model, ["*"])
    ['0.weight', '0.bias', '1.weight', '1.bias']
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..core.errors import UserError
from ..core.names import match_names
from ..core.steps import Step, StepContext

_HOOK = "_torchslim_frozen_bn"


def _selected(model: nn.Module, patterns: Iterable[str], what: str) -> set[str]:
    """Parameter names under the modules or parameters the patterns select."""
    modules = [n for n, _ in model.named_modules() if n]
    params = [n for n, _ in model.named_parameters()]
    chosen: set[str] = set()
    for pattern in patterns:
        if pattern in ("*", ""):
            chosen.update(params)
            continue
        module_hits = match_names(pattern, modules)
        param_hits = match_names(pattern, params)
        if not module_hits and not param_hits:
            raise UserError(f"{what} '{pattern}' matches no layer or parameter of the model; "
                            f"its layers are named like {', '.join(modules[:4])}, ...")
        chosen.update(param_hits)
        for module in module_hits:
            chosen.update(p for p in params if p.startswith(module + "."))
    return chosen


def _eval_bn(module: nn.Module, inputs: Any) -> None:
    module.training = False


def _bn_under(model: nn.Module, names: set[str]) -> list[_BatchNorm]:
    return [m for n, m in model.named_modules() if isinstance(m, _BatchNorm)
            and any(p.startswith(n + ".") for p in names)]


def freeze(model: nn.Module, layers: Sequence[str] = ("*",), *, exclude: Iterable[str] = (),
           bn_eval: bool = True) -> list[str]:
    """Freeze the parameters under ``layers`` minus ``exclude``; return their names."""
    names = _selected(model, layers, "layer") - _selected(model, exclude, "excluded layer")
    for name, param in model.named_parameters():
        if name in names:
            param.requires_grad_(False)
    if bn_eval:
        for bn in _bn_under(model, names):
            if getattr(bn, _HOOK, None) is None:
                setattr(bn, _HOOK, bn.register_forward_pre_hook(_eval_bn))
    return [n for n, _ in model.named_parameters() if n in names]


def unfreeze(model: nn.Module, layers: Sequence[str] = ("*",),
             optimizer: torch.optim.Optimizer | None = None) -> list[str]:
    """Let the parameters under ``layers`` train again (added to ``optimizer``'s first group
    when they are not in it); return the names of those that were frozen."""
    names = _selected(model, layers, "layer")
    released = []
    for name, param in model.named_parameters():
        if name in names and not param.requires_grad:
            param.requires_grad_(True)
            released.append(name)
    for bn in _bn_under(model, names):
        handle = getattr(bn, _HOOK, None)
        if handle is not None:
            handle.remove()
            delattr(bn, _HOOK)
            bn.training = model.training
    if optimizer is not None:
        known = {id(p) for group in optimizer.param_groups for p in group["params"]}
        params = dict(model.named_parameters())
        optimizer.param_groups[0]["params"].extend(
            params[n] for n in released if id(params[n]) not in known)
    return released


def frozen(model: nn.Module) -> list[str]:
    """The names of the parameters that do not train."""
    return [n for n, p in model.named_parameters() if not p.requires_grad]


class FrozenLayers:
    """The schedule service (see :mod:`torchslim.core.steps`) recording what its
    :class:`Freeze` and :class:`Unfreeze` steps left frozen: its state restores exactly that on
    a resumed run, whatever the order of the steps (``requires_grad`` is not in a
    checkpoint)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def state_dict(self) -> dict[str, Any]:
        return {"frozen": frozen(self.model),
                "bn_eval": [n for n, m in self.model.named_modules()
                            if getattr(m, _HOOK, None) is not None]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        names = set(state.get("frozen", []))
        for name, param in self.model.named_parameters():
            param.requires_grad_(name not in names)
        modules = dict(self.model.named_modules())
        for name in state.get("bn_eval", []):
            module = modules.get(name)
            if module is not None and getattr(module, _HOOK, None) is None:
                setattr(module, _HOOK, module.register_forward_pre_hook(_eval_bn))


def _service(ctx: StepContext) -> FrozenLayers:
    return ctx.services.get_or_create("frozen_layers", lambda: FrozenLayers(ctx.model))


class Freeze(Step):
    """Freeze ``layers`` (minus ``exclude``) on the policy's first epoch (see the module
    docstring); a resumed run restores what was frozen (:class:`FrozenLayers`)."""

    kind = "freezer"

    def __init__(self, layers: Sequence[str] = ("*",), *, exclude: Iterable[str] = (),
                 bn_eval: bool = True) -> None:
        self.layers, self.exclude, self.bn_eval = list(layers), list(exclude), bn_eval
        self.done = False

    def attach(self, ctx: StepContext) -> None:
        _service(ctx)

    #: on_epoch_begin leaves what it does in the model, masks, edits or state_dict
    resumes_mid_epoch = True

    def on_epoch_begin(self, ctx: StepContext) -> dict[str, Any] | None:
        if self.done:
            return None
        names = freeze(ctx.model, self.layers, exclude=self.exclude, bn_eval=self.bn_eval)
        self.done = True
        return {"frozen": len(names)}

    def state_dict(self) -> dict[str, Any]:
        return {"done": self.done}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.done = bool(state.get("done", False))


class Unfreeze(Step):
    """Unfreeze ``layers`` on the policy's first epoch, or with ``gradual`` one entry of
    ``layers`` per firing epoch, in order."""

    kind = "freezer"

    def __init__(self, layers: Sequence[str] = ("*",), *, gradual: bool = False) -> None:
        if not layers:
            raise UserError("give the layers to unfreeze (or '*' for all)")
        self.layers, self.gradual = list(layers), gradual
        self.released = 0  # how many entries of layers are unfrozen

    def attach(self, ctx: StepContext) -> None:
        _service(ctx)

    #: on_epoch_begin leaves what it does in the model, masks, edits or state_dict
    resumes_mid_epoch = True

    def on_epoch_begin(self, ctx: StepContext) -> dict[str, Any] | None:
        if self.released >= len(self.layers):
            return None
        chosen = self.layers[self.released:self.released + 1] if self.gradual else self.layers
        names = unfreeze(ctx.model, chosen, ctx.optimizer)
        self.released += len(chosen)
        return {"unfrozen": len(names)}

    def state_dict(self) -> dict[str, Any]:
        return {"released": self.released}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.released = int(state.get("released", 0))
