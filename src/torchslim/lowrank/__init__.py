"""Low-rank factorization and structural conversions: truncated SVD of Linears and
convolutions, Tucker-2, depthwise-separable and grouped forms of convolutions; ranks by kept
energy or by a params/MACs target; recorded as an architecture edit so factorized models reload
into a fresh instance.

Example::

    >>> import torch
    >>> from torchslim.lowrank import factorize
    >>> model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(),
    ...                             torch.nn.Linear(64, 10))
    >>> with torch.no_grad():  # a weight of rank 8
    ...     _ = model[0].weight.copy_(torch.randn(64, 8) @ torch.randn(8, 64))
    >>> x = torch.randn(4, 64)
    >>> before = model(x)
    >>> record = factorize(model, "svd", energy=0.9999, layers=["0"])
    >>> record["layers"]["0"]["rank"], [tuple(m.weight.shape) for m in model[0]]
    (8, [(8, 64), (64, 8)])
    >>> bool((model(x) - before).abs().max() < 1e-3)
    True
"""

from .decompose import (
    depthwise_separable,
    factorized_params,
    group_conv,
    max_rank,
    singular_values,
    svd_conv,
    svd_linear,
    tucker2_conv,
)
from .factorize import (
    METHODS,
    apply_factorization,
    factorize,
    plan_factorization,
    ratio_for_macs,
    select_layers,
)

__all__ = [
    "METHODS",
    "apply_factorization",
    "depthwise_separable",
    "factorize",
    "factorized_params",
    "group_conv",
    "max_rank",
    "plan_factorization",
    "ratio_for_macs",
    "select_layers",
    "singular_values",
    "svd_conv",
    "svd_linear",
    "tucker2_conv",
]
