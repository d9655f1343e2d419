"""Machine-readable results (``--saliency-json``): the document, its JSON Schema, reading and
writing it (atomically).

The document's shape is ``results.schema.json`` beside this module (version
:data:`SCHEMA_VERSION`); :func:`schema` loads it. Results are sorted so that two runs of the same
specs (with or without ``pytest -n``) give the same ``results`` list, ready to diff.

(No ``from __future__ import annotations`` here: the TypedDicts' ``Required`` keys must be
evaluated for ``__required_keys__`` to be right.)
"""

import datetime as _datetime
import json
import os
import sys
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any, Literal, TypedDict

from typing_extensions import Required

from .._io import json_safe, write_atomic
from ..errors import SaliencyError

Status = Literal["passed", "failed", "warned", "inconclusive", "error"]


class MeasurementResult(TypedDict, total=False):
    """One measurement in a result (``$defs/measurement`` of the schema)."""

    name: Required[str]
    key: str
    value: Required[float | None]
    threshold: Required[str]
    passed: Required[bool]
    interval: float | None
    lower: float | None
    upper: float | None
    samples: int
    inconclusive: bool
    needed_samples: int | None


class WorstRow(TypedDict, total=False):
    """One of the worst examples a Shared Interest or patterns check shows (``worst`` of a
    result): its sample index, label and prediction (class names when the spec names them), its
    scores (None when undefined), its behaviour patterns, and the report's picture of it."""

    index: Required[int]
    label: Required[str | int]
    predicted: Required[str | int]
    iou: Required[float | None]
    gtc: Required[float | None]
    sc: Required[float | None]
    patterns: Required[list[str]]
    thumbnail: str


class OutcomeExtra(TypedDict, total=False):
    """The keys of each kind of check in its item's result (``$defs/result`` of the schema)."""

    decide: Literal["point", "interval"]
    per_sample: dict[str, list[int] | list[float | None]]
    worst: list[WorstRow]
    worst_by: str
    worst_in: str | None
    thumbnail_error: str
    pattern_counts: dict[str, int]
    pattern_fractions: dict[str, float]
    fractions: list[float]
    curves: dict[str, list[float | None]]
    fidelity: dict[str, Any]
    robustness: dict[str, Any]
    region: dict[str, Any]
    against: str
    regions: dict[str, Any]
    drift: dict[str, Any]
    baseline: dict[str, Any]
    sanity: dict[str, Any]
    artifacts: list[str]
    skipped: list[str]
    missed: list[str]


class OutcomeResult(OutcomeExtra, total=False):
    """What a check's outcome gives its item's result: counts, measurements, details and the
    keys of its kind."""

    passed: bool
    samples: Required[int]
    undefined: Required[int]
    measurements: Required[list[MeasurementResult]]
    details: list[str]


class ItemResult(OutcomeResult, total=False):
    """One item's result in ``results`` (``$defs/result`` of the schema)."""

    nodeid: Required[str]
    line: Required[int | None]
    spec: Required[str]
    spec_path: Required[str]
    check: Required[str]
    kind: Required[str | None]
    variant: Required[str]
    method: Required[str | None]
    class_index: Required[int | None]
    slice: dict[str, str] | None
    severity: Required[Literal["fail", "warn"]]
    status: Required[Status]
    message: str
    duration: float
    weights: dict[str, str] | None
    model_source: dict[str, object] | None
    overrides: dict[str, dict[str, str]]


FORMAT = "pytest-saliency-results"
SCHEMA_VERSION = 1
SCHEMA_FILE = "results.schema.json"
STATUSES = ("passed", "failed", "warned", "inconclusive", "error")

# Defaults for keys a result may lack (a spec error has no kind, method or measurements).
_DEFAULTS: dict[str, Any] = {
    "nodeid": "",
    "line": None,
    "spec_path": "",
    "kind": None,
    "variant": "",
    "method": None,
    "class_index": None,
    "severity": "fail",
    "samples": 0,
    "undefined": 0,
    "measurements": [],
    "details": [],
}


