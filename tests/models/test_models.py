import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

from torchslim.core.errors import UserError
from torchslim.models import (
    create_model,
    extract_state_dict,
    get_model_spec,
    list_models,
    load_weights,
)
from torchslim.models.cifar_resnet import ChannelPadShortcut

PARAMS = {"cifar_resnet20": 269_722, "cifar_resnet32": 464_154, "cifar_resnet44": 658_586,
          "cifar_resnet56": 853_018}


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_cifar_resnet_parameter_counts_and_names(name):
    model = create_model(name)
    assert sum(p.numel() for p in model.parameters()) == PARAMS[name]
    keys = set(model.state_dict())
    assert {"conv1.weight", "bn1.running_mean", "layer1.0.conv1.weight", "layer3.0.bn2.bias",
            "linear.weight", "linear.bias"} <= keys
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_option_a_shortcut_subsamples_and_pads_half_before_half_after():
    x = torch.arange(2 * 16 * 4 * 4, dtype=torch.float32).view(2, 16, 4, 4)
    out = ChannelPadShortcut(16, 32, 2)(x)
    assert out.shape == (2, 32, 2, 2)
    assert torch.equal(out[:, 8:24], x[:, :, ::2, ::2])
    assert out[:, :8].abs().sum() == 0 and out[:, 24:].abs().sum() == 0
    reference = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 8, 8))
    assert torch.equal(out, reference)


def test_zoo_lists_every_builtin_with_input_shape():
    names = {spec.name for spec in list_models()}
    assert {"cifar_resnet20", "cifar_resnet56", "lenet5", "demo_cnn"} <= names
    for spec in list_models():
        model = spec.factory()
        assert model(torch.zeros(2, *spec.input_shape)).shape == (2, 10)


def test_num_classes_is_passed_to_factories():
    assert create_model("cifar_resnet20", num_classes=100).linear.out_features == 100
    assert create_model("demo_cnn", num_classes=3).classifier.out_features == 3


def test_unknown_model_suggests_closest_names():
    with pytest.raises(UserError, match="cifar_resnet20"):
        get_model_spec("cifar_resnet2")


def test_user_factory_by_module_path(tmp_path, monkeypatch):
    (tmp_path / "my_models.py").write_text(textwrap.dedent("""
        import torch.nn as nn
        def tiny(num_classes=10):
            return nn.Sequential(nn.Flatten(), nn.Linear(12, num_classes))
        tiny.input_shape = (3, 2, 2)
        not_callable = 3
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_models", raising=False)
    model = create_model("my_models:tiny", num_classes=4)
    assert model(torch.zeros(1, 3, 2, 2)).shape == (1, 4)
    assert get_model_spec("my_models:tiny").input_shape == (3, 2, 2)
    with pytest.raises(UserError, match="not a callable"):
        create_model("my_models:not_callable")
    with pytest.raises(UserError, match="cannot import module 'no_such_module_xyz'"):
        create_model("no_such_module_xyz:f")


@pytest.mark.parametrize("wrap", ["bare", "state_dict", "model", "dataparallel"])
def test_checkpoint_wrappers_and_module_prefix(tmp_path, wrap):
    source = create_model("demo_cnn")
    state = source.state_dict()
    if wrap == "dataparallel":
        payload = {"best_prec1": 90.0, "state_dict": {f"module.{k}": v for k, v in state.items()}}
    elif wrap == "bare":
        payload = state
    else:
        payload = {wrap: state, "epoch": 3}
    path = tmp_path / "ck.pt"
    torch.save(payload, path)
    target = load_weights(create_model("demo_cnn"), path)
    for key, value in state.items():
        assert torch.equal(target.state_dict()[key], value)


def test_checkpoint_without_batchnorm_step_counter_loads(tmp_path):
    state = {k: v for k, v in create_model("demo_cnn").state_dict().items()
             if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "old.pt")
    load_weights(create_model("demo_cnn"), tmp_path / "old.pt")


def test_wrong_model_names_missing_and_unexpected_keys(tmp_path):
    torch.save({"state_dict": create_model("cifar_resnet32").state_dict()}, tmp_path / "r32.pt")
    with pytest.raises(UserError) as err:
        load_weights(create_model("cifar_resnet20"), tmp_path / "r32.pt", name="cifar_resnet20")
    message = str(err.value)
    assert "unexpected keys" in message and "layer1.3.conv1.weight" in message
    assert "closest: 'layer1.2.conv1.weight'" in message
    assert "\n" not in message


def test_shape_mismatch_is_named(tmp_path):
    torch.save(create_model("cifar_resnet20", num_classes=100).state_dict(), tmp_path / "c.pt")
    with pytest.raises(UserError, match=r"'linear.weight' has shape \(100, 64\)"):
        load_weights(create_model("cifar_resnet20"), tmp_path / "c.pt")


def test_missing_file_and_garbage_file(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_weights(create_model("demo_cnn"), tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"this is not a checkpoint")
    with pytest.raises(UserError, match="not a readable PyTorch checkpoint"):
        load_weights(create_model("demo_cnn"), tmp_path / "junk.pt")


class Payload:
    def __reduce__(self):
        return (print, ("code ran while loading",))


def test_pickled_code_is_refused(tmp_path, capsys):
    torch.save({"state_dict": create_model("demo_cnn").state_dict(), "x": Payload()},
               tmp_path / "evil.pt")
    with pytest.raises(UserError, match="weights_only"):
        load_weights(create_model("demo_cnn"), tmp_path / "evil.pt")
    assert "code ran" not in capsys.readouterr().out


def test_checkpoint_with_no_state_dict():
    with pytest.raises(UserError, match="no state_dict found"):
        extract_state_dict({"epoch": 3, "acc": 0.5})
