"""Human-readable numbers and aligned text columns.

Example::

    >>> from torchslim.analysis.text import format_bytes, format_count
    >>> format_count(269722), format_count(40551040), format_bytes(1100000)
    ('269.7 K', '40.55 M', '1.05 MiB')
"""

from __future__ import annotations

from collections.abc import Sequence

_COUNT_UNITS = (("K", 1e3), ("M", 1e6), ("G", 1e9), ("T", 1e12))
_BYTE_UNITS = (("KiB", 2.0**10), ("MiB", 2.0**20), ("GiB", 2.0**30), ("TiB", 2.0**40))


def _four_digits(value: float) -> str:
    return f"{value:.{3 if abs(value) < 10 else 2 if abs(value) < 100 else 1}f}"


def _two_decimals(value: float) -> str:
    return f"{value:.2f}"


def _scaled(n: float, units, base: float, digits) -> str:
    """``n`` in the first unit whose rounded value stays below ``base`` (else the largest)."""
    for unit, scale in units[:-1]:
        text = digits(n / scale)
        if abs(float(text)) < base:
            return f"{text} {unit}"
    unit, scale = units[-1]
    return f"{digits(n / scale)} {unit}"


def format_count(n: int) -> str:
    """A count with 4 significant digits and a K/M/G/T (powers of 1000) suffix.

    >>> format_count(950), format_count(999_960), format_count(1_234_567_890)
    ('950', '1.000 M', '1.235 G')
    """
    return str(n) if abs(n) < 1000 else _scaled(n, _COUNT_UNITS, 1000, _four_digits)


def format_bytes(n: int) -> str:
    """A byte count with 2 decimals and a KiB/MiB/GiB/TiB (powers of 1024) suffix.

    >>> format_bytes(512), format_bytes(2048), format_bytes(3 * 2**30)
    ('512 B', '2.00 KiB', '3.00 GiB')
    """
    return f"{n} B" if abs(n) < 1024 else _scaled(n, _BYTE_UNITS, 1024, _two_decimals)


def format_columns(
    headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()
) -> list[str]:
    """Pad cells into aligned columns (indices in ``right`` are right-aligned); header first.

    >>> print("\\n".join(format_columns(["name", "n"], [["a", "1"], ["bb", "22"]], right=[1])))
    name   n
    a      1
    bb    22
    """
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        padded = [
            str(cell).rjust(width) if index in right else str(cell).ljust(width)
            for index, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(padded).rstrip()

    return [line(headers), *(line(row) for row in rows)]