class ResultsFileError(SaliencyError, ValueError):
    """A results file that is not JSON, or not a pytest-saliency results document this version reads."""


@cache
def schema() -> dict[str, Any]:
    """The JSON Schema of the results document (draft 2020-12)."""
    from importlib.resources import files

    document: dict[str, Any] = json.loads(files(__package__).joinpath(SCHEMA_FILE).read_text(encoding="utf-8"))
    return document


def result_key(result: dict[str, Any]) -> tuple[Any, ...]:
    """The sort key of a result: spec path, the check's line (checks in spec order), check,
    variant, node id."""
    line = result.get("line")
    text = [str(result.get(key) or "") for key in ("spec_path", "spec", "check", "variant", "nodeid")]
    return (text[0], text[1], line if isinstance(line, int) else 0, *text[2:])


def normalise(result: dict[str, Any]) -> dict[str, Any]:
    """A copy of one item's result with every required key, and JSON-safe values (NaN -> null)."""
    out = {key: value for key, value in _DEFAULTS.items() if key not in result}
    out.update(result)
    safe: dict[str, Any] = json_safe(out)
    return safe


def build_document(
    results: Iterable[dict[str, Any]],
    *,
    artifacts: Iterable[str] = (),
    created: str | None = None,
    overrides: Iterable[str] = (),
) -> dict[str, Any]:
    """The results document (see ``results.schema.json``) for these item results;
    ``overrides``: the run's ``--saliency-set KEY=VALUE`` arguments."""
    from .. import __version__

    rows = sorted((normalise(result) for result in results), key=result_key)
    counts = {status: sum(1 for row in rows if row["status"] == status) for status in STATUSES}
    if not counts["inconclusive"]:  # only runs that decide by interval have any; older readers know four
        del counts["inconclusive"]
    listed = list(dict.fromkeys([*artifacts, *(path for row in rows for path in row.get("artifacts") or [])]))
    generator = {"name": "pytest-saliency", "version": __version__, "python": sys.version.split()[0]}
    try:
        import pytest

        generator["pytest"] = pytest.__version__
    except ImportError:  # pragma: no cover - the CLI runs without pytest only in odd installs
        pass
    return {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "generator": generator,
        "created": created or _datetime.datetime.now(_datetime.timezone.utc).isoformat(timespec="seconds"),
        "summary": {"total": len(rows), **counts},
        "artifacts": listed,
        "overrides": list(overrides),
        "results": rows,
    }


def dumps(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=1, ensure_ascii=False, allow_nan=False) + "\n"


def write_document(path: str | os.PathLike[str], document: dict[str, Any]) -> Path:
    """Write the document as JSON, atomically."""
    return write_atomic(path, dumps(document))


def load_document(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a results file written by ``--saliency-json``; checks the format and version (and the
    schema, when ``jsonschema`` is installed)."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ResultsFileError(f"{path}: cannot read a results file: {error}") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ResultsFileError(f'{path}: not a pytest-saliency results file (no "format": "{FORMAT}")')
    version = document.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ResultsFileError(
            f"{path}: results schema version {version!r}; this pytest-saliency reads version {SCHEMA_VERSION}"
        )
    problems = validation_errors(document)
    if problems:
        raise ResultsFileError(f"{path}: does not match the results schema: {problems[0]}")
    return document


def validation_errors(document: Any) -> list[str]:
    """Schema violations of ``document`` as ``location: message`` lines; [] when ``jsonschema``
    is not installed."""
    try:
        import jsonschema
    except ImportError:
        return []
    validator = jsonschema.Draft202012Validator(schema())
    return [
        f"{'/'.join(map(str, error.absolute_path)) or '(top level)'}: {error.message}"
        for error in sorted(validator.iter_errors(document), key=lambda e: list(map(str, e.absolute_path)))
    ]
