"""torchslim.bench: the benchmark table (text, Markdown, CSV, JSON) and the trade-off plot."""

from __future__ import annotations

import csv
import json
from dataclasses import fields

import pytest

from torchslim.bench import BenchRow, BenchTable, plot_tradeoff
from torchslim.core.errors import UserError


def _rows() -> list[BenchRow]:
    return [
        BenchRow(name="resnet20 dense", top1=91.734, top5=99.71, params=269_722,
                 nonzero_params=269_722, macs=40_551_040, sparsity=0.0, file_bytes=1_100_000,
                 latency_b1_ms=1.23456, latency_bn_ms=80.5, batch_n=256,
                 peak_mem_bytes=3_800_000, threads=2),
        BenchRow(name="resnet20 | pruned", top1=90.9, params=135_000, nonzero_params=120_000,
                 macs=20_000_000, sparsity=11.111, file_bytes=560_000, latency_b1_ms=0.8,
                 runtime="onnxruntime", notes="l1"),
    ]


def _table() -> BenchTable:
    return BenchTable(_rows(), meta={"dataset": "cifar10", "torch": "2.13.0", "threads": 2})


def test_field_names_are_stable():
    assert [f.name for f in fields(BenchRow)] == [
        "name", "top1", "top5", "params", "nonzero_params", "macs", "sparsity", "file_bytes",
        "latency_b1_ms", "latency_bn_ms", "batch_n", "peak_mem_bytes", "threads", "runtime",
        "notes",
    ]
    assert list(_rows()[0].to_dict()) == [f.name for f in fields(BenchRow)]


def test_text_and_markdown_have_rows_in_human_units():
    text, markdown = _table().format_text(), _table().to_markdown()
    for rendered in (text, markdown):
        for expected in ("resnet20 dense", "91.73", "99.71", "269.7 K", "40.55 M", "1.05 MiB",
                         "1.23", "80.50", "3.62 MiB", "120.0 K", "11.11", "546.88 KiB",
                         "onnxruntime", "l1"):
            assert expected in rendered, (expected, rendered)
    assert "resnet20 | pruned" in text and "resnet20 \\| pruned" in markdown
    assert "- dataset: cifar10" in markdown


def test_none_renders_as_dash():
    line = _table().format_text().splitlines()[3].split()
    # top-5, bN ms, N, peak mem, threads of the second row are not measured
    assert line[line.index("90.90") + 1] == "-"
    assert line.count("-") == 5
    cells = [c.strip() for c in _table().to_markdown().splitlines()[3].split(" | ")]
    assert cells.count("-") == 5


def test_csv_round_trips_raw_numbers(tmp_path):
    paths = _table().write(tmp_path)
    assert set(paths) == {"md", "csv", "json"}
    assert all(p.parent == tmp_path and p.stem == "bench" for p in paths.values())
    with paths["csv"].open(newline="") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == [f.name for f in fields(BenchRow)]
        read = list(reader)
    for row, original in zip(read, _rows(), strict=True):
        for field in fields(BenchRow):
            value = getattr(original, field.name)
            if value is None:
                assert row[field.name] == ""
            elif isinstance(value, str):
                assert row[field.name] == value
            else:
                assert type(value)(row[field.name]) == value


def test_json_round_trips_via_from_json(tmp_path):
    paths = _table().write(tmp_path, stem="run1")
    assert paths["json"].name == "run1.json"
    payload = json.loads(paths["json"].read_text())
    assert payload["meta"]["dataset"] == "cifar10" and len(payload["rows"]) == 2
    reloaded = BenchTable.from_json(paths["json"])
    assert reloaded.rows == _rows() and reloaded.meta == _table().meta
    reloaded.rows.append(_rows()[0])
    assert len(BenchTable.from_json(reloaded.write(tmp_path)["json"]).rows) == 3


def test_from_json_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        BenchTable.from_json(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        BenchTable.from_json(bad)
    bad.write_text(json.dumps({"rows": [{"name": "x", "params": 1}]}))
    with pytest.raises(UserError, match="lacks 'nonzero_params', 'macs'"):
        BenchTable.from_json(bad)


def test_plot_writes_a_png(tmp_path):
    path = plot_tradeoff(_table(), tmp_path / "plots" / "tradeoff.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_tradeoff(_table(), tmp_path / "p.png", x="latency_b1_ms").stat().st_size > 0
    with pytest.raises(UserError, match="did you mean 'macs'"):
        plot_tradeoff(_table(), tmp_path / "x.png", x="mac")
    with pytest.raises(UserError, match="nothing to plot"):
        plot_tradeoff(BenchTable(_rows()[1:]), tmp_path / "x.png", x="peak_mem_bytes")
    assert not (tmp_path / "x.png").exists()
