"""YAML with source positions: every mapping key, value and list item maps to (line, column).

Uses a private ``SafeLoader`` subclass (PyYAML is never patched globally), so a spec can only
hold plain data: no tags that construct Python objects.
"""

from __future__ import annotations

import yaml

from ..errors import Location

Position = tuple[int, int]


class _SpecLoader(yaml.SafeLoader):
    """SafeLoader that keeps node marks; no constructors beyond the safe ones."""


class DuplicateKey(ValueError):
    def __init__(self, key: str, position: Position) -> None:
        super().__init__(f"duplicate key {key!r}")
        self.key = key
        self.position = position


class SourceMap:
    """Positions of the values (and keys) of a loaded YAML document, 1-based."""

    def __init__(self) -> None:
        self.values: dict[Location, Position] = {}
        self.keys: dict[Location, Position] = {}
        self.overrides: dict[Location, str] = {}  # locations set on the command line -> the option

    def override(self, location: Location) -> tuple[Location, str] | None:
        """``(where, option)`` when ``location`` or a mapping above it (``where``) was set on the
        command line by ``option`` (``--saliency-set model.weights``), or when ``location`` is not
        in the file and an override below it created it."""
        for depth in range(len(location), -1, -1):
            if location[:depth] in self.overrides:
                return location[:depth], self.overrides[location[:depth]]
        if location not in self.values:  # a mapping an override created on its way
            for where, option in self.overrides.items():
                if where[: len(location)] == location:
                    return where, option
        return None

    def value(self, location: Location) -> Position:
        """Position of the value at ``location``, or of its nearest enclosing value."""
        while location not in self.values and location:
            location = location[:-1]
        return self.values.get(location, (1, 1))

    def key(self, location: Location) -> Position:
        """Position of the key that names ``location`` (falls back to the value's)."""
        return self.keys.get(location) or self.value(location)


def _mark(node: yaml.Node) -> Position:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _walk(node: yaml.Node, location: Location, source: SourceMap) -> None:
    source.values[location] = _mark(node)
    if isinstance(node, yaml.MappingNode):
        seen: set[object] = set()
        for key_node, value_node in node.value:
            key = key_node.value
            if key in seen:
                raise DuplicateKey(key, _mark(key_node))
            seen.add(key)
            source.keys[location + (key,)] = _mark(key_node)
            _walk(value_node, location + (key,), source)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, location + (index,), source)


def load_yaml(text: str) -> tuple[object, SourceMap]:
    """Parse one YAML document into plain data and its :class:`SourceMap`.

    Raises ``yaml.YAMLError`` (with ``problem_mark``) on bad syntax and :class:`DuplicateKey`.
    """
    loader = _SpecLoader(text)
    try:
        node = loader.get_single_node()
        source = SourceMap()
        if node is None:
            return None, source
        _walk(node, (), source)
        return loader.construct_document(node), source
    finally:
        loader.dispose()
