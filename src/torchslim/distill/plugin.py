"""The distillation package's plug-in module: importing it registers the distiller recipe
classes (see :func:`torchslim.core.registry.load_plugins`)."""

from . import recipes

__all__ = ["recipes"]
