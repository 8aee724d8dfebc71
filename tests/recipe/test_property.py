"""Whatever a recipe file holds, validating it ends in success or one located user error.

Valid recipes (like Distiller's examples) are mutated at random: values replaced by other types,
keys deleted, added or misspelt, numbers pushed out of range. Garbage, random bytes and truncated
YAML are fed too. ``parse_recipe`` and then ``build_scheduler`` on demo_cnn must either succeed or
raise a :class:`~torchslim.core.errors.UserError` whose message is one line starting with the file
name: never any other exception.
"""

from __future__ import annotations

import copy
import math

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from torchslim.core.errors import UserError
from torchslim.models import create_model
from torchslim.recipe import build_scheduler, parse_recipe

AGP_MULTISTEP = {
    "version": 1,
    "pruners": {
        "conv_pruner": {
            "class": "AutomatedGradualPruner",
            "initial_sparsity": 0.05,
            "final_sparsity": 0.8,
            "weights": ["features.0.0.weight", "features.1.0.weight", "features.3.0.weight"],
        },
        "fc_pruner": {
            "class": "AutomatedGradualPruner",
            "initial_sparsity": 0.05,
            "final_sparsity": 0.7,
            "weights": ["classifier.weight"],
        },
    },
    "lr_schedulers": {
        "pruning_lr": {"class": "MultiStepLR", "milestones": [3, 6], "gamma": 0.2},
    },
    "policies": [
        {
            "pruner": {"instance_name": "conv_pruner"},
            "starting_epoch": 0,
            "ending_epoch": 6,
            "frequency": 2,
        },
        {
            "pruner": {"instance_name": "fc_pruner"},
            "starting_epoch": 1,
            "ending_epoch": 6,
            "frequency": 2,
        },
        {
            "lr_scheduler": {"instance_name": "pruning_lr"},
            "starting_epoch": 0,
            "ending_epoch": 10,
            "frequency": 1,
        },
    ],
}
LEVEL_ONCE = {
    "version": 1,
    "pruners": {
        "my_pruner": {
            "class": "LevelParameterPruner",
            "levels": {"features.0.0.weight": 0.5, "features.*.0.weight": 0.7, "*": 0.3},
        },
    },
    "policies": [{"pruner": {"instance_name": "my_pruner"}, "epochs": [0]}],
}
SENSITIVITY = {
    "version": 1,
    "pruners": {
        "my_pruner": {
            "class": "SensitivityPruner",
            "sensitivities": {"features.0.0.weight": 0.25, "classifier.weight": 0.5},
        },
    },
    "regularizers": {
        "l1": {"class": "L1Regularizer", "reg_regims": {"features.1.0.weight": 0.0001}},
    },
    "policies": [
        {"pruner": {"instance_name": "my_pruner"}, "starting_epoch": 0, "ending_epoch": 4,
         "frequency": 2},
        {"regularizer": "l1", "starting_epoch": 0},
    ],
}
BASES = [AGP_MULTISTEP, LEVEL_ONCE, SENSITIVITY]
BASE_TEXTS = [yaml.safe_dump(base, sort_keys=False) for base in BASES]

#: Names a recipe uses, so added and misspelt keys often land on meaningful ones.
KNOWN_KEYS = [
    "version", "pruners", "quantizers", "regularizers", "lr_schedulers", "extensions",
    "distillation", "policies", "class", "instance_name", "pruner", "quantizer", "regularizer",
    "lr_scheduler", "extension", "starting_epoch", "ending_epoch", "frequency", "epochs",
    "initial_sparsity", "final_sparsity", "weights", "levels", "sensitivities", "reg_regims",
    "milestones", "gamma", "scope", "DorefaQuantizer", "MultiStepLR", "features.0.0.weight",
]
OUT_OF_RANGE = [-1, -0.5, 0, 1, 1.0, 1.2, 2, 10**30, -(10**30), 1e300, -1e300, math.nan,
                math.inf, -math.inf, 2**63, 0.999999]

MODEL = create_model("demo_cnn")

