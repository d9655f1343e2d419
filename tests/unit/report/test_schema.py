"""results.schema.json is generated from the results' types (pytest_saliency.report.schema).

(No ``from __future__ import annotations``: the TypedDict's ``Required`` keys must be evaluated.)
"""

from typing import Annotated, Literal, TypedDict

from typing_extensions import Required

from pytest_saliency.report import schema as report_schema
from pytest_saliency.report.results import JsonField, JsonValue, schema


def test_the_shipped_schema_is_the_generated_one() -> None:
    """Regenerate with ``python -m pytest_saliency.report.schema --write`` after changing a type."""
    assert report_schema.shipped_path().read_text(encoding="utf-8") == report_schema.dumps(report_schema.generate())
    assert schema() == report_schema.generate()


class Payload(TypedDict, total=False):
    """A new kind's payload."""

    score: Required[Annotated[float | None, JsonField("the score", minimum=0)]]
    mode: Literal["a", "b"] | None
    names: dict[str, list[int]]
    picture: Annotated[str, JsonField(png=True)]


def test_a_payload_type_becomes_a_definition_with_its_fields_facts() -> None:
    definitions: dict[str, JsonValue] = {}
    assert report_schema._schema(list[Payload], definitions) == {"type": "array", "items": {"$ref": "#/$defs/payload"}}
    assert definitions["payload"] == {
        "type": "object",
        "description": "A new kind's payload.",
        "required": ["score"],
        "properties": {
            "score": {"type": ["number", "null"], "description": "the score", "minimum": 0},
            "mode": {"enum": ["a", "b", None]},
            "names": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "integer"}}},
            "picture": {"type": "string", "contentEncoding": "base64", "contentMediaType": "image/png"},
        },
    }


def test_each_kinds_payload_is_typed_in_the_result() -> None:
    result = report_schema.generate()["$defs"]["result"]
    assert isinstance(result, dict)
    properties = result["properties"]
    assert isinstance(properties, dict)
    refs = {key: value.get("$ref") for key, value in properties.items() if isinstance(value, dict)}
    assert refs["fidelity"] == "#/$defs/fidelity_summary" and refs["drift"] == "#/$defs/drift_summary"
    assert refs["sanity"] == "#/$defs/sanity_summary" and refs["baseline"] == "#/$defs/baseline_entry"
    assert refs["robustness"] == "#/$defs/robustness_settings" and refs["region"] == "#/$defs/region_settings"
