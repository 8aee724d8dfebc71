"""The low-rank package's plug-in module: importing it registers the ``Factorization`` recipe
class and the ``"factorization"`` model edit (see :func:`torchslim.core.registry.load_plugins`)."""

from . import factorize, recipes

__all__ = ["factorize", "recipes"]
