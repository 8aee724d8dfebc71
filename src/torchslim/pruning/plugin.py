"""The pruning package's plug-in module: importing it registers pruning's recipe classes and its
``"thinning"`` model edit (see :func:`torchslim.core.registry.load_plugins`)."""

from . import recipes, thinning

__all__ = ["recipes", "thinning"]
