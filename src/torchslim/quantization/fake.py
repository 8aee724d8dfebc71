"""Fake quantization: modules that round a tensor to a quantization grid on the forward pass and
let the gradient through (straight-through estimator), so one model calibrates, trains with
quantization (QAT) and exports to int8.

=======================  ===========================================================================
:class:`FakeQuantize`    an observer decides the range (calibration, or running ranges in QAT,
                         updated by training batches only: evaluation leaves them alone);
                         rounding with the core ``torch.fake_quantize_*`` ops (gradient 1 inside the
                         range, 0 outside)
:class:`LSQQuantize`     learned step size (Esser et al. 2020): the scale is a parameter, trained
                         with the gradient of ``torch._fake_quantize_learnable_*`` scaled by
                         ``1 / sqrt(numel * q_max)``; initialised to ``2 mean|x| / sqrt(q_max)``,
                         or from an observer's range on the first batch (LSQ+, Bhalgat et al.
                         2020: an MSE-optimal start helps short low-bit training)
:class:`PACTQuantize`    PACT (Choi et al. 2018): activations clipped to a learned ``[0, alpha]``
                         and quantized there; ``alpha`` learns from the clipped values (with the
                         L2 term of :func:`pact_penalty`)
:class:`DoReFaWeight`    DoReFa-Net weights (Zhou et al. 2016): ``2 q(tanh(w) / (2 max|tanh w|) +
                         0.5) - 1`` with ``q`` rounding to ``2^k - 1`` levels
:class:`ClippedLinear`   DoReFa activations: clipped to ``[0, clip]`` and rounded to ``2^k - 1``
                         levels
:class:`WRPNWeight`      WRPN weights (Mishra et al. 2017, Distiller's ``WRPNQuantizer``): clipped
                         to ``[-1, 1]`` and rounded to ``2^(k-1) - 1`` levels each side of zero
=======================  ===========================================================================

Example::

    >>> import torch
    >>> from torchslim.quantization.fake import FakeQuantize
    >>> quantizer = FakeQuantize.activations()
    >>> _ = quantizer(torch.tensor([0.0, 1.0, 2.55]))     # calibrate: observe only
    >>> quantizer.freeze()                                 # compute scale, quantize from now on
    >>> [round(v, 4) for v in quantizer(torch.tensor([0.004, 1.006])).tolist()]  # scale 0.01
    [0.0, 1.01]
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..core.errors import UserError
from .observers import Observer, SizedOnLoad, make_observer
from .qparams import QuantSpec, fake_quantize


class Quantizer(SizedOnLoad):
    """Base class of the fake quantizers. ``observing`` (collect statistics) and ``quantizing``
    (round on the forward pass) switch the phases; :meth:`freeze` ends observation."""

    def __init__(self, spec: QuantSpec) -> None:
        super().__init__()
        self.spec = spec
        self.observing = True
        self.quantizing = False

    def freeze(self) -> None:
        """Stop observing; quantize from now on with the current parameters."""
        self.observing = False
        self.quantizing = True

    def start(self) -> None:
        """Quantize and keep observing (quantization-aware training)."""
        self.observing = self.observing_allowed()
        self.quantizing = True

    def observing_allowed(self) -> bool:
        """Whether this quantizer has statistics to collect (learned ones have none)."""
        return True

    #: Whether the values it produces lie on an integer grid with a scale and zero point
    #: (DoReFa's weights do not), which int8 runtimes and bias quantization need.
    on_grid = True

    def qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The scale and zero point in use."""
        raise NotImplementedError


class FakeQuantize(Quantizer):
    """Observer-driven fake quantization (see the module docstring)."""

    def __init__(
        self,
        spec: QuantSpec,
        observer: Observer | None = None,
        multiplier: float = 1.0,
        center: str = "zero",
    ) -> None:
        super().__init__(spec)
        self.observer = observer if observer is not None else make_observer("minmax", spec.axis)
        self.multiplier = multiplier
        self.center = center
        self.register_buffer("scale", torch.tensor([]))
        self.register_buffer("zero_point", torch.tensor([], dtype=torch.int32))

    @classmethod
    def activations(cls, observer: str = "minmax", bits: int = 8, signed: bool = False,
                    **kwargs) -> FakeQuantize:
        """Affine per-tensor activations (uint8 unless ``signed``)."""
        spec = QuantSpec.activations(bits, signed)
        return cls(spec, make_observer(observer, None, bits), **kwargs)

    @classmethod
    def weights(cls, observer: str = "minmax", bits: int = 8, per_channel: bool = True,
                **kwargs) -> FakeQuantize:
        """Symmetric signed weights, per output channel unless ``per_channel=False``."""
        spec = QuantSpec.weights(bits, per_channel)
        return cls(spec, make_observer(observer, spec.axis, bits), **kwargs)

    def update(self) -> None:
        """Recompute scale and zero point from the observer."""
        scale, zero = self.observer.qparams(self.spec, self.multiplier, self.center)
        self.scale, self.zero_point = scale.to(self.scale.device), zero.to(self.scale.device)

    def freeze(self) -> None:
        if self.observer.observed:
            self.update()
        super().freeze()

    def qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.scale.numel() == 0:
            self.update()
        return self.scale, self.zero_point

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Calibration (observing, not quantizing) records in any mode; quantization-aware
        # training records training batches only, so that evaluating the model (on the test
        # split, or on the zeros a summary traces) leaves its ranges alone. torch.ao's
        # FakeQuantize records in eval mode too, until disable_observer is applied.
        observe = self.observing and (self.training or not self.quantizing)
        if observe:
            self.observer(x)
        if not self.quantizing:
            return x
        if observe or self.scale.numel() == 0:
            self.update()
        return fake_quantize(x, self.scale, self.zero_point, self.spec)

    def extra_repr(self) -> str:
        return f"{self.spec.describe()}, {type(self.observer).__name__}"