keys = st.one_of(st.sampled_from(KNOWN_KEYS), st.text(max_size=12), st.integers(-3, 3))
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),  # nan and +-inf included
    st.text(max_size=20),
    st.sampled_from(KNOWN_KEYS),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=10,
)


def check(text: str) -> None:
    """The property: success, or one line of UserError starting with the file name."""
    try:
        recipe = parse_recipe(text, "bad.yaml")
        build_scheduler(recipe, MODEL)
    except UserError as err:
        message = str(err)
        assert message.startswith("bad.yaml"), message
        assert len(message.splitlines()) == 1, message


def _paths(node, prefix=()):
    """Every path into ``node`` (the root is ``()``)."""
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, (*prefix, index))


def _get(node, path):
    for part in path:
        node = node[part]
    return node


def _mutate(data, recipe: dict) -> dict:
    """One random change to a copy of ``recipe``."""
    recipe = copy.deepcopy(recipe)
    paths = list(_paths(recipe))[1:]  # not the root
    kind = data.draw(st.sampled_from(["replace", "delete", "add", "number", "rename"]))
    if kind == "number":
        numeric = [p for p in paths if type(_get(recipe, p)) in (int, float)]
        paths = numeric or paths
    if kind == "add" or not paths:
        containers = [p for p in [(), *paths] if isinstance(_get(recipe, p), dict | list)]
        path = data.draw(st.sampled_from(containers))
        node = _get(recipe, path)
        if isinstance(node, dict):
            node[data.draw(keys)] = data.draw(values)
        else:
            node.insert(data.draw(st.integers(0, len(node))), data.draw(values))
        return recipe
    path = data.draw(st.sampled_from(paths))
    parent, last = _get(recipe, path[:-1]), path[-1]
    if kind == "delete":
        del parent[last]
    elif kind == "number":
        parent[last] = data.draw(st.sampled_from(OUT_OF_RANGE))
    elif kind == "rename" and isinstance(parent, dict):
        name = str(last)
        cut = data.draw(st.integers(0, max(len(name) - 1, 0)))
        parent[name[:cut] + name[cut + 1:] + data.draw(st.text(max_size=1))] = parent.pop(last)
    else:
        parent[last] = data.draw(values)
    return recipe


def test_bases_are_valid():
    for text in BASE_TEXTS:
        assert build_scheduler(parse_recipe(text, "bad.yaml"), MODEL).entries


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(base=st.sampled_from(BASES), data=st.data())
def test_mutated_recipes_fail_cleanly(base, data):
    recipe = base
    for _ in range(data.draw(st.integers(1, 3))):
        recipe = _mutate(data, recipe)
    check(yaml.safe_dump(recipe, sort_keys=False))


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=200))
def test_garbage_text_fails_cleanly(text):
    check(text)


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=200), encoding=st.sampled_from(["latin-1", "utf-8"]))
def test_random_bytes_fail_cleanly(raw, encoding):
    check(raw.decode(encoding, errors="replace"))


YAML_PIECES = [
    ": ", "- ", "\n", "  ", "{", "}", "[", "]", ", ", "&a ", "*a", "<<: *a", "!!str ", "!!int ",
    "!!float ", "!!bool ", "!!timestamp ", "!!set ", "!!python/object ", "? ", "|\n", ">\n",
    "'", '"', "# c", "---\n", "...\n", "%YAML 1.1\n", "~", "1", "1.5", "1e-3", ".nan", "-.inf",
    "true", "on", "2020-13-01", "0x1F", "1:30", "pruners", "policies", "class", "instance_name",
    "epochs", "levels", "\t",
]


@settings(max_examples=300, deadline=None)
@given(
    base=st.sampled_from(BASE_TEXTS),
    cut=st.floats(0, 1),
    pieces=st.lists(st.sampled_from(YAML_PIECES), max_size=30),
)
def test_truncated_and_spliced_yaml_fails_cleanly(base, cut, pieces):
    head = base[: int(len(base) * cut)]
    check(head)
    check(head + "".join(pieces))

