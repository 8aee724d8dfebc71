"""The quantization package's plug-in module: importing it registers the ``"quantization"``
model edit (see :func:`torchslim.core.registry.load_plugins`)."""

from . import record

__all__ = ["record"]
