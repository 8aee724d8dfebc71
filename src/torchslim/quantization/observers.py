"""Observers: small modules that only collect statistics of the tensors passing through them,
and turn them into a quantization range (torch.ao's observers, one job each).

=================================  ================================================================
:class:`MinMaxObserver`            the smallest and largest value seen
:class:`MovingAverageMinMaxObserver`  an exponential moving average of each batch's min and max
:class:`HistogramObserver`         a histogram of the values; the range is the one that minimises
                                   the expected squared quantization error (clipping + rounding)
                                   for the target grid
:class:`PercentileObserver`        the ``percentile`` and ``100 - percentile`` points of the
                                   histogram (outliers clipped)
:class:`MSEObserver`               the min/max range shrunk by the factor that minimises the mean
                                   squared error of fake-quantizing a sample of the values
=================================  ================================================================

Every observer takes ``axis`` for per-channel statistics (one range per index of that
dimension), except the histogram-based ones, which are per tensor. ``observer(x)`` records and
returns ``x`` unchanged; :meth:`Observer.range` gives ``(lo, hi)`` and :meth:`Observer.qparams`
the scale and zero point for a :class:`~torchslim.quantization.qparams.QuantSpec`.

Example::

    >>> import torch
    >>> from torchslim.quantization.observers import MinMaxObserver
    >>> from torchslim.quantization.qparams import QuantSpec
    >>> observer = MinMaxObserver()
    >>> _ = observer(torch.tensor([-1.0, 0.5])); _ = observer(torch.tensor([3.0]))
    >>> [float(v) for v in observer.range()]
    [-1.0, 3.0]
    >>> round(float(observer.qparams(QuantSpec())[0]), 6)
    0.015686
"""

from __future__ import annotations

import torch
from torch import nn

from ..core.errors import UserError, did_you_mean
from .qparams import QuantSpec, fake_quantize, qparams


def _reduce_dims(x: torch.Tensor, axis: int | None) -> list[int]:
    if axis is None:
        return list(range(x.dim()))
    axis = axis % x.dim()
    return [d for d in range(x.dim()) if d != axis]


