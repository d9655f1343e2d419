"""``results.schema.json`` generated from the results' types in :mod:`.results`.

Every TypedDict reachable from :class:`~.results.ResultsDocument` becomes one entry of ``$defs``
(its docstring the description, its ``Required`` keys ``required``); a field's
``Annotated[..., JsonField(...)]`` adds its description and bounds. So a new kind's payload type
needs no hand edit of the schema: regenerate the shipped file with

    python -m pytest_saliency.report.schema --write

and ``tests/unit/report/test_schema.py`` checks that the shipped file is the generated one.
"""

from __future__ import annotations

import json
import re
import sys
import types
from pathlib import Path
from typing import Literal, Union, get_args, get_origin, get_type_hints

from typing_extensions import NotRequired, Required, is_typeddict

from .results import (
    SCHEMA_FILE,
    SCHEMA_VERSION,
    ItemResult,
    JsonField,
    JsonValue,
    MeasurementResult,
    ResultsDocument,
    WorstRow,
)

JsonSchema = dict[str, JsonValue]

DEF_NAMES: dict[type, str] = {ItemResult: "result", MeasurementResult: "measurement", WorstRow: "example"}
"""The ``$defs`` names the schema has always used; any other type is its class name in snake case."""

SIMPLE: dict[object, str] = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"}


def generate() -> JsonSchema:
    """The JSON Schema (draft 2020-12) of the results document."""
    definitions: dict[str, JsonValue] = {}
    root = _object(ResultsDocument, definitions)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"urn:pytest-saliency:results:{SCHEMA_VERSION}",
        "title": "pytest-saliency results",
        **root,
        "$defs": dict(sorted(definitions.items())),
    }


def dumps(document: JsonSchema) -> str:
    """The schema as the shipped file holds it."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def _name(typed: type) -> str:
    return DEF_NAMES.get(typed) or re.sub(r"(?<!^)(?=[A-Z])", "_", typed.__name__).lower()


def _described(typed: type) -> str:
    """The first paragraph of a type's docstring, on one line."""
    return " ".join((typed.__doc__ or "").split("\n\n")[0].split())


def _object(typed: type, definitions: dict[str, JsonValue]) -> JsonSchema:
    """A TypedDict as an object schema: its keys' schemas, the required ones listed."""
    hints = get_type_hints(typed, include_extras=True)
    required: set[str] = set(getattr(typed, "__required_keys__", set()))
    schema: JsonSchema = {"type": "object"}
    description = _described(typed)
    if description:
        schema["description"] = description
    schema["required"] = [key for key in hints if key in required]
    schema["properties"] = {key: _schema(hint, definitions) for key, hint in hints.items()}
    return schema


def _schema(hint: object, definitions: dict[str, JsonValue]) -> JsonSchema:
    """The schema of one annotation (see the module doc)."""
    origin, arguments = get_origin(hint), get_args(hint)
    if origin in (Required, NotRequired):
        return _schema(arguments[0], definitions)
    if hasattr(hint, "__metadata__"):  # Annotated[T, JsonField(...)]
        schema = _schema(arguments[0], definitions)
        for field in (item for item in hint.__metadata__ if isinstance(item, JsonField)):
            schema.update(_facts(field))
        return schema
    if hint in SIMPLE:
        return {"type": SIMPLE[hint]}
    if isinstance(hint, type) and is_typeddict(hint):
        name = _name(hint)
        if name not in definitions:
            definitions[name] = {}  # a placeholder while its own fields are made
            definitions[name] = _object(hint, definitions)
        return {"$ref": f"#/$defs/{name}"}
    if origin is Literal:
        values: list[JsonValue] = [value for value in arguments if isinstance(value, str | int | bool)]
        return {"const": values[0]} if len(values) == 1 else {"enum": values}
    if origin is list:
        return {"type": "array", "items": _schema(arguments[0], definitions)}
    if origin is dict:
        return {"type": "object", "additionalProperties": _schema(arguments[1], definitions)}
    if origin in (Union, types.UnionType):
        return _union(arguments, definitions)
    raise TypeError(f"no JSON schema for {hint!r}")


def _union(members: tuple[object, ...], definitions: dict[str, JsonValue]) -> JsonSchema:
    """``str | int | None`` as one ``type`` list; unions with other members as ``anyOf``."""
    if all(member in SIMPLE for member in members):
        return {"type": [SIMPLE[member] for member in members]}
    literal = [member for member in members if get_origin(member) is Literal]
    if len(literal) == 1 and len(members) == 2 and type(None) in members:  # Literal[...] | None
        values: list[JsonValue] = [value for value in get_args(literal[0]) if isinstance(value, str | int | bool)]
        return {"enum": [*values, None]}
    return {"anyOf": [_schema(member, definitions) for member in members]}


def _facts(field: JsonField) -> JsonSchema:
    facts: JsonSchema = {}
    if field.description:
        facts["description"] = field.description
    if field.minimum is not None:
        facts["minimum"] = field.minimum
    if field.pattern is not None:
        facts["pattern"] = field.pattern
    if field.png:
        facts.update({"contentEncoding": "base64", "contentMediaType": "image/png"})
    return facts


def shipped_path() -> Path:
    return Path(__file__).with_name(SCHEMA_FILE)


def main(arguments: list[str]) -> int:
    """Print the generated schema; ``--write``: write it over the shipped file."""
    text = dumps(generate())
    if arguments == ["--write"]:
        shipped_path().write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
