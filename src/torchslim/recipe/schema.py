"""Validate a recipe before anything runs: sections, classes, arguments and policies.

Every mistake becomes one :class:`~torchslim.recipe.source.RecipeError` naming the file, the
line and the key path, with the closest valid names for unknown ones, for example
``agp.yaml:7 pruners.conv_pruner.final_sparsity: must be < 1, got 1.2``.

Example::

    >>> from torchslim.recipe.schema import parse_recipe
    >>> text = '''
    ... version: 1
    ... pruners:
    ...   agp:
    ...     class: AutomatedGradualPruner
    ...     initial_sparsity: 0.05
    ...     final_sparsity: 1.2
    ...     weights: [conv1.weight]
    ... policies:
    ...   - pruner: {instance_name: agp}
    ...     starting_epoch: 0
    ...     ending_epoch: 10
    ...     frequency: 2
    ... '''
    >>> parse_recipe(text, "agp.yaml")
    Traceback (most recent call last):
    ...
    torchslim.recipe.source.RecipeError: agp.yaml:7 pruners.agp.final_sparsity: must be < 1, got 1.2
"""

from __future__ import annotations

import inspect
import json
import reprlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from ..core.config import ClassSpec, Number
from ..core.errors import did_you_mean
from ..schedule import Policy
from ..schedule.lr import lr_scheduler_class
from .classes import class_names, find_class, section_of
from .source import Path_, RecipeSource

SECTIONS = ("pruners", "quantizers", "regularizers", "distillers", "lr_schedulers", "extensions")
POLICY_KINDS = {
    "pruner": "pruners",
    "quantizer": "quantizers",
    "regularizer": "regularizers",
    "distiller": "distillers",
    "lr_scheduler": "lr_schedulers",
    "extension": "extensions",
}
TOP_LEVEL = ("version", *SECTIONS, "distillation", "policies")
TIMING = ("starting_epoch", "ending_epoch", "frequency", "epochs")
#: Distiller's per-policy ``args`` (how masks are applied within an epoch, BatchNorm folding for
#: quantizers): accepted and ignored with a note; torchslim keeps masks on weights and
#: gradients after every optimizer step, and folds BatchNorms as its quantizers say.
POLICY_ARGS = ("keep_mask", "mask_on_forward_only", "mini_batch_pruning_frequency",
               "discard_masks_at_minibatch_end", "use_double_copies", "mask_gradients",
               "fold_batchnorm")


@dataclass
class Instance:
    """One validated entry of a section: its class and its arguments."""

    name: str
    section: str
    spec: ClassSpec
    args: Any
    path: Path_


@dataclass
class PolicyEntry:
    """One validated policy: which instance acts, and when."""

    kind: str
    instance: str
    policy: Policy
    path: Path_


@dataclass
class Recipe:
    """A validated recipe: instances by (section, name), policies in file order, and notes
    (keys accepted but ignored, instances no policy uses)."""

    source: RecipeSource
    instances: dict[tuple[str, str], Instance]
    policies: list[PolicyEntry]
    notes: list[str] = field(default_factory=list)


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 3, 60, 60


def _short(value: Any) -> str:
    text = _REPR.repr(value)  # bounded, even for huge or deeply nested values
    return text if len(text) <= 60 else text[:57] + "..."


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _pydantic_message(error: dict[str, Any], fields: list[str]) -> str:
    kind, ctx, value = error["type"], error.get("ctx", {}), error.get("input")
    if kind == "missing":
        return "required key is missing"
    if kind == "extra_forbidden":
        key = str(error["loc"][-1])
        return f"unknown key{did_you_mean(key, fields)}; valid keys: {', '.join(fields)}"
    bounds = {"less_than": "<", "less_than_equal": "<=", "greater_than": ">",
              "greater_than_equal": ">="}
    if kind in bounds:
        limit = next(iter(ctx.values()))
        return f"must be {bounds[kind]} {_number(limit)}, got {_short(value)}"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}, got {_short(value)}"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    message = error["msg"]
    return f"{message[0].lower()}{message[1:]}, got {_short(value)}"


def validate_args(
    source: RecipeSource, model: type[BaseModel], values: dict[str, Any], path: Path_
) -> BaseModel:
    """``model(**values)``, or a RecipeError at the first invalid key."""
    fields = list(model.model_fields)
    try:
        return model(**values)
    except ValidationError as err:
        errors = err.errors()
        # an unknown key first: a misspelt key also shows up as the real one missing
        first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
        loc = tuple(part for part in first["loc"] if part != "[key]")
        raise source.error(path + loc, _pydantic_message(first, fields)) from None
    except TypeError as err:  # keys that are not strings, e.g. `1: x`
        raise source.error(path, f"invalid arguments: {err}") from None


