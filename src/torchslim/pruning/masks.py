"""Pruning masks: which weights are held at zero, kept outside the model's ``state_dict``.

A :class:`Masks` object maps parameter names to boolean masks (``True`` = kept). Setting a mask
zeroes the pruned weights at once and installs a gradient hook so they receive no update;
:meth:`Masks.apply` (called after every optimizer step by the compression scheduler) zeroes them
again in case an optimizer moved them anyway. The parameters stay the same ``nn.Parameter``
objects under the same names, so an optimizer built before pruning keeps working, and the model's
``state_dict`` loads into a fresh, unmodified model. The masks themselves are saved with
:meth:`state_dict` (the scheduler puts them in training checkpoints) or recovered from the zeros
of a saved model with :meth:`Masks.from_zeros`. :meth:`remove` drops masks and hooks: the zeros
stay, training may then regrow them. In a compression schedule the masks are the ``"masks"``
service every pruning step shares (:func:`masks_of`): the schedule re-applies them after every
optimizer step and logs their sparsity each epoch.

Example::

    >>> import torch
    >>> from torchslim.pruning import Masks
    >>> model = torch.nn.Linear(4, 2)
    >>> masks = Masks(model)
    >>> masks.set("weight", model.weight.abs() > model.weight.abs().median())
    >>> masks.sparsity("weight")
    0.5
    >>> optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    >>> model(torch.randn(3, 4)).sum().backward(); optimizer.step(); masks.apply()
    >>> int((model.weight == 0).sum())
    4
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..core.errors import UserError, did_you_mean
from ..core.steps import StepContext


class Masks:
    """Boolean keep-masks for named parameters of ``model`` (see the module docstring)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.masks: dict[str, torch.Tensor] = {}
        self._hooks: dict[str, Any] = {}
        # Names as the model had them: a step that wraps layers (quantization puts a layer
        # inside a QuantConv, so 'conv.weight' becomes 'conv.layer.weight') keeps the same
        # parameter objects, which masks and pruners then still find by their first names.
        self._known: dict[str, nn.Parameter] = dict(model.named_parameters(remove_duplicate=False))

    # -- lookup --------------------------------------------------------------------------------
    def _params(self) -> tuple[dict[str, nn.Parameter], set[int]]:
        """The model's parameters by name now, and the ids of all of them."""
        params = dict(self.model.named_parameters(remove_duplicate=False))
        return params, {id(p) for p in params.values()}

    def _find(self, name: str, params: dict[str, nn.Parameter],
              alive: set[int]) -> nn.Parameter | None:
        if name in params:
            self._known[name] = params[name]
            return params[name]
        known = self._known.get(name)
        return known if known is not None and id(known) in alive else None

    def scheduled_name(self, name: str) -> str:
        """``name``, or the name its parameter had when the masks were made if a step has since
        wrapped its layer."""
        if name in self._known:
            return name
        param = dict(self.model.named_parameters(remove_duplicate=False)).get(name)
        return next((k for k, p in self._known.items() if p is param), name)

    def parameter(self, name: str) -> nn.Parameter:
        """The parameter ``name`` of the model (also under the name it had when the masks were
        made, if a step has since wrapped its layer), or a :class:`UserError` naming close
        names."""
        params, alive = self._params()
        found = self._find(name, params, alive)
        if found is None:
            raise UserError(f"the model has no parameter '{name}'{did_you_mean(name, params)}")
        return found

    def __contains__(self, name: str) -> bool:
        return name in self.masks

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.masks[name]

    def __iter__(self):
        return iter(self.masks)

    def __len__(self) -> int:
        return len(self.masks)

    # -- changing masks ------------------------------------------------------------------------
    def set(self, name: str, mask: torch.Tensor) -> None:
        """Keep only the entries of parameter ``name`` where ``mask`` is true; zero the rest now."""
        param = self.parameter(name)
        mask = torch.as_tensor(mask).to(device=param.device, dtype=torch.bool)
        if mask.shape != param.shape:
            raise ValueError(
                f"mask for '{name}' has shape {tuple(mask.shape)}, the parameter "
                f"{tuple(param.shape)}"
            )
        self.masks[name] = mask
        if name not in self._hooks:
            self._hooks[name] = param.register_hook(lambda grad, n=name: grad * self.masks[n])
        with torch.no_grad():
            param.mul_(mask)

    def apply(self) -> None:
        """Zero every masked weight again (after an optimizer step)."""
        params, alive = self._params()
        with torch.no_grad():
            for name, mask in self.masks.items():
                param = self._find(name, params, alive)
                if param is not None:  # None: a step replaced the layer (factorization)
                    param.mul_(mask)

    def remove(self, name: str | None = None) -> None:
        """Forget the mask of ``name`` (all masks when None); the zeros stay in the weights."""
        for key in [name] if name is not None else list(self.masks):
            self.masks.pop(key, None)
            hook = self._hooks.pop(key, None)
            if hook is not None:
                hook.remove()

    # -- reporting -----------------------------------------------------------------------------
    def sparsity(self, name: str) -> float:
        """Fraction of the entries of ``name`` that are pruned (0.0 when it has no mask)."""
        mask = self.masks.get(name)
        if mask is None:
            return 0.0
        return 1.0 - mask.sum().item() / mask.numel()

    def sparsities(self) -> dict[str, float]:
        """The sparsity of every masked parameter, rounded to 6 digits (for logs)."""
        return {name: round(self.sparsity(name), 6) for name in self.masks}

    def overall_sparsity(self) -> float:
        """Pruned fraction over all masked parameters together."""
        total = sum(m.numel() for m in self.masks.values())
        kept = sum(int(m.sum()) for m in self.masks.values())
        return 1.0 - kept / total if total else 0.0

    # -- as a schedule's service ------------------------------------------------------------------
    def on_minibatch_end(self) -> None:
        """The schedule calls this after every optimizer step: pruned weights stay zero."""
        self.apply()

    def epoch_log(self) -> dict[str, Any]:
        """What every epoch of the schedule log shows: each masked weight's sparsity."""
        return {"sparsity": self.sparsities()}

    def finish(self) -> None:
        """Training is over: drop the masks and their gradient hooks (the zeros stay)."""
        self.remove()

    # -- persistence ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        """The masks by parameter name (bool tensors), for checkpoints."""
        return {name: mask.clone() for name, mask in self.masks.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Replace all masks by ``state`` (and zero the weights they prune)."""
        self.remove()
        for name, mask in state.items():
            self.set(name, mask)

    @classmethod
    def from_zeros(cls, model: nn.Module, names: list[str] | None = None) -> Masks:
        """Masks that keep the non-zero entries of ``names`` (default: every weight with a zero)."""
        masks = cls(model)
        for name, param in model.named_parameters():
            if names is None and (param.dim() < 2 or bool((param != 0).all())):
                continue
            if names is None or name in names:
                masks.set(name, param.detach() != 0)
        return masks


def masks_of(ctx: StepContext) -> Masks:
    """The :class:`Masks` every pruning step of a schedule shares (its ``"masks"`` service)."""
    return ctx.services.get_or_create("masks", lambda: Masks(ctx.model))
