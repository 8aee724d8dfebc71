"""The README's Python example is documentation that must keep working."""

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_api_example_runs(capsys):
    example = python_blocks()[0]
    namespace: dict = {}
    exec(compile(example, str(README), "exec"), namespace)
    out = capsys.readouterr().out
    assert "epoch 0: loss" in out and "total: 56,554 params" in out
    assert namespace["trainer"].history[-1]["epoch"] == 4


def test_readme_names_the_two_commands_and_ci_runs_the_test_one():
    text = README.read_text()
    assert "make demo" in text and "make test" in text
    ci = (README.parent / ".ci" / "run").read_text()
    assert "make test" in ci


def test_readme_schedule_example_runs_without_yaml(capsys):
    example = next(block for block in python_blocks() if "CompressionScheduler(model)" in block)
    namespace: dict = {}
    exec(compile(example, str(README), "exec"), namespace)
    schedule, model = namespace["schedule"], namespace["model"]
    assert [entry["fired"] for entry in schedule.log] == [["agp", "lr"]] * 4 + [["lr"]]
    for name in ("features.0.0.weight", "features.1.0.weight", "features.3.0.weight"):
        weight = dict(model.named_parameters())[name]
        assert abs((weight == 0).float().mean().item() - 0.8) <= 0.5 / weight.numel()
    assert "agp: features.3.0.weight sparsity 0.8000" in capsys.readouterr().out
    assert set(namespace["checkpoint"]["schedule"]["services"]["masks"]) == {
        "features.0.0.weight", "features.1.0.weight", "features.3.0.weight"
    }


def test_readme_structured_example_thins_and_reloads(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    example = next(block for block in python_blocks() if "FilterNormPruner(0.5)" in block)
    namespace: dict = {}
    exec(compile(example, str(README), "exec"), namespace)
    out = capsys.readouterr().out
    assert "10248512" in out and "layer3.0.conv2" in out
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(namespace["fresh"].eval()(x), namespace["model"](x))


def test_readme_register_module_example_makes_a_custom_layer_prunable(capsys):
    from torchslim.graph.registry import MODULES

    example = next(block for block in python_blocks() if "register_module(Scale" in block)
    namespace: dict = {}
    try:
        exec(compile(example, str(README), "exec"), namespace)
    finally:
        MODULES.pop(namespace.get("Scale"), None)
    assert "0: 8 channels over 0, 1, 2; prunable" in capsys.readouterr().out


def test_readme_quantization_example_runs(tmp_path, monkeypatch):
    example = next(block for block in python_blocks() if "QuantConfig(" in block)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(example, str(README), "exec"), namespace)
    import onnx

    ops = {node.op_type for node in onnx.load(tmp_path / "r20_int8.onnx").graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert namespace["quantized"] is not namespace["model"]


def test_readme_recipes_validate():
    from torchslim.recipe import parse_recipe

    blocks = re.findall(r"```yaml\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks
    for block in blocks:
        assert parse_recipe(block, "README.md").policies


def test_readme_depth_example_removes_blocks_and_reloads(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    example = next(block for block in python_blocks() if "BlockPruner(target_macs" in block)
    namespace: dict = {}
    exec(compile(example, str(README), "exec"), namespace)
    assert capsys.readouterr().out.split() == ["18", "40551040"]
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(namespace["fresh"].eval()(x), namespace["model"](x))
