import pytest

from torchslim.core.errors import UserError
from torchslim.core.names import match_names, match_parameters
from torchslim.models import create_model

NAMES = ["conv1.weight", "layer1.0.conv1.weight", "layer1.0.conv2.weight",
         "layer2.0.conv1.weight", "layer2.10.conv1.weight", "linear.weight", "linear.bias"]


@pytest.mark.parametrize("pattern,expected", [
    ("linear.weight", ["linear.weight"]),
    ("module.linear.weight", ["linear.weight"]),
    ("layer*.conv1.weight", ["layer1.0.conv1.weight", "layer2.0.conv1.weight",
                             "layer2.10.conv1.weight"]),
    ("layer?.0.conv?.weight", ["layer1.0.conv1.weight", "layer1.0.conv2.weight",
                               "layer2.0.conv1.weight"]),
    (r"layer2\.\d+\.conv1\.weight", ["layer2.0.conv1.weight", "layer2.10.conv1.weight"]),
    (r"module\.linear\..*", ["linear.weight", "linear.bias"]),
    ("linear", []),  # a regex must match the whole name
    ("conv1.weigh", []),
    ("layer[", []),  # neither a valid glob match nor a valid regex
])
def test_match_names(pattern, expected):
    assert match_names(pattern, NAMES) == expected


def test_module_prefix_kept_when_the_model_has_it():
    names = ["module.conv1.weight"]
    assert match_names("module.conv1.weight", names) == names
    assert match_names("conv1.weight", names) == []


def test_match_parameters_on_resnet20_in_model_order():
    model = create_model("cifar_resnet20")
    hits = match_parameters(model, ["layer3.*.conv2.weight", "layer1.0.conv1.weight"])
    assert hits == ["layer1.0.conv1.weight", "layer3.0.conv2.weight", "layer3.1.conv2.weight",
                    "layer3.2.conv2.weight"]


def test_pattern_matching_nothing_names_it_and_suggests():
    with pytest.raises(UserError, match=r"'layer1\.0\.conv3\.weight' matches no parameter.*"
                                        r"did you mean 'layer1\.0\.conv2\.weight'"):
        match_parameters(create_model("cifar_resnet20"), ["layer1.0.conv3.weight"])


def test_patterns_that_break_the_regex_engine_match_nothing():
    names = ["conv.weight"]
    assert match_names("x{99999999999}", names) == []
    assert match_names("[[", names) == []