class SharedQuantize(Quantizer):
    """Rounds to the grid of another quantizer (after an op that only moves or selects values,
    so the value is already on it: exact, and the runtime keeps such ops in int8)."""

    def __init__(self, source: Quantizer) -> None:
        super().__init__(source.spec)
        self._source = [source]  # a reference, not a submodule: no second copy in state_dict

    @property
    def source(self) -> Quantizer:
        return self._source[0]

    def qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.source.qparams()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.quantizing or not self.source.quantizing:
            return x
        scale, zero = self.qparams()
        return fake_quantize(x, scale, zero, self.spec)

    def observing_allowed(self) -> bool:
        return False

    def extra_repr(self) -> str:
        return "the grid of its input's quantizer"


class LSQQuantize(Quantizer):
    """Learned step size quantization (see the module docstring); symmetric signed for
    weights, unsigned with zero point 0 for activations after a ReLU."""

    def __init__(self, spec: QuantSpec, channels: int | None = None,
                 init: Observer | None = None) -> None:
        super().__init__(spec)
        size = channels if spec.per_channel else 1
        if spec.per_channel and channels is None:
            raise UserError("per-channel LSQ needs the number of channels")
        self.scale = nn.Parameter(torch.ones(size))
        self.register_buffer("zero_point", torch.zeros(size))
        self.register_buffer("initialised", torch.tensor(False))
        # not a submodule: used once, on the first batch, and not saved
        object.__setattr__(self, "init_observer", init)

    def _initialise(self, x: torch.Tensor) -> None:
        if self.init_observer is not None:  # the step of the observed range on the grid
            self.init_observer.to(x.device)  # not a submodule: .to() on the model skips it
            self.init_observer(x)
            scale, _ = self.init_observer.qparams(self.spec)
            with torch.no_grad():
                self.scale.copy_(scale.reshape(self.scale.shape).clamp(min=1e-8))
            self.initialised.fill_(True)
            object.__setattr__(self, "init_observer", None)
            return
        values = x.detach().abs()
        if self.spec.per_channel:
            dims = [d for d in range(x.dim()) if d != self.spec.axis % x.dim()]
            mean = values.mean(dim=dims)
        else:
            mean = values.mean().reshape(1)
        with torch.no_grad():
            self.scale.copy_((2 * mean / math.sqrt(self.spec.q_max)).clamp(min=1e-8))
        self.initialised.fill_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not bool(self.initialised):
            self._initialise(x)
        if not self.quantizing:
            return x
        if torch.onnx.is_in_onnx_export():  # the learnable op has no ONNX form: its forward
            scale, zero = self.qparams()      # is fake quantization with the learned step
            return fake_quantize(x, scale, zero, self.spec)
        grad_factor = 1.0 / math.sqrt(x.numel() / max(self.scale.numel(), 1) * self.spec.q_max)
        scale = self.scale.abs().clamp(min=1e-8)
        if self.spec.per_channel:
            return torch._fake_quantize_learnable_per_channel_affine(
                x, scale, self.zero_point, self.spec.axis % x.dim(), self.spec.q_min,
                self.spec.q_max, grad_factor,
            )
        return torch._fake_quantize_learnable_per_tensor_affine(
            x, scale, self.zero_point, self.spec.q_min, self.spec.q_max, grad_factor
        )

    def qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        scale = self.scale.detach().abs().clamp(min=1e-8)
        zero = self.zero_point.round().to(torch.int32)
        return (scale, zero) if self.spec.per_channel else (scale.reshape(()), zero.reshape(()))

    def observing_allowed(self) -> bool:
        return False

    def extra_repr(self) -> str:
        start = "" if self.init_observer is None or bool(self.initialised) else (
            f", starts from {type(self.init_observer).__name__}")
        return f"LSQ {self.spec.describe()}{start}"