#: What a recipe may give for each ``torch.optim.lr_scheduler`` argument annotation (torch's
#: own text); an argument with another annotation is left to the probe in :func:`_lr_probe`.
_LR_TYPES: dict[str, Any] = {
    "int": int,
    "float": Number,
    "bool": bool,
    "int | None": int | None,
    "float | list[float]": Number | list[Number],
    "list[float] | float": list[Number] | Number,
    "list[float]": list[Number],
    "list[int]": list[int],
    "Iterable[int]": list[int],
    "Callable[[float], float] | None": None,
}
_STRICT = ConfigDict(strict=True)
_LR_ADAPTERS = {text: TypeAdapter(kind, config=_STRICT) for text, kind in _LR_TYPES.items()}


def _lr_types(source: RecipeSource, params: dict, values: dict[str, Any], path: Path_) -> dict:
    """``values`` checked against torch's annotations (``1e-3`` read as a number), or a
    RecipeError for the first that does not fit."""
    checked = dict(values)
    for key, value in values.items():
        adapter = _LR_ADAPTERS.get(params[key].annotation)
        if adapter is None:
            continue
        try:
            checked[key] = adapter.validate_python(value)
        except ValidationError as err:
            first = err.errors()[0]
            index = tuple(part for part in first["loc"] if isinstance(part, int))
            raise source.error(path + (key, *index), _pydantic_message(first, [])) from None
    return checked


def _lr_probe(source: RecipeSource, name: str, values: dict[str, Any], path: Path_) -> None:
    """Build the scheduler on a throwaway optimizer and step it once, so values torch rejects
    (or that would fail on the first step, like ``step_size: 0``) are errors now."""
    cls = lr_scheduler_class(name)
    probe = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scheduler = cls(probe, **values)
            probe.step()
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                scheduler.step(1.0)
            else:
                scheduler.step()
    except Exception as err:  # anything torch raises here comes from the recipe's values
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise source.error(path, f"invalid arguments for {name}: {message}") from None


def _lr_args(source: RecipeSource, name: str, values: dict[str, Any], path: Path_) -> dict:
    cls = lr_scheduler_class(name)
    params = inspect.signature(cls.__init__).parameters
    allowed = [p for p in params if p not in ("self", "optimizer", "last_epoch", "verbose")]
    for key in values:
        if key not in allowed:
            raise source.error(
                path + (key,),
                f"unknown key{did_you_mean(str(key), allowed)}; {name} takes: {', '.join(allowed)}",
            )
    for key in allowed:
        if params[key].default is inspect.Parameter.empty and key not in values:
            raise source.error(path + (key,), f"required key is missing for {name}")
    values = _lr_types(source, params, values, path)
    _lr_probe(source, name, values, path)
    return values


def _instance(source: RecipeSource, section: str, name: Any, body: Any) -> Instance:
    path: Path_ = (section, name)
    if not isinstance(name, str):
        raise source.error(path, "instance names must be strings")
    if not isinstance(body, dict):
        raise source.error(path, f"must be a mapping with a 'class' key, got {_short(body)}")
    if "class" not in body:
        raise source.error(path, "missing 'class': say which algorithm this instance is")
    class_name = body["class"]
    if not isinstance(class_name, str):
        raise source.error(path + ("class",), f"must be a class name, got {_short(class_name)}")
    spec = find_class(section, class_name)
    if spec is None:
        other = section_of(class_name)
        hint = (
            f"; it belongs under '{other}'"
            if other
            else did_you_mean(class_name, class_names(section))
        )
        raise source.error(path + ("class",), f"unknown {section[:-1]} class '{class_name}'{hint}")
    if spec.unsupported:
        raise source.error(
            path + ("class",),
            f"'{class_name}' is not yet supported by torchslim: {spec.unsupported}",
        )
    values = {k: v for k, v in body.items() if k != "class"}
    if section == "lr_schedulers":
        return Instance(name, section, spec, _lr_args(source, class_name, values, path), path)
    values = {k: v for k, v in values.items() if k not in spec.ignored_keys}
    return Instance(name, section, spec, validate_args(source, spec.args, values, path), path)


