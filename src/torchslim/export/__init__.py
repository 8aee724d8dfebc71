"""Export and storage of compressed models.

Example::

    >>> from torchslim.export import FORMAT
    >>> FORMAT
    'torchslim.compressed/1'
"""

from ..core.storage import (
    FORMAT,
    decode_state_dict,
    encode_state_dict,
    is_compressed,
    read_compressed,
    save_compressed,
)

__all__ = [
    "FORMAT",
    "decode_state_dict",
    "encode_state_dict",
    "is_compressed",
    "read_compressed",
    "save_compressed",
]
