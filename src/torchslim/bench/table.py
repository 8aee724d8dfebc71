"""The benchmark table: one :class:`BenchRow` per model variant, written as Markdown, CSV, JSON.

Example::

    >>> import tempfile
    >>> from torchslim.bench import BenchRow, BenchTable
    >>> row = BenchRow(name="resnet20", top1=91.7, top5=99.7, params=269_722,
    ...                nonzero_params=269_722, macs=40_551_040, sparsity=0.0, file_bytes=1_121_541,
    ...                latency_b1_ms=1.2, latency_bn_ms=80.5, batch_n=256,
    ...                peak_mem_bytes=12_000_000, threads=4)
    >>> table = BenchTable([row], meta={"dataset": "cifar10"})
    >>> sorted(table.write(tempfile.mkdtemp()))
    ['csv', 'json', 'md']
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any

from ..analysis.text import format_bytes, format_columns, format_count
from ..core.errors import UserError
from ..core.fileio import atomic_write_text


@dataclass(kw_only=True)
class BenchRow:
    """One measured model: accuracy (percent), size, MACs, latency, memory. ``None`` = not measured.

    Every field is given by name. ``latency_bn_ms`` is the latency at batch ``batch_n``;
    ``threads`` the torch thread count.

    >>> BenchRow(name="tiny", params=10, nonzero_params=10, macs=100, sparsity=0.0,
    ...          file_bytes=1200, latency_b1_ms=0.1).runtime
    'pytorch'
    """

    name: str
    top1: float | None = None
    top5: float | None = None
    params: int
    nonzero_params: int
    macs: int
    sparsity: float
    file_bytes: int
    latency_b1_ms: float | None = None
    latency_bn_ms: float | None = None
    batch_n: int | None = None
    peak_mem_bytes: int | None = None
    threads: int | None = None
    runtime: str = "pytorch"
    notes: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict keyed by the field names (a stable public contract).

        >>> row = BenchRow(name="m", params=1, nonzero_params=1, macs=1, sparsity=0.0,
        ...                file_bytes=1)
        >>> list(row.to_dict())[:3]
        ['name', 'top1', 'top5']
        """
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchRow:
        """The row back from :meth:`to_dict` output; a missing or unknown key is a UserError.

        >>> BenchRow.from_dict({"name": "m", "colour": "red"})
        Traceback (most recent call last):
        ...
        torchslim.core.errors.UserError: bench row 'm' has unknown fields 'colour'
        """
        known = [f.name for f in fields(cls)]
        required = [f.name for f in fields(cls) if f.default is MISSING]
        name = data.get("name", "?")
        unknown = [key for key in data if key not in known]
        if unknown:
            raise UserError(f"bench row '{name}' has unknown fields {_quoted(unknown)}")
        missing = [key for key in required if key not in data]
        if missing:
            raise UserError(f"bench row '{name}' lacks {_quoted(missing)}")
        return cls(**data)


def _quoted(names: Iterable[str]) -> str:
    return ", ".join(f"'{name}'" for name in names)


