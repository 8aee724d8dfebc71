"""torchslim.analysis: summary (params, sparsity, MACs), file size, latency and peak memory."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torchslim.analysis import (
    file_size_bytes,
    measure_latency,
    peak_memory_bytes,
    saved_file_size,
    summarize,
)
from torchslim.core.errors import UserError

# --- a local CIFAR ResNet-20 (He et al. 2015): the reference numbers must come out exactly ---


class _ShortcutA(nn.Module):
    def __init__(self, extra: int) -> None:
        super().__init__()
        self.extra = extra

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::2, ::2]
        return F.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = _ShortcutA(cout - cin) if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class _ResNet20(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        blocks, cin = [], 16
        for stage, width in enumerate((16, 32, 64)):
            for index in range(3):
                blocks.append(_Block(cin, width, 2 if stage and not index else 1))
                cin = width
        self.blocks = nn.Sequential(*blocks)
        self.linear = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.blocks(F.relu(self.bn1(self.conv1(x))))
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


def _toy() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 5)
    )


def test_resnet20_reference_numbers():
    summary = summarize(_ResNet20(), (3, 32, 32))
    assert summary.params == 269_722
    assert summary.macs == 40_551_040
    assert summary.input_shape == (1, 3, 32, 32)
    assert sum(row.macs for row in summary.layers) == summary.macs
    assert sum(row.params for row in summary.layers) == summary.params
    names = [row.name for row in summary.layers]
    assert names[:3] == ["conv1", "bn1", "blocks.0.conv1"] and names[-1] == "linear"
    assert "blocks.3.shortcut" not in names  # parameter-free and no counted MACs
    first = summary.layers[0]
    assert (first.type, first.output_shape, first.macs) == ("Conv2d", [1, 16, 32, 32], 442_368)
    assert "40.55 M" in summary.format_table()


def test_toy_macs_match_the_formula_and_batch_is_kept():
    conv_macs = 4 * 8 * 8 * 3 * 3 * 3  # out channels x out pixels x (in channels x kernel)
    linear_macs = 4 * 8 * 8 * 5
    summary = summarize(_toy(), (2, 3, 8, 8))
    assert summary.input_shape == (2, 3, 8, 8)
    assert summary.macs == 2 * (conv_macs + linear_macs)
    rows = {row.name: row for row in summary.layers}
    assert list(rows) == ["0", "3"]
    assert rows["0"].macs == 2 * conv_macs and rows["3"].macs == 2 * linear_macs
    assert rows["0"].params == 4 * 3 * 3 * 3 + 4 and rows["3"].output_shape == [2, 5]


def test_sparsity_and_nonzero_counts():
    model = _toy()
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[0].bias.fill_(1.0)
        model[3].weight.fill_(1.0)
        model[3].bias.fill_(1.0)
        model[0].weight[:2].zero_()  # 54 of the conv's 112 parameters
    summary = summarize(model, (3, 8, 8))
    rows = {row.name: row for row in summary.layers}
    assert rows["0"].nonzero_params == 112 - 54
    assert rows["0"].sparsity == pytest.approx(100 * 54 / 112)
    assert rows["3"].sparsity == 0.0 and rows["3"].nonzero_params == rows["3"].params
    assert summary.nonzero_params == summary.params - 54
    assert summary.sparsity == pytest.approx(100 * 54 / summary.params)


class _Tied(nn.Module):
    """The same Linear twice (MACs summed) and a bare Parameter on the container."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 6)
        self.alias = self.fc
        self.scale = nn.Parameter(torch.ones(6))
        self.unused = nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.alias(self.fc(x)) * self.scale


def test_shared_parameters_counted_once_and_bare_parameters_kept():
    summary = summarize(_Tied(), (6,))
    assert summary.params == 42 + 6 + 6
    rows = {row.name: row for row in summary.layers}
    assert rows["fc"].macs == 2 * 36 and rows["fc"].params == 42
    assert (rows["(root)"].type, rows["(root)"].params) == ("Parameter", 6)
    assert rows["unused"].output_shape == [] and rows["unused"].macs == 0
    assert [row.name for row in summary.layers] == ["(root)", "fc", "unused"]


def test_modes_restored_and_dict_is_json_ready():
    model = _toy().train()
    model[0].eval()
    summary = summarize(model, (3, 8, 8))
    assert model.training and not model[0].training and model[3].training
    data = json.loads(json.dumps(summary.to_dict()))
    assert set(data) == {"params", "nonzero_params", "macs", "sparsity", "input_shape", "layers"}
    assert set(data["layers"][0]) == {
        "name", "type", "output_shape", "params", "nonzero_params", "sparsity", "macs"
    }
    assert data["input_shape"] == [1, 3, 8, 8]


def test_bad_input_shape_is_a_user_error():
    with pytest.raises(UserError, match="input shape"):
        summarize(_toy(), (3, 0, 8))
    with pytest.raises(UserError, match="cannot run on input shape"):
        summarize(_toy(), (1, 8, 8))


def test_file_sizes(tmp_path):
    model = nn.Linear(100, 100)
    size = file_size_bytes(model)
    assert size > 10_100 * 4
    path = tmp_path / "model.pt"
    torch.save(model.state_dict(), path)
    assert abs(saved_file_size(path) - size) < 200  # the archive's inner folder is the file stem
    with pytest.raises(UserError, match="not found"):
        saved_file_size(tmp_path / "missing.pt")


def test_latency_fields_and_threads_restored():
    before = torch.get_num_threads()
    model = _toy().train()
    result = measure_latency(model, (3, 8, 8), 4, warmup=1, repeats=5, threads=1)
    assert torch.get_num_threads() == before and model.training
    assert (result.batch_size, result.threads, result.repeats) == (4, 1, 5)
    assert 0 < result.min_ms <= result.median_ms <= result.p90_ms


def test_latency_runner_and_min_time():
    shapes = []
    result = measure_latency(
        None, (3, 8, 8), 2, warmup=2, repeats=1, min_time_s=0.01,
        runner=lambda x: shapes.append(tuple(x.shape)),
    )
    assert result.repeats == len(shapes) - 2 and result.repeats >= 1
    assert set(shapes) == {(2, 3, 8, 8)}
    with pytest.raises(UserError, match="threads"):
        measure_latency(_toy(), (3, 8, 8), 1, threads=0)


def test_peak_memory_counts_input_and_weights():
    model = nn.Linear(1000, 1000)
    result = peak_memory_bytes(model, (1000,), 64)
    activation = 64 * 1000 * 4
    assert result.weights_bytes == (1000 * 1000 + 1000) * 4
    assert result.activations_bytes >= 2 * activation  # the input batch and the output
    assert result.total_bytes == result.activations_bytes + result.weights_bytes
