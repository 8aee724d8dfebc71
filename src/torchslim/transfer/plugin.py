"""The transfer package's plug-in module: importing it registers the ``Freeze``/``Unfreeze``
recipe classes and the ``"head"`` model edit (see :func:`torchslim.core.registry.load_plugins`)."""

from . import head, recipes

__all__ = ["head", "recipes"]