def _fixed(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _optional(value: Any, render=str) -> str:
    return "-" if value is None else render(value)


_HEADERS = [
    "name", "top-1 %", "top-5 %", "params", "nonzero", "sparsity %", "MACs", "file",
    "b1 ms", "bN ms", "N", "peak mem", "threads", "runtime", "notes",
]
_LEFT = {0, 13, 14}


class BenchTable:
    """Rows of measurements plus ``meta`` (machine, torch version, threads, dataset, date).

    Add rows by appending to ``rows``; :meth:`from_json` reloads a written table to extend it.

    >>> row = BenchRow(name="m", top1=90.0, params=269_722, nonzero_params=269_722,
    ...                macs=40_551_040, sparsity=0.0, file_bytes=1_100_000, latency_b1_ms=1.234,
    ...                threads=2)
    >>> cells = BenchTable([row]).format_text().splitlines()[2].split()
    >>> cells[:9]
    ['m', '90.00', '-', '269.7', 'K', '269.7', 'K', '0.00', '40.55']
    >>> cells[9:]
    ['M', '1.05', 'MiB', '1.23', '-', '-', '-', '2', 'pytorch']
    """

    def __init__(self, rows: Iterable[BenchRow], meta: dict[str, Any] | None = None) -> None:
        self.rows: list[BenchRow] = list(rows)
        self.meta: dict[str, Any] = dict(meta or {})

    def _cells(self) -> list[list[str]]:
        return [
            [
                row.name,
                _fixed(row.top1),
                _fixed(row.top5),
                format_count(row.params),
                format_count(row.nonzero_params),
                _fixed(row.sparsity),
                format_count(row.macs),
                format_bytes(row.file_bytes),
                _fixed(row.latency_b1_ms),
                _fixed(row.latency_bn_ms),
                _optional(row.batch_n),
                _optional(row.peak_mem_bytes, format_bytes),
                _optional(row.threads),
                row.runtime,
                row.notes,
            ]
            for row in self.rows
        ]

    def format_text(self) -> str:
        """An aligned console table in human units ("269.7 K", "40.55 M", "1.05 MiB")."""
        right = [i for i in range(len(_HEADERS)) if i not in _LEFT]
        lines = format_columns(_HEADERS, self._cells(), right=right)
        return "\n".join([lines[0], "-" * max(len(line) for line in lines), *lines[1:]])

    def to_markdown(self) -> str:
        """A GitHub Markdown table in human units, followed by the ``meta`` entries.

        >>> print(BenchTable([], meta={"dataset": "digits"}).to_markdown().splitlines()[-1])
        - dataset: digits
        """

        def line(cells: list[str]) -> str:
            return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

        align = ["---" if i in _LEFT else "---:" for i in range(len(_HEADERS))]
        lines = [line(_HEADERS), line(align), *(line(cells) for cells in self._cells())]
        if self.meta:
            lines += ["", *(f"- {key}: {value}" for key, value in self.meta.items())]
        return "\n".join(lines)

    def to_csv(self) -> str:
        """CSV with raw numbers; the header is the :class:`BenchRow` field names, None is empty.

        >>> BenchTable([]).to_csv().splitlines()[0].split(",")[:4]
        ['name', 'top1', 'top5', 'params']
        """
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow([f.name for f in fields(BenchRow)])
        for row in self.rows:
            writer.writerow(["" if value is None else value for value in asdict(row).values()])
        return buffer.getvalue()

    def to_json(self) -> str:
        """``{"rows": [...], "meta": {...}}`` as indented JSON (raw numbers)."""
        payload = {"rows": [row.to_dict() for row in self.rows], "meta": self.meta}
        return json.dumps(payload, indent=2) + "\n"

    def write(self, out_dir: str | os.PathLike, stem: str = "bench") -> dict[str, Path]:
        """Write ``<stem>.md``, ``<stem>.csv`` and ``<stem>.json`` atomically into ``out_dir``.

        Returns ``{"md": path, "csv": path, "json": path}``.
        """
        out = Path(out_dir)
        texts = {"md": self.to_markdown() + "\n", "csv": self.to_csv(), "json": self.to_json()}
        return {
            kind: atomic_write_text(out / f"{stem}.{kind}", text) for kind, text in texts.items()
        }

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> BenchTable:
        """Reload a table written by :meth:`write` (its ``.json`` file), e.g. to add rows.

        >>> from torchslim.core.errors import UserError
        >>> try:
        ...     BenchTable.from_json("missing/bench.json")
        ... except UserError as err:
        ...     print(err)
        bench results 'missing/bench.json' not found: check the path
        """
        path = Path(path)
        if not path.is_file():
            raise UserError(f"bench results '{path}' not found: check the path")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise UserError(f"'{path}' is not valid JSON ({err}): give a bench .json file") from err
        if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
            raise UserError(f"'{path}' has no \"rows\" list: give a .json written by bench")
        rows = []
        for index, entry in enumerate(data["rows"]):
            if not isinstance(entry, dict):
                raise UserError(f"'{path}': row {index} is not an object")
            try:
                rows.append(BenchRow.from_dict(entry))
            except UserError as err:
                raise UserError(f"'{path}': {err}") from err
        return cls(rows, meta=data.get("meta") or {})
