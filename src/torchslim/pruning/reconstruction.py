"""Channel pruning with feature-map reconstruction (He et al. 2017, "Channel Pruning for
Accelerating Very Deep Neural Networks"; Distiller's ``FMReconstructionChannelPruner``).

The input channels of a layer are ranked by the L1 norm of the layer's weight slices and the
lowest ``sparsity`` fraction removed (with the filters producing them, once thinned); then the
layer's remaining weights are refitted by least squares so that, on sampled positions of its
input and output feature maps, the smaller layer reproduces the outputs of the full one::

    W' = argmin || Y - X[:, kept] W ||^2

``X`` holds the im2col columns of the layer's input at ``points_per_map`` random output
positions of each image (the inputs themselves for a Linear layer), ``Y`` the layer's outputs
there, bias removed; both are sampled with forward hooks on the first ``collect_batches``
training minibatches of the firing epoch, before anything is pruned, as Distiller does (the same
positions for every image of a minibatch, new ones for each minibatch). The fit fills every kept
input channel; zeros another pruner keeps inside them are restored after it.

Example::

    >>> import torch
    >>> from torchslim.pruning.reconstruction import FeatureMapSampler, reconstruct
    >>> layer = torch.nn.Linear(6, 3)
    >>> sampler = FeatureMapSampler(points_per_map=4)
    >>> sampler.watch({"fc": layer})
    >>> _ = layer(torch.randn(64, 6))
    >>> sampler.unwatch()
    >>> keep = torch.tensor([True, True, True, True, False, False])
    >>> error = reconstruct(layer, keep, *sampler.samples("fc"))
    >>> bool((layer.weight[:, 4:] == 0).all()), error < 1.0
    (True, True)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import UserError
from ..core.steps import StepContext
from .activations import CollectingPruneStep
from .masks import masks_of


class FeatureMapSampler:
    """Samples ``(X, Y)`` pairs of Conv2d (``groups=1``) and Linear layers with forward hooks:
    see the module docstring."""

    def __init__(self, points_per_map: int = 10, seed: int = 0) -> None:
        if points_per_map < 1:
            raise UserError(f"points_per_map must be >= 1, got {points_per_map}")
        self.points = points_per_map
        self.generator = torch.Generator().manual_seed(seed)
        self._handles: list[Any] = []
        self._data: dict[str, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}

    def watch(self, layers: Mapping[str, nn.Module]) -> None:
        """Sample every forward pass of ``layers`` (name -> module) from now on."""
        self.unwatch()
        self._data = {name: ([], []) for name in layers}
        for name, module in layers.items():
            if isinstance(module, nn.Conv2d) and module.groups != 1:
                raise UserError(f"layer '{name}' is a grouped convolution: feature-map "
                                "reconstruction needs groups=1")
            if not isinstance(module, nn.Conv2d | nn.Linear):
                raise UserError(f"layer '{name}' is a {type(module).__name__}: feature-map "
                                "reconstruction works on Conv2d and Linear layers")
            self._handles.append(module.register_forward_hook(self._hook(name)))

    def _hook(self, name: str):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            if torch.is_inference_mode_enabled():  # an evaluation pass: training batches only
                return
            x, y = inputs[0].detach(), output.detach()
            if module.bias is not None:
                shape = [1, -1] + [1] * (y.dim() - 2)
                y = y - module.bias.detach().reshape(shape)
            if isinstance(module, nn.Linear):
                xs, ys = x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])
            else:
                # pad as the layer does ('same', reflect, circular ...), then im2col
                mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
                x = F.pad(x, module._reversed_padding_repeated_twice, mode=mode)
                columns = F.unfold(x, module.kernel_size, module.dilation, 0,
                                   module.stride)  # (N, C*kh*kw, L)
                outputs = y.flatten(2)  # (N, C_out, L)
                picks = torch.randint(0, outputs.shape[2], (self.points,),
                                      generator=self.generator).to(x.device)
                xs = columns[:, :, picks].transpose(1, 2).reshape(-1, columns.shape[1])
                ys = outputs[:, :, picks].transpose(1, 2).reshape(-1, outputs.shape[1])
            self._data[name][0].append(xs.float().cpu())
            self._data[name][1].append(ys.float().cpu())

        return hook

    def samples(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``X`` (rows x input columns) and ``Y`` (rows x outputs) seen for layer ``name``."""
        xs, ys = self._data.get(name, ([], []))
        if not xs:
            raise UserError(f"layer '{name}' saw no data: reconstruction needs training "
                            "minibatches first (collect_batches >= 1)")
        return torch.cat(xs), torch.cat(ys)

    def unwatch(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def clear(self) -> None:
        self._data = {}


def reconstruct(layer: nn.Module, keep: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> float:
    """Refit ``layer``'s weights on its kept input channels (``keep``, a bool per channel) by
    least squares on samples ``x``/``y``; the removed channels' weights become zero. Returns the
    relative squared error of the refitted layer on the samples (see :func:`sample_error`)."""
    weight = layer.weight
    per_channel = x.shape[1] // keep.numel()
    columns = keep.to(torch.bool).cpu().repeat_interleave(per_channel)
    if not columns.any():
        raise UserError("reconstruction needs at least one kept input channel")
    solution = torch.linalg.lstsq(x[:, columns].double(), y.double()).solution  # (kept, out)
    fitted = solution.t().to(weight.dtype)
    with torch.no_grad():
        flat = torch.zeros(weight.shape[0], x.shape[1], dtype=weight.dtype)
        flat[:, columns] = fitted
        weight.copy_(flat.reshape(weight.shape).to(weight.device))
    return sample_error(layer, x, y)


def sample_error(layer: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """``||y - x W^T||^2 / ||y||^2`` for ``layer``'s current weights on samples ``x``/``y``."""
    flat = layer.weight.detach().reshape(layer.weight.shape[0], -1).double().cpu()
    residual = y.double() - x.double() @ flat.t()
    return float(residual.pow(2).sum() / y.double().pow(2).sum().clamp_min(1e-12))


class ReconstructingPruneStep(CollectingPruneStep):
    """Input-channel pruning of ``layers`` (a :class:`CollectingPruneStep`) followed by the
    least-squares refit of their weights on feature maps sampled from the first
    ``collect_batches`` minibatches of the firing epoch (see the module docstring)."""

    def __init__(self, regimes, layers: list[str], collect_batches: int = 32,
                 points_per_map: int = 10, seed: int = 0) -> None:
        super().__init__(regimes, collect_batches=collect_batches)
        self.layers = list(layers)
        self.sampler = FeatureMapSampler(points_per_map, seed)

    def on_epoch_begin(self, ctx: StepContext) -> dict[str, Any]:
        result = super().on_epoch_begin(ctx)
        modules = dict(ctx.model.named_modules())
        self.sampler.watch({name: modules[name] for name in self.layers})
        return result

    def _prune(self, ctx: StepContext) -> None:
        self.sampler.unwatch()
        super()._prune(ctx)
        masks, modules = masks_of(ctx), dict(ctx.model.named_modules())
        errors = {}
        for name in self.layers:
            layer = modules[name]
            weight_name = f"{name}.weight"
            mask = masks[weight_name] if weight_name in masks else None
            if mask is None:
                continue
            keep = mask.flatten(2).any(2).any(0) if mask.dim() > 2 else mask.any(0)
            if bool(keep.all()):
                continue
            samples = self.sampler.samples(name)
            reconstruct(layer, keep, *samples)
            masks.apply()  # finer-grained zeros of another pruner inside the kept channels
            errors[name] = round(sample_error(layer, *samples), 6)
        self.sampler.clear()
        self._result["reconstruction_error"] = errors

    def finish(self) -> None:
        self.sampler.unwatch()
        super().finish()