def _timing(source: RecipeSource, entry: dict, ref: dict, path: Path_) -> Policy:
    timing = {k: entry[k] for k in TIMING if k in entry}
    nested = {k: ref[k] for k in TIMING if k in ref}
    for key in nested:
        if key in timing:
            raise source.error(path + (key,), "given twice (inside the reference and beside it)")
    timing.update(nested)

    def key_path(key: str) -> Path_:
        return path + ((next(iter(ref_keys)), key) if key in nested else (key,))

    ref_keys = [k for k in entry if k in POLICY_KINDS]
    for key, value in timing.items():
        if key == "epochs":
            ok = isinstance(value, list) and value and all(
                isinstance(e, int) and not isinstance(e, bool) and e >= 0 for e in value
            )
            if not ok:
                raise source.error(
                    key_path(key), f"must be a non-empty list of epochs >= 0, got {_short(value)}"
                )
        elif not isinstance(value, int) or isinstance(value, bool):
            raise source.error(key_path(key), f"must be an integer, got {_short(value)}")
    if "epochs" in timing:
        extra = [k for k in timing if k != "epochs"]
        if extra:
            raise source.error(key_path(extra[0]), "give either 'epochs' or starting/ending epochs")
        return Policy(epochs=tuple(timing["epochs"]))
    if "starting_epoch" not in timing:
        raise source.error(
            path,
            "say when it acts: 'starting_epoch' (with 'ending_epoch', 'frequency') or 'epochs'",
        )
    start, end = timing["starting_epoch"], timing.get("ending_epoch")
    frequency = timing.get("frequency", 1)
    if start < 0:
        raise source.error(key_path("starting_epoch"), f"must be >= 0, got {start}")
    if end is not None and end <= start:
        raise source.error(
            key_path("ending_epoch"), f"must be after starting_epoch ({start}), got {end}"
        )
    if frequency < 1:
        raise source.error(key_path("frequency"), f"must be >= 1, got {frequency}")
    return Policy(starting_epoch=start, ending_epoch=end, frequency=frequency)


def _policy(
    source: RecipeSource, index: int, entry: Any, instances: dict[tuple[str, str], Instance]
) -> PolicyEntry:
    path: Path_ = ("policies", index)
    if not isinstance(entry, dict):
        raise source.error(path, f"a policy must be a mapping, got {_short(entry)}")
    kinds = [k for k in entry if k in POLICY_KINDS]
    unknown = [k for k in entry if k not in POLICY_KINDS and k not in TIMING and k != "args"]
    if unknown:
        valid = [*POLICY_KINDS, *TIMING, "args"]
        raise source.error(
            path + (unknown[0],), f"unknown key{did_you_mean(str(unknown[0]), valid)}"
        )
    if len(kinds) != 1:
        raise source.error(
            path,
            f"a policy names exactly one of {', '.join(POLICY_KINDS)}; found {kinds or 'none'}",
        )
    kind = kinds[0]
    ref = entry[kind]
    if isinstance(ref, str):
        ref = {"instance_name": ref}
    if not isinstance(ref, dict) or "instance_name" not in ref:
        raise source.error(path + (kind,), "must be a mapping with 'instance_name'")
    extra = [k for k in ref if k not in ("instance_name", "args") and k not in TIMING]
    if extra:
        raise source.error(path + (kind, extra[0]),
                           "unknown key; valid keys: instance_name, args")
    for where, holder in ((path, entry), (path + (kind,), ref)):
        args = holder.get("args")
        if args is None:
            continue
        if not isinstance(args, dict):
            raise source.error(where + ("args",), f"must be a mapping, got {_short(args)}")
        for key in args:
            if key not in POLICY_ARGS:
                raise source.error(
                    where + ("args", key),
                    f"unknown policy argument{did_you_mean(str(key), POLICY_ARGS)}; Distiller's "
                    f"are {', '.join(POLICY_ARGS)}"
                )
    name, section = ref["instance_name"], POLICY_KINDS[kind]
    if not isinstance(name, str):
        raise source.error(path + (kind, "instance_name"), f"must be a name, got {_short(name)}")
    if (section, name) not in instances:
        known = [n for (s, n) in instances if s == section]
        elsewhere = [s for (s, n) in instances if n == name]
        hint = (
            f"; '{name}' is in '{elsewhere[0]}', so use '{_kind_of(elsewhere[0])}:'"
            if elsewhere
            else did_you_mean(name, known) or f"; defined {section}: {known or 'none'}"
        )
        raise source.error(
            path + (kind, "instance_name"), f"no {kind} named '{name}' in '{section}'{hint}"
        )
    return PolicyEntry(kind, name, _timing(source, entry, ref, path), path)


def _kind_of(section: str) -> str:
    return next(kind for kind, s in POLICY_KINDS.items() if s == section)


