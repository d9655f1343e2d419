"""Values a spec takes from outside its file: ``${VAR}`` / ``${VAR:-default}`` in its strings, and
``--saliency-set KEY=VALUE`` (``pytest-saliency validate --set``) on the command line.

Both act on the plain YAML data before it is validated, so what they set is checked exactly
like the file's own values; problems with an override are positioned at the option
(``--saliency-set model.weights: ...``) instead of a line of the file. Nothing else is
evaluated: a ``${...}`` is replaced by an environment variable's text, and an override's value
is parsed as one YAML scalar or flow collection (``0.5``, ``interval``, ``[grad, ig]``), else
taken as a plain string (:func:`parse_value`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..errors import Location
from .source import SourceMap

OPTION = "--saliency-set"

_VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")

# Keys whose value is a file path. In the file they are relative to the spec; set on the command
# line, relative to where the command runs ("*" matches any list index).
PATH_KEYS: tuple[Location, ...] = (
    ("model", "weights"),
    ("model", "torchscript"),
    ("data", "npz"),
    ("data", "folder", "images"),
    ("data", "folder", "masks"),
    ("data", "folder", "labels"),
    ("checks", "*", "drift", "against", "weights"),
    ("checks", "*", "drift", "against", "model", "weights"),
    ("checks", "*", "drift", "against", "model", "torchscript"),
)


@dataclass(frozen=True)
class Override:
    """One ``KEY=VALUE`` from the command line: a dotted key into the spec (list items by index,
    ``checks.0.severity``) and the value's YAML text."""

    key: str
    text: str
    option: str = OPTION

    @classmethod
    def parse(cls, argument: str, option: str = OPTION) -> Override:
        """``model.weights=cand.pt`` -> Override; a ValueError says what is wrong."""
        key, equals, text = argument.partition("=")
        key = key.strip()
        if not equals or not key or any(not part for part in key.split(".")):
            raise ValueError(f"{option} expects KEY=VALUE with a dotted KEY (model.weights=cand.pt), got {argument!r}")
        return cls(key, text, option)

    @property
    def location(self) -> Location:
        return tuple(int(part) if part.isdigit() else part for part in self.key.split("."))

    @property
    def origin(self) -> str:
        """Where problems with this override are reported: ``--saliency-set model.weights``."""
        return f"{self.option} {self.key}"

    def __str__(self) -> str:
        return f"{self.key}={self.text}"


@dataclass(frozen=True)
class Problem:
    """A problem found while substituting or overriding: at a location of the file, or at an
    override's ``origin`` when ``origin`` is set."""

    location: Location
    message: str
    origin: str | None = None


def substitute_environment(
    data: object, environment: Mapping[str, str] | None = None
) -> tuple[object, dict[str, dict[str, str]], list[Problem]]:
    """``data`` with ``${VAR}`` and ``${VAR:-default}`` replaced in every string value (as the
    shell does, an empty variable takes the default; a value that is exactly one ``${...}`` is
    read as YAML, like an override (:func:`parse_value`): ``limit: ${N}`` is a number); the
    substitutions made, by dotted key (``{"model.weights": {"value": ..., "from": "${...}"}}``);
    and a problem per variable that is unset and has no default."""
    environment = os.environ if environment is None else environment
    records: dict[str, dict[str, str]] = {}
    problems: list[Problem] = []

    def replace(text: str, location: Location) -> object:
        def one(match: re.Match[str]) -> str:
            name, default = match["name"], match["default"]
            value = environment.get(name)
            if value:
                return value
            if default is not None:
                return default
            if value is None:
                problems.append(
                    Problem(
                        location,
                        f"environment variable {name} is not set (set it, or give a default: ${{{name}:-...}})",
                    )
                )
            return ""

        result = _VARIABLE.sub(one, text)
        if result == text:
            return text
        records[dotted(location)] = {"value": result, "from": text}
        return parse_value(result) if _VARIABLE.fullmatch(text.strip()) else result

    return _map_strings(data, (), replace), records, problems


