"""The quantization package's plug-in module: importing it registers the quantizer recipe
classes and the ``"quantization"`` model edit (see :func:`torchslim.core.registry.load_plugins`)."""

from . import recipes, record

__all__ = ["recipes", "record"]
