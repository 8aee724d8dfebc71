"""The bottom layer every other package may use: errors, atomic file I/O, weight-name matching,
small module helpers, compressed tensor storage, and the plug-in points (registries, the step
protocol) that method packages fill in.

Nothing here imports another torchslim package (``make lint`` checks it).

Example::

    >>> from torchslim.core import UserError, did_you_mean
    >>> did_you_mean("conv1.wieght", ["conv1.weight", "fc.bias"])
    " (did you mean 'conv1.weight'?)"
"""

from .errors import UserError, closest, did_you_mean
from .fileio import atomic_torch_save, atomic_write, atomic_write_text
from .modules import batch_shape, eval_mode, example_input
from .names import match_names, match_parameters

__all__ = [
    "UserError",
    "atomic_torch_save",
    "atomic_write",
    "atomic_write_text",
    "batch_shape",
    "closest",
    "did_you_mean",
    "eval_mode",
    "example_input",
    "match_names",
    "match_parameters",
]
