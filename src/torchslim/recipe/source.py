"""Read a YAML recipe and remember the line of every key, so errors can say ``file:line key.path``.

Example::

    >>> from torchslim.recipe.source import RecipeSource
    >>> src = RecipeSource.from_text("version: 1\\npruners:\\n  p1:\\n    class: X\\n", "r.yaml")
    >>> src.data["pruners"]["p1"]["class"]
    'X'
    >>> src.where(("pruners", "p1", "class"))
    'r.yaml:4 pruners.p1.class'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..core.errors import UserError

Path_ = tuple[str | int, ...]
_TAG = "tag:yaml.org,2002:"


class RecipeError(UserError):
    """A mistake in a recipe, located as ``file:line key.path: what is wrong``."""


def one_line(text: str) -> str:
    """``text`` with line breaks and other unprintable characters escaped (``\\n``), so an error
    stays one line whatever the recipe's keys and values hold."""
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text
    )


def format_path(path: Path_) -> str:
    """``('policies', 0, 'pruner')`` -> ``'policies[0].pruner'``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a value it cannot build (``!!int x``, the date
    ``2020-13-01``) is a YAML error with its line rather than a bare ValueError or IndexError."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (yaml.YAMLError, RecursionError):
            raise
        except Exception:  # PyYAML's constructors trust the tag: `!!int abc` fails in int()
            value = node.value if isinstance(node, yaml.ScalarNode) else node.id
            kind = node.tag.removeprefix(_TAG)
            raise yaml.constructor.ConstructorError(
                None, None, f"{value!r} is not a valid {kind}", node.start_mark
            ) from None


def _key(node: yaml.Node, path: Path_, name: str) -> str | None:
    """The text of a mapping key (None for a merge key ``<<``); a key YAML reads as a number,
    boolean, null or date is an error, since every name in a recipe is text."""
    if not isinstance(node, yaml.ScalarNode) or node.tag == _TAG + "merge":
        return None
    if node.tag != _TAG + "str":
        kind = node.tag.removeprefix(_TAG)
        text = node.value or "null"
        raise RecipeError(one_line(
            f"{name}:{node.start_mark.line + 1} {format_path(path + (text,))}: keys must be "
            f"text, but YAML reads {text!r} as {kind}; put it in quotes if it is a name"
        ))
    return node.value


def _walk(
    node: yaml.Node, path: Path_, lines: dict[Path_, int], name: str, done: set[int],
    notes: list[str],
) -> None:
    if id(node) in done:  # an alias of a node walked already (also keeps alias bombs cheap)
        return
    done.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = _key(key_node, path, name)
            if key is None:
                continue
            line = key_node.start_mark.line + 1
            if key in seen:  # YAML (and Distiller's loader) keep the last: say so, go on
                notes.append(one_line(
                    f"{name}:{line} {format_path(path + (key,))}: duplicate key (first on line "
                    f"{seen[key]}); the last one counts, as in Distiller"
                ))
                # The first one's keys must not answer for the last one's.
                for known in [k for k in lines if k[:len(path) + 1] == path + (key,)]:
                    del lines[known]
            seen[key] = line
            lines[path + (key,)] = line
            _walk(value_node, path + (key,), lines, name, done, notes)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[path + (index,)] = item.start_mark.line + 1
            _walk(item, path + (index,), lines, name, done, notes)


@dataclass
class RecipeSource:
    """The parsed YAML (``data``), its file name and the line of each key path."""

    data: dict[str, Any]
    name: str = "<recipe>"
    lines: dict[Path_, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @classmethod
    def from_text(cls, text: str, name: str = "<recipe>") -> RecipeSource:
        """Parse ``text``; YAML syntax errors become a :class:`RecipeError` with the line."""
        try:
            data = yaml.load(text, Loader=_Loader)
            node = yaml.compose(text, Loader=_Loader)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            line = f":{mark.line + 1}" if mark is not None else ""
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise RecipeError(one_line(f"{name}{line}: not valid YAML: {problem}")) from None
        except RecursionError:
            raise RecipeError(f"{name}: not valid YAML: nested too deeply") from None
        if not isinstance(data, dict):
            kind = "empty" if data is None else f"a {type(data).__name__}"
            raise RecipeError(
                f"{name}:1: a recipe must be a mapping with 'policies' and sections such as "
                f"'pruners', but the file is {kind}"
            )
        lines: dict[Path_, int] = {}
        notes: list[str] = []
        if node is not None:
            _walk(node, (), lines, name, set(), notes)
        return cls(data, name, lines, notes)

    @classmethod
    def from_file(cls, path: str | Path) -> RecipeSource:
        """Read and parse the recipe file at ``path``."""
        path = Path(path)
        if not path.is_file():
            raise UserError(f"recipe file '{path}' not found: check the path given to --recipe")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise RecipeError(f"{path.name}: not a text file (expected YAML)") from None
        return cls.from_text(text, path.name)

    def line(self, path: Path_) -> int | None:
        """The line of ``path``, or of its closest enclosing key that has one."""
        for end in range(len(path), 0, -1):
            if path[:end] in self.lines:
                return self.lines[path[:end]]
        return None

    def where(self, path: Path_) -> str:
        """``file:line key.path`` for error messages."""
        line = self.line(path)
        location = f"{self.name}:{line}" if line is not None else self.name
        return f"{location} {format_path(path)}" if path else location

    def error(self, path: Path_, message: str) -> RecipeError:
        """A :class:`RecipeError` for ``path`` saying ``message``."""
        return RecipeError(one_line(f"{self.where(path)}: {message}"))