class SizedOnLoad(nn.Module):
    """Buffers whose shape is only known once data was seen take the shape of a loaded
    ``state_dict`` (a fresh quantized model reloads a calibrated one)."""

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name, buffer in list(self._buffers.items()):
            key = prefix + name
            if key in state_dict and buffer is not None and buffer.shape != state_dict[key].shape:
                self._buffers[name] = torch.empty_like(state_dict[key], device=buffer.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class Observer(SizedOnLoad):
    """Base class: ``forward`` records, :meth:`range` reports."""

    per_tensor_only = False

    def __init__(self, axis: int | None = None) -> None:
        super().__init__()
        if axis is not None and self.per_tensor_only:
            raise UserError(f"{type(self).__name__} is per tensor: use it without an axis")
        self.axis = axis

    @property
    def observed(self) -> bool:
        """Whether anything was recorded yet."""
        raise NotImplementedError

    def range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(lo, hi)``: scalars, or one value per channel."""
        raise NotImplementedError

    def qparams(
        self, spec: QuantSpec, multiplier: float = 1.0, center: str = "zero"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Scale and zero point of the observed range on ``spec``'s grid."""
        if not self.observed:
            raise UserError(
                f"{type(self).__name__} has seen no data: calibrate on at least one batch first"
            )
        lo, hi = self.range()
        return qparams(lo, hi, spec, multiplier, center)


class MinMaxObserver(Observer):
    """The running minimum and maximum."""

    def __init__(self, axis: int | None = None) -> None:
        super().__init__(axis)
        self.register_buffer("lo", torch.tensor([]))
        self.register_buffer("hi", torch.tensor([]))

    @property
    def observed(self) -> bool:
        return self.lo.numel() > 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values = x.detach().float()
        dims = _reduce_dims(values, self.axis)
        lo, hi = torch.amin(values, dim=dims), torch.amax(values, dim=dims)
        if self.observed:
            lo, hi = torch.minimum(self.lo, lo), torch.maximum(self.hi, hi)
        self.lo, self.hi = lo, hi
        return x

    def range(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.lo, self.hi


class MovingAverageMinMaxObserver(MinMaxObserver):
    """``range = (1 - momentum) * range + momentum * (batch min, batch max)``, starting from the
    first batch's range."""

    def __init__(self, momentum: float = 0.01, axis: int | None = None) -> None:
        super().__init__(axis)
        if not 0 < momentum <= 1:
            raise UserError(f"momentum must be in (0, 1], got {momentum}")
        self.momentum = momentum

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values = x.detach().float()
        dims = _reduce_dims(values, self.axis)
        lo, hi = torch.amin(values, dim=dims), torch.amax(values, dim=dims)
        if self.observed:
            lo = self.lo + self.momentum * (lo - self.lo)
            hi = self.hi + self.momentum * (hi - self.hi)
        self.lo, self.hi = lo, hi
        return x


class HistogramObserver(Observer):
    """A histogram of ``bins`` bins over the range seen so far (re-binned when the range grows).
    The range it reports minimises the expected squared error of quantizing the histogram's
    mass on the target grid: clipping error outside the range plus rounding error
    (``scale^2 / 12`` per value) inside it, searched over candidate ends on the bin edges."""

    per_tensor_only = True

    def __init__(self, bins: int = 2048, bits: int = 8) -> None:
        super().__init__(None)
        self.bins = bins
        self.bits = bits
        self.register_buffer("histogram", torch.zeros(bins, dtype=torch.float64))
        self.register_buffer("lo", torch.tensor([]))
        self.register_buffer("hi", torch.tensor([]))

    @property
    def observed(self) -> bool:
        return self.lo.numel() > 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values = x.detach().float()
        order = sorted(range(values.dim()), key=lambda d: -values.stride(d))
        values = values.permute(order).reshape(-1)  # a view for any dense layout
        lo, hi = values.min(), values.max()
        if not self.observed:
            self.lo, self.hi = lo, torch.maximum(hi, lo + 1e-8)
        elif lo < self.lo or hi > self.hi:
            self._rebin(torch.minimum(lo, self.lo), torch.maximum(hi, self.hi))
        lo, hi = float(self.lo), float(self.hi)
        index = ((values - lo) * (self.bins / (hi - lo))).to(torch.int64).clamp_(0, self.bins - 1)
        self.histogram += torch.bincount(index, minlength=self.bins).double()  # 2x torch.histc
        return x

    def _rebin(self, lo: torch.Tensor, hi: torch.Tensor) -> None:
        """Move the counts into ``bins`` bins over the wider range ``[lo, hi]``."""
        old_edges = torch.linspace(float(self.lo), float(self.hi), self.bins + 1,
                                   device=self.histogram.device)
        centres = (old_edges[:-1] + old_edges[1:]) / 2
        width = (hi - lo) / self.bins
        index = torch.clamp(((centres - lo) / width).long(), 0, self.bins - 1)
        histogram = torch.zeros_like(self.histogram).index_add_(0, index, self.histogram)
        self.histogram, self.lo, self.hi = histogram, lo, hi

    def _edges(self) -> torch.Tensor:
        return torch.linspace(float(self.lo), float(self.hi), self.bins + 1, dtype=torch.float64,
                              device=self.histogram.device)

    def range(self) -> tuple[torch.Tensor, torch.Tensor]:
        edges = self._edges()
        centres = (edges[:-1] + edges[1:]) / 2
        mass = self.histogram
        total = float(mass.sum())
        if total == 0:
            return self.lo, self.hi
        cumulative = torch.cumsum(mass, 0) / total
        # candidate ends: the bin edges where 0 ... 2 % of the mass lies beyond, each side
        steps = torch.linspace(0, 0.02, 41, dtype=torch.float64, device=mass.device)
        starts = torch.unique(torch.searchsorted(cumulative, steps, right=True))
        ends = torch.unique(torch.searchsorted(cumulative, 1 - steps, right=False)) + 1
        starts = starts.clamp(0, self.bins - 1)
        ends = ends.clamp(1, self.bins)
        lo_candidates, hi_candidates = edges[starts], edges[ends]
        lo_grid = torch.minimum(lo_candidates[:, None], torch.tensor(0.0, dtype=torch.float64))
        hi_grid = torch.maximum(hi_candidates[None, :], torch.tensor(0.0, dtype=torch.float64))
        levels = 2**self.bits - 1
        scale = (hi_grid - lo_grid) / levels  # (starts, ends)
        below = torch.clamp(lo_grid[..., None] - centres, min=0)
        above = torch.clamp(centres - hi_grid[..., None], min=0)
        clipping = ((below**2 + above**2) * mass).sum(-1)
        inside = ((centres >= lo_grid[..., None]) & (centres <= hi_grid[..., None])) * mass
        rounding = inside.sum(-1) * scale**2 / 12
        best = torch.argmin(clipping + rounding)
        i, j = divmod(int(best), hi_grid.shape[1])
        return lo_grid[i, 0].float(), hi_grid[0, j].float()


class PercentileObserver(HistogramObserver):
    """The ``100 - percentile`` and ``percentile`` points of the histogram."""

    def __init__(self, percentile: float = 99.99, bins: int = 2048) -> None:
        super().__init__(bins)
        if not 50 < percentile <= 100:
            raise UserError(f"percentile must be in (50, 100], got {percentile}")
        self.percentile = percentile

    def range(self) -> tuple[torch.Tensor, torch.Tensor]:
        edges = self._edges()
        cumulative = torch.cumsum(self.histogram, 0) / self.histogram.sum().clamp(min=1)
        tail = 1 - self.percentile / 100
        points = torch.tensor([tail, 1 - tail], dtype=torch.float64, device=cumulative.device)
        start = int(torch.searchsorted(cumulative, points[:1], right=True))
        end = int(torch.searchsorted(cumulative, points[1:]))
        return edges[min(start, self.bins - 1)].float(), edges[min(end + 1, self.bins)].float()


class MSEObserver(MinMaxObserver):
    """The min/max range scaled by the factor in ``factors`` that minimises the mean squared
    error of fake-quantizing the values seen (a seeded sample of up to ``sample`` values per
    tensor; per channel, the last tensor seen, as for weights)."""

    def __init__(
        self,
        axis: int | None = None,
        bits: int = 8,
        factors: int = 40,
        sample: int = 200_000,
        spec: QuantSpec | None = None,
    ) -> None:
        super().__init__(axis)
        self.spec = spec or (QuantSpec.weights(bits) if axis is not None else QuantSpec(bits))
        if axis is not None:
            self.spec = self.spec.with_(axis=axis)
        self.factors = torch.linspace(0.3, 1.0, factors)
        self.sample = sample
        self._values: torch.Tensor | None = None
        self._generator = torch.Generator().manual_seed(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        super().forward(x)
        values = x.detach().float()
        if self.axis is not None:
            self._values = values
            return x
        flat = values.reshape(-1)
        if flat.numel() > self.sample:
            pick = torch.randint(flat.numel(), (self.sample,), generator=self._generator)
            flat = flat[pick]
        kept = flat if self._values is None else torch.cat([self._values, flat])
        if kept.numel() > self.sample:
            kept = kept[torch.randperm(kept.numel(), generator=self._generator)[: self.sample]]
        self._values = kept
        return x

    def range(self) -> tuple[torch.Tensor, torch.Tensor]:
        lo, hi = self.lo, self.hi
        values = self._values
        if values is None:
            return lo, hi
        best, best_error = (lo, hi), None
        for factor in self.factors:
            scale, zero = qparams(lo * factor, hi * factor, self.spec)
            error = (fake_quantize(values, scale, zero, self.spec) - values).pow(2)
            error = error.mean(dim=_reduce_dims(values, self.axis))
            if best_error is None:
                best, best_error = (lo * factor, hi * factor), error
                continue
            better = error < best_error
            best = (torch.where(better, lo * factor, best[0]), torch.where(better, hi * factor,
                                                                           best[1]))
            best_error = torch.minimum(error, best_error)
        return best


#: Observers by the names recipes and the command line use.
OBSERVERS = {
    "minmax": MinMaxObserver,
    "moving_average": MovingAverageMinMaxObserver,
    "histogram": HistogramObserver,
    "percentile": PercentileObserver,
    "mse": MSEObserver,
}


def make_observer(
    kind: str, axis: int | None = None, bits: int = 8, momentum: float = 0.01,
    spec: QuantSpec | None = None,
) -> Observer:
    """An observer by name (see :data:`OBSERVERS`); histogram-based kinds fall back to min/max
    per channel, where they do not apply. ``spec``: the grid the MSE observer searches on
    (default: int8 weights per channel with ``axis``, uint8 activations without)."""
    if kind not in OBSERVERS:
        raise UserError(f"unknown observer '{kind}'{did_you_mean(kind, OBSERVERS)}: choose one "
                        f"of {', '.join(OBSERVERS)}")
    if kind in ("histogram", "percentile"):
        if axis is not None:
            return MinMaxObserver(axis)
        return HistogramObserver(bits=bits) if kind == "histogram" else PercentileObserver()
    if kind == "mse":
        return MSEObserver(axis, bits, spec=spec)
    if kind == "moving_average":
        return MovingAverageMinMaxObserver(momentum, axis=axis)
    return OBSERVERS[kind](axis=axis)