class PACTQuantize(Quantizer):
    """PACT activations: ``clip(x, 0, alpha)`` quantized on ``[0, alpha]`` (unsigned)."""

    def __init__(self, bits: int = 8, alpha: float = 8.0) -> None:
        super().__init__(QuantSpec(bits))
        self.alpha = nn.Parameter(torch.tensor(float(alpha)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        clipped = torch.where(x < self.alpha, torch.relu(x), self.alpha)
        if not self.quantizing:
            return clipped
        scale, zero = self.qparams()
        return fake_quantize(clipped, scale, zero, self.spec)  # exports narrow grids too

    def qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        alpha = self.alpha.detach().abs().clamp(min=1e-6)
        zero = torch.zeros((), dtype=torch.int32, device=alpha.device)
        return (alpha / self.spec.q_max).reshape(()), zero

    def observing_allowed(self) -> bool:
        return False

    def extra_repr(self) -> str:
        return f"PACT {self.spec.describe()}"


def pact_penalty(model: nn.Module, strength: float) -> torch.Tensor:
    """PACT's L2 term on the clipping levels: ``strength * sum(alpha^2)``."""
    alphas = [m.alpha for m in model.modules() if isinstance(m, PACTQuantize)]
    if not alphas:
        return torch.zeros(())
    return strength * sum(alpha.pow(2) for alpha in alphas)


def _fixed_grid(module: nn.Module, scale: float) -> None:
    """The constant scale and zero point of a fixed grid, as buffers that move with the model
    (to the GPU, say) and stay out of its state_dict."""
    module.register_buffer("grid_scale", torch.tensor(scale), persistent=False)
    module.register_buffer("grid_zero", torch.tensor(0, dtype=torch.int32), persistent=False)


def _round_ste(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.round(x) - x).detach()


class DoReFaWeight(Quantizer):
    """DoReFa-Net weight quantization (see the module docstring); 32 bits = full precision."""

    on_grid = False

    def __init__(self, bits: int = 8) -> None:
        super().__init__(QuantSpec(bits, signed=True, symmetric=True))
        self.levels = 2**bits - 1

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if not self.quantizing:
            return w
        t = torch.tanh(w)
        t = t / (2 * t.abs().max().clamp(min=1e-8)) + 0.5
        return 2 * _round_ste(t * self.levels) / self.levels - 1

    def observing_allowed(self) -> bool:
        return False

    def extra_repr(self) -> str:
        return f"DoReFa weights, {self.spec.bits} bits"


class WRPNWeight(Quantizer):
    """WRPN weight quantization (see the module docstring): ``round(clip(w, -1, 1) n) / n``,
    ``n = 2^(k-1) - 1``, the paper's k-bit grid (sign and k-1 bits of magnitude); the gradient
    passes the rounding unchanged and stops outside ``[-1, 1]``. Distiller's ``WRPNQuantizer``
    uses ``n = (2^k - 1) / 2`` without clamping the integers, which gives ``2^k + 1`` levels
    (17 at 4 bits, up to +-1.07): more than k bits hold.

    >>> q = WRPNWeight(3)
    >>> q.start()
    >>> q(torch.tensor([-2.0, -0.2, 0.1, 0.2, 0.9])).tolist()
    [-1.0, -0.3333333432674408, 0.0, 0.3333333432674408, 1.0]
    """

    def __init__(self, bits: int = 8) -> None:
        # The grid is symmetric with zero point 0 and scale 1 / n: it exports to int8 as is.
        super().__init__(QuantSpec(bits, signed=True, symmetric=True, narrow=True))
        self.levels = 2 ** (bits - 1) - 1
        _fixed_grid(self, 1.0 / self.levels)

    def qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.grid_scale, self.grid_zero

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if not self.quantizing:
            return w
        scale, zero = self.qparams()  # q_min, q_max = -n, n: the clip to [-1, 1] as well
        return fake_quantize(w, scale.to(w.device), zero.to(w.device), self.spec)

    def observing_allowed(self) -> bool:
        return False

    def extra_repr(self) -> str:
        return f"WRPN weights, {self.spec.bits} bits"


class ClippedLinear(Quantizer):
    """DoReFa activations: ``round(clip(x, 0, clip) * n / clip) * clip / n``, ``n = 2^k - 1``."""

    def __init__(self, bits: int = 8, clip: float = 1.0) -> None:
        super().__init__(QuantSpec(bits))
        self.clip = clip
        self.levels = 2**bits - 1
        _fixed_grid(self, clip / self.levels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        clipped = torch.clamp(x, 0.0, self.clip)
        if not self.quantizing:
            return clipped
        return _round_ste(clipped * self.levels / self.clip) * self.clip / self.levels

    def qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.grid_scale, self.grid_zero

    def observing_allowed(self) -> bool:
        return False

    def extra_repr(self) -> str:
        return f"clipped linear [0, {self.clip}], {self.spec.bits} bits"