def _map_strings(data: object, location: Location, function: Callable[[str, Location], object]) -> object:
    if isinstance(data, str):
        return function(data, location)
    if isinstance(data, dict):
        return {key: _map_strings(value, location + (key,), function) for key, value in data.items()}
    if isinstance(data, list):
        return [_map_strings(value, location + (index,), function) for index, value in enumerate(data)]
    return data


def apply_overrides(
    data: object, source: SourceMap, overrides: Sequence[Override], base: Path
) -> tuple[dict[str, dict[str, str]], list[Problem]]:
    """Set each override's value in ``data`` (a mapping, changed in place), creating missing
    mappings on the way; mark the locations it set in ``source.overrides``; make the relative
    paths it sets (:data:`PATH_KEYS`) absolute against ``base``. Returns what was set, by
    dotted key, and the problems."""
    records: dict[str, dict[str, str]] = {}
    problems: list[Problem] = []
    for override in overrides:
        message = _set(data, override.location, parse_value(override.text))
        if message:
            problems.append(Problem(override.location, message, override.origin))
            continue
        source.overrides[override.location] = override.origin
        for location in _paths_under(data, override.location):
            path = _get(data, location)
            if isinstance(path, str) and path and not Path(path).is_absolute():
                _set(data, location, str(base / path))
        shown = _get(data, override.location)
        records[override.key] = {
            "value": shown if isinstance(shown, str) else yaml.safe_dump(shown, default_flow_style=True).strip(),
            "from": f"{override.option} {override}",
        }
    return records, problems


def parse_value(text: str) -> object:
    """A value given as text, read as one YAML scalar or flow collection (``0.5``, ``interval``,
    ``[grad, ig]``); text that is not YAML, or that starts with ``>`` or ``<`` (a threshold such
    as ``>= 0.5``, which YAML would read as a block scalar), is that plain string."""
    text = text.strip()
    if not text or text.startswith((">", "<")):
        return text
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _set(data: object, location: Location, value: object) -> str | None:
    """Put ``value`` at ``location``, making the mappings on the way there; a message when the
    way there is not a mapping or list."""
    node = data
    for depth, part in enumerate(location):
        last = depth == len(location) - 1
        if isinstance(node, dict):
            key = str(part)
            if last:
                node[key] = value
            elif key not in node or node[key] is None:
                node[key] = {}
            node = node[key]
        elif isinstance(node, list) and isinstance(part, int):
            if part >= len(node):
                return f"{dotted(location[:depth])} has {len(node)} items; no item {part}"
            if last:
                node[part] = value
            node = node[part]
        else:
            return f"{dotted(location[:depth]) or 'the spec'} is not a mapping: it has no key {part!r}"
    return None


def _get(data: object, location: Location) -> object:
    node = data
    for part in location:
        if isinstance(node, dict) and str(part) in node:
            node = node[str(part)]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            return None
    return node


def _paths_under(data: object, prefix: Location) -> Iterator[Location]:
    """The locations in ``data`` that hold a path (:data:`PATH_KEYS`) at or below ``prefix``."""
    for pattern in PATH_KEYS:
        for location in _expand(data, pattern, ()):
            if location[: len(prefix)] == prefix:
                yield location


def _expand(node: object, pattern: Location, done: Location) -> Iterator[Location]:
    if not pattern:
        yield done
        return
    head, rest = pattern[0], pattern[1:]
    if head == "*":
        if isinstance(node, list):
            for index, item in enumerate(node):
                yield from _expand(item, rest, done + (index,))
    elif isinstance(node, dict) and head in node:
        yield from _expand(node[head], rest, done + (head,))


def dotted(location: Location) -> str:
    """``("checks", 0, "severity")`` -> ``checks.0.severity``."""
    return ".".join(str(part) for part in location)