def validate(source: RecipeSource) -> Recipe:
    """Check everything that does not need the model; return the validated :class:`Recipe`."""
    data = source.data
    for key in data:
        if key not in TOP_LEVEL:
            raise source.error(
                (key,), f"unknown section{did_you_mean(str(key), TOP_LEVEL)}; "
                f"valid: {', '.join(TOP_LEVEL)}"
            )
    if "version" in data and (type(data["version"]) is not int or data["version"] != 1):
        raise source.error(("version",), f"only version 1 exists, got {_short(data['version'])}")
    instances: dict[tuple[str, str], Instance] = {}
    for section in SECTIONS:
        body = data.get(section)
        if body is None:
            continue
        if not isinstance(body, dict):
            raise source.error((section,), f"must be a mapping of named instances, got "
                               f"{_short(body)}")
        for name, entry in body.items():
            instances[(section, name)] = _instance(source, section, name, entry)
    policies_data = data.get("policies")
    if policies_data is None:
        hint = ""
        if len(instances) == 1:  # e.g. Distiller's post-training files, used without a schedule
            (section, name), = instances
            hint = (f"; to apply its one instance from the first epoch, add 'policies: "
                    f"[{{{section[:-1]}: {{instance_name: {json.dumps(str(name))}}}, "
                    f"starting_epoch: 0}}]'")
        raise source.error((), "the recipe has no 'policies': nothing would ever run" + hint)
    if not isinstance(policies_data, list):
        raise source.error(("policies",), "must be a list of policies (entries start with '- ')")
    policies = [_policy(source, i, entry, instances) for i, entry in enumerate(policies_data)]
    if "distillation" in data:
        instance, policy = _distillation(source, data["distillation"])
        if (instance.section, instance.name) in instances:
            raise source.error(("distillation",), "a distiller named 'distillation' is also "
                               "defined under 'distillers': rename one of them")
        instances[(instance.section, instance.name)] = instance
        policies.append(policy)
    notes = _notes(source, instances, policies)
    return Recipe(source, instances, policies, notes)


#: Distiller's command-line options for knowledge distillation, as keys of the top-level
#: ``distillation`` mapping; ``kd_start_epoch`` is when the policy starts.
DISTILLER_KD_CLASS = "KnowledgeDistillationPolicy"


def _distillation(source: RecipeSource, body: Any) -> tuple[Instance, PolicyEntry]:
    """The top-level ``distillation:`` mapping (Distiller's ``--kd-*`` options as keys) as a
    ``KnowledgeDistillationPolicy`` instance and its policy from ``kd_start_epoch`` on."""
    path: Path_ = ("distillation",)
    if not isinstance(body, dict):
        raise source.error(path, f"must be a mapping of Distiller's kd_* options (kd_teacher, "
                           f"kd_resume, kd_temp, ...), got {_short(body)}")
    spec = find_class("distillers", DISTILLER_KD_CLASS)
    if spec is None or spec.args is None:
        raise source.error(path, "knowledge distillation is not available in this torchslim")
    start = body.get("kd_start_epoch", 0)
    if not isinstance(start, int) or isinstance(start, bool) or start < 0:
        raise source.error(path + ("kd_start_epoch",), f"must be an epoch >= 0, got "
                           f"{_short(start)}")
    values = {k: v for k, v in body.items() if k != "kd_start_epoch"}
    instance = Instance("distillation", "distillers", spec,
                        validate_args(source, spec.args, values, path), path)
    return instance, PolicyEntry("distiller", "distillation", Policy(starting_epoch=start), path)


def _notes(
    source: RecipeSource, instances: dict[tuple[str, str], Instance], policies: list[PolicyEntry]
) -> list[str]:
    notes = list(source.notes)
    for index, entry in enumerate(source.data.get("policies") or []):
        kind = next((k for k in entry if k in POLICY_KINDS), None)
        ref = entry.get(kind) if kind else None
        for where, holder in ((("policies", index), entry),
                              (("policies", index, kind), ref)):
            if isinstance(holder, dict) and holder.get("args"):
                notes.append(f"{source.where(where + ('args',))}: Distiller's mask options "
                             f"({', '.join(holder['args'])}) are accepted and ignored: torchslim "
                             "keeps pruned weights at zero after every optimizer step")
    used = {(POLICY_KINDS[p.kind], p.instance) for p in policies}
    for key, instance in instances.items():
        if key not in used:
            notes.append(f"{source.where(instance.path)}: defined but no policy uses it")
        body = source.data
        for key in instance.path:  # (section, name), or ("distillation",)
            body = body[key]
        for ignored in instance.spec.ignored_keys:
            if ignored in body:
                notes.append(
                    f"{source.where(instance.path + (ignored,))}: accepted for Distiller "
                    "compatibility and ignored"
                )
    return notes


def parse_recipe(text: str, name: str = "<recipe>") -> Recipe:
    """Validate recipe ``text`` (``name`` is used in error messages)."""
    return validate(RecipeSource.from_text(text, name))


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate the recipe file at ``path``."""
    return validate(RecipeSource.from_file(path))
