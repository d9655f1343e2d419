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
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Annotated, Final, Literal, TypeAlias, TypedDict, cast

from typing_extensions import Required

from .._io import json_safe, write_atomic
from ..errors import SaliencyError

Status = Literal["passed", "failed", "warned", "inconclusive", "error"]


@dataclass(frozen=True)
class JsonField:
    """What the results schema says of a field beyond its type (``Annotated[int, JsonField(...)]``;
    :mod:`.schema` writes it): a description, a lower bound, a pattern, or that it is a base64 PNG."""

    description: str = ""
    minimum: int | None = None
    pattern: str | None = None
    png: bool = False


class MeasurementResult(TypedDict, total=False):
    """One measurement in a result (``$defs/measurement`` of the schema)."""

    name: Required[
        Annotated[
            str,
            JsonField(
                "What is measured, as shown, e.g. `iou.mean`, `fraction distractor`, `gap (AUC LIF - AUC MIF)`, `max |shift|`."
            ),
        ]
    ]
    key: Annotated[
        str,
        JsonField(
            "The measurement as a program matches it: the name up to ` (`, lower case, other characters as `_`, e.g. `iou.mean`, `fraction_distractor`, `gap`, `max_shift`."
        ),
    ]
    value: Required[float | None]
    threshold: Required[Annotated[str, JsonField("One comparison, e.g. `>= 0.5`.")]]
    passed: Required[bool]
    interval: Annotated[
        float | None,
        JsonField("Half-width of a 95 % interval, when known: (upper - lower) / 2, shown as `value ± interval`."),
    ]
    lower: Annotated[float | None, JsonField("Lower bound of the 95 % interval (null: fewer than two samples).")]
    upper: Annotated[float | None, JsonField("Upper bound of the 95 % interval.")]
    samples: Annotated[int, JsonField("How many samples the value is measured on.", minimum=0)]
    inconclusive: Annotated[bool, JsonField("Under `decide: interval`: the interval straddles the threshold.")]
    needed_samples: Annotated[
        int | None,
        JsonField(
            "Roughly how many samples would likely make an inconclusive measurement conclusive (null: none would).",
            minimum=1,
        ),
    ]


class WorstRow(TypedDict, total=False):
    """One of a check's worst examples."""

    index: Required[Annotated[int, JsonField("The sample's index in the spec's data.", minimum=0)]]
    label: Required[str | int]
    predicted: Required[str | int]
    iou: Required[float | None]
    gtc: Required[float | None]
    sc: Required[float | None]
    patterns: Required[list[str]]
    thumbnail: Annotated[
        str, JsonField("Panels: image, saliency overlay, ground-truth outline, binarised region.", png=True)
    ]


# --- each kind's payload ------------------------------------------------------------------------


PerSample = dict[str, list[int] | list[float | None]]
"""Every selected sample's scores (null = undefined), aligned with ``index``."""


class FidelityOrder(TypedDict):
    """One order's curves: mean AUC and its 95 % half-width, mean curve, per-sample AUCs."""

    mean_auc: float | None
    auc_interval: float | None
    mean_curve: list[float | None]
    auc: list[float | None]
    n: Annotated[int, JsonField("Samples with a defined curve.", minimum=0)]


class FidelitySummary(TypedDict, total=False):
    """fidelity: the full curve summary (score, fill, unit, per-order mean AUC and interval, mean
    curve and per-sample AUCs, gap); ``FidelityResult.to_dict`` in ``metrics/fidelity.py``."""

    score: Required[Annotated[str, JsonField("probability, logit or accuracy.")]]
    fill: Required[Annotated[str, JsonField("zeros, mean, blur, uniform or noisy_linear.")]]
    unit: Required[Annotated[int, JsonField("Side of a unit (patch) in pixels.", minimum=1)]]
    n_units: Required[Annotated[int, JsonField(minimum=0)]]
    fractions: Required[list[float | None]]
    counts: Required[Annotated[list[int], JsonField("Units removed at each fraction.")]]
    n: Required[Annotated[int, JsonField(minimum=0)]]
    n_undefined: Required[Annotated[int, JsonField(minimum=0)]]
    orders: Required[dict[str, FidelityOrder]]
    gap: Annotated[float | None, JsonField("mean AUC(LIF) - mean AUC(MIF), with both orders.")]
    gap_interval: float | None


class RobustnessSettings(TypedDict):
    """The perturbation settings a robustness check's scores were computed with."""

    perturb_radius: float
    n_perturb_samples: Annotated[int, JsonField(minimum=1)]
    norm_ord: Literal["fro", "inf"]
    noise_std: float
    normalize: bool


class RegionSettings(TypedDict):
    """A region check's method and its named mask or box."""

    method: Literal["contextual_decomposition", "occlusion"]
    mask: str | None
    box: Annotated[list[int] | None, JsonField("[top, left, bottom, right], end exclusive.")]


class ClusterSummary(TypedDict, total=False):
    """One drift cluster: its kept segments, its shares under A and B and their shift."""

    cluster: Required[int]
    count: Required[Annotated[int, JsonField(minimum=0)]]
    share_a: Required[float | None]
    share_b: Required[float | None]
    shift: Required[float | None]
    mean_share_a: Required[float | None]
    mean_share_b: Required[float | None]
    representatives: Annotated[list[list[int]], JsonField("`[image, segment]` pairs nearest the cluster's centre.")]
    crops: Annotated[list[str], JsonField("The first representatives' segments.", png=True)]


class ShiftSummary(TypedDict):
    """The shares of every drift cluster under A and B and their largest and mean ``|shift|``."""

    num_images: int
    max_abs_shift: float | None
    mean_abs_shift: float | None
    clusters: list[ClusterSummary]


class RankCorrelation(TypedDict):
    """The per-image segment rank correlation of A and B: mean, median, min, images left out."""

    mean: float | None
    median: float | None
    min: float | None
    undefined: int


class SegmentGrid(TypedDict, total=False):
    """How images were cut into segments: a ``patch`` grid, or ``custom`` segments."""

    patch: int
    custom: bool


class EmbeddingSettings(TypedDict):
    """How kept segments were embedded: ``kind`` and the layer (null: the last Conv2d)."""

    kind: Literal["activations", "colour_texture"]
    layer: str | None


class DriftSettings(TypedDict, total=False):
    """The settings a drift result was computed with."""

    segments: SegmentGrid
    keep: int
    clusters: int
    seed: int
    segments_from: str
    embedding: Annotated[
        EmbeddingSettings | str, JsonField("The check's embedding, or how a caller of the metric gave it.")
    ]


class DriftSummary(ShiftSummary, total=False):
    """drift: the cluster summary, the segment rank correlation and the settings; ``DriftResult.to_dict``
    in ``metrics/drift/result.py``."""

    segments_kept: Required[int]
    undefined_a: Required[int]
    undefined_b: Required[int]
    inertia: Required[float | None]
    rank_correlation: Required[RankCorrelation]
    settings: Required[DriftSettings]


class DriftRegion(TypedDict, total=False):
    """A named mask's kept segments in a drift check: the cluster holding most of them (not for
    ``ground_truth``) and their shares under A and B (none when no kept segment lies on it)."""

    segments: Required[Annotated[int, JsonField(minimum=0)]]
    cluster: int
    fraction: float
    per_cluster: list[int]
    share_a: float
    share_b: float


class BaselineEntry(TypedDict, total=False):
    """A stored drift snapshot as the run used it: name, folder, path, what the run did to it
    (``compared``, ``created``, ``updated``, ``unchanged``), the folder's snapshots no check
    names, and the obtained summary written on a mismatch."""

    name: Required[str]
    folder: Required[str]
    path: Required[str]
    action: Required[Annotated[str, JsonField("compared, created, updated or unchanged.")]]
    unused: list[str]
    obtained: str


class SanitySummary(TypedDict, total=False):
    """A sanity check's test and its numbers."""

    test: Required[Literal["cascading", "independent", "random_logit", "efficient"]]
    similarity: Literal["spearman", "spearman_abs", "ssim"]
    channels: str
    seed: int
    bins: int
    layers: list[str]
    types: list[str]
    steps: Annotated[list[str], JsonField("`original`, then each randomised layer; aligned with `curve`.")]
    curve: Annotated[list[float | None], JsonField("Mean similarity with the trained model's map at each step.")]
    intervals: Annotated[list[float | None], JsonField("95 % half-widths of `curve`.")]
    final: str | None
    per_sample_final: list[float | None]
    other_class: list[int]
    per_sample: list[float | None]
    entropy_trained: list[float | None]
    entropy_randomised: list[float | None]
    left_out: Annotated[list[str], JsonField("Layers left out: their output never reaches the logits.")]


class OutcomeExtra(TypedDict, total=False):
    """The keys of each kind of check in its item's result (``$defs/result`` of the schema)."""

    decide: Annotated[Literal["point", "interval"], JsonField("How the thresholds were decided.")]
    per_sample: Annotated[
        PerSample,
        JsonField(
            "shared_interest, region, localisation, complexity, robustness: every selected sample's scores (null = undefined), aligned with `index`, one array per score the check measured (e.g. `iou`, `pointing_game`, `sparseness`, `max_sensitivity`)."
        ),
    ]
    worst: Annotated[list[WorstRow], JsonField("A few worst examples, worst first.")]
    worst_by: Annotated[str, JsonField("shared_interest: the score the worst examples are worst by.")]
    worst_in: Annotated[
        str | None, JsonField("patterns: the pattern the worst examples are taken from (null: lowest IoU overall).")
    ]
    thumbnail_error: Annotated[str, JsonField("Why the thumbnails could not be made (the check's outcome stands).")]
    pattern_counts: dict[str, Annotated[int, JsonField(minimum=0)]]
    pattern_fractions: dict[str, float]
    fractions: Annotated[
        list[float | None],
        JsonField("fidelity: fractions of units removed at each curve point (put back, for insertion)."),
    ]
    curves: Annotated[
        dict[str, list[float | None]],
        JsonField("fidelity: mean curve per order (mif, lif, random, insertion), aligned with `fractions`."),
    ]
    fidelity: Annotated[
        FidelitySummary,
        JsonField(
            "fidelity: the full curve summary (fill, unit, per-order mean AUC and interval, per-sample AUCs, gap)."
        ),
    ]
    robustness: Annotated[
        RobustnessSettings, JsonField("robustness: the perturbation settings the scores were computed with.")
    ]
    region: Annotated[RegionSettings, JsonField("region: the method and the named mask or box.")]
    against: Annotated[str, JsonField("drift: what version A (the reference) is.")]
    regions: Annotated[
        dict[str, DriftRegion],
        JsonField("drift: per named mask (and ground_truth), its kept segments, cluster and share under A and B."),
    ]
    drift: Annotated[DriftSummary, JsonField("drift: the cluster summary (see the drift check).")]
    baseline: Annotated[
        BaselineEntry, JsonField("drift against a stored snapshot: the snapshot's entry (name, path, status).")
    ]
    sanity: Annotated[
        SanitySummary,
        JsonField(
            "sanity: the test and its numbers. cascading/independent: `steps` aligned with `curve` and `intervals`, `per_sample_final`; random_logit: `other_class` and `per_sample`; efficient: `entropy_trained`, `entropy_randomised` and `per_sample` scores."
        ),
    ]
    artifacts: list[str]
    skipped: Annotated[
        list[str],
        JsonField("Samples the data source left out (`data.on_bad_sample: skip`), one line each, naming the file."),
    ]
    missed: Annotated[
        list[str],
        JsonField(
            "task: detection | segmentation: the objects or class regions the model missed (no scores), one line each."
        ),
    ]


class OutcomeResult(OutcomeExtra, total=False):
    """What a check's outcome gives its item's result: counts, measurements, details and the
    keys of its kind."""

    passed: Annotated[
        bool,
        JsonField(
            "Every measurement passed, over at least one sample (before `severity` and `decide` make a status of it)."
        ),
    ]
    samples: Required[Annotated[int, JsonField(minimum=0)]]
    undefined: Required[Annotated[int, JsonField(minimum=0)]]
    measurements: Required[list[MeasurementResult]]
    details: list[str]


class SliceOf(TypedDict):
    """The per-sample field a sliced check's item looks at, and its value."""

    by: str
    value: str


class WeightsFile(TypedDict):
    """The file the model under test was loaded from, and its sha256."""

    path: str
    sha256: Annotated[str, JsonField(pattern="^[0-9a-f]{64}$")]


class ModelSource(TypedDict, total=False):
    """What the run applied to the stored images, each with where it came from."""

    normalize: str
    transform: str
    classes: str
    notes: list[str]


Override = TypedDict(
    "Override",
    {"value": str, "from": Annotated[str, JsonField("`${VAR:-default}` as written, or `--saliency-set KEY=VALUE`.")]},
)
Override.__doc__ = "A value of the spec that came from outside its file, and where it came from."


class ItemResult(OutcomeResult, total=False):
    """One item's result in ``results`` (``$defs/result`` of the schema)."""

    nodeid: Required[
        Annotated[str, JsonField("pytest's node id, e.g. `specs/shapes.saliency.yaml::object-coverage[ig-circle]`.")]
    ]
    line: Required[
        Annotated[
            int | None, JsonField("The check's line in the spec file (a spec error: the error's line).", minimum=1)
        ]
    ]
    spec: Required[Annotated[str, JsonField("The spec's name (default: the file's stem).")]]
    spec_path: Required[str]
    check: Required[Annotated[str, JsonField("The check's id; `spec` for a spec with errors.")]]
    kind: Required[Annotated[str | None, JsonField("The check's kind (its key in the spec); null for a spec error.")]]
    variant: Required[
        Annotated[str, JsonField("What is in brackets in the test id: method and class, e.g. `ig-circle`.")]
    ]
    method: Required[Annotated[str | None, JsonField("The attribution method's name in the spec.")]]
    class_index: Required[int | None]
    slice: Annotated[
        SliceOf | None,
        JsonField(
            "For a check with `slices`: the per-sample field and the value of this item's slice (its measurements are the slice's)."
        ),
    ]
    severity: Required[Literal["fail", "warn"]]
    status: Required[
        Annotated[
            Status,
            JsonField(
                "inconclusive: decided by interval, no threshold failed and one could not be decided (a warning; failed under --saliency-strict)."
            ),
        ]
    ]
    message: Annotated[str, JsonField("For status error: the first line of the error.")]
    duration: Annotated[
        float, JsonField("Seconds the item's call took (includes computing what it was the first to need).", minimum=0)
    ]
    weights: Annotated[
        WeightsFile | None,
        JsonField(
            "The file the model under test was loaded from (its weights or TorchScript file) and its sha256; null for a factory without weights."
        ),
    ]
    model_source: Annotated[
        ModelSource | None,
        JsonField(
            "What the run applied to the stored images, each with where it came from (the spec, or the model source), and notes (the spec against its source, how the weights file was read)."
        ),
    ]
    overrides: Annotated[
        dict[str, Override],
        JsonField(
            "Values of the spec that came from outside its file, by dotted key: `${VAR}` substitutions and --saliency-set overrides."
        ),
    ]


class GeneratorInfo(TypedDict, total=False):
    """What wrote the document: pytest-saliency's version, Python's and pytest's."""

    name: Required[Literal["pytest-saliency"]]
    version: Required[str]
    python: str
    pytest: str


class Summary(TypedDict, total=False):
    """Item counts by status."""

    total: Required[Annotated[int, JsonField(minimum=0)]]
    passed: Required[Annotated[int, JsonField(minimum=0)]]
    failed: Required[Annotated[int, JsonField(minimum=0)]]
    warned: Required[Annotated[int, JsonField(minimum=0)]]
    inconclusive: Annotated[
        int,
        JsonField(
            "Items decided by interval whose interval straddles a threshold (none failed); present when there are any.",
            minimum=0,
        ),
    ]
    error: Required[Annotated[int, JsonField(minimum=0)]]


class ResultsDocument(TypedDict, total=False):
    """What `pytest --saliency-json PATH` writes: one entry per saliency test item (check x attribution method [x class]) with its measured aggregates, thresholds and status. `schema_version` changes only when an existing field changes meaning or is removed; new optional fields may appear within a version. Floats are plain JSON numbers; an undefined value (no sample with a defined score) is null, never NaN."""

    format: Required[Literal["pytest-saliency-results"]]
    schema_version: Required[Literal[1]]
    generator: Required[GeneratorInfo]
    created: Required[Annotated[str, JsonField("UTC time the file was written, ISO 8601.")]]
    summary: Required[Summary]
    artifacts: Required[
        Annotated[
            list[str],
            JsonField(
                "Every file this run wrote that a CI job may want to upload: the HTML report, obtained drift summaries, ..."
            ),
        ]
    ]
    overrides: Annotated[
        list[str],
        JsonField(
            "The run's --saliency-set KEY=VALUE arguments, in the order given (absent in files written before they existed)."
        ),
    ]
    results: Required[
        Annotated[
            list[ItemResult],
            JsonField(
                "Sorted by spec_path, spec, line, check, variant, nodeid (stable across runs and across pytest -n)."
            ),
        ]
    ]


FORMAT: Final = "pytest-saliency-results"
SCHEMA_VERSION: Final = 1
SCHEMA_FILE = "results.schema.json"
STATUSES = ("passed", "failed", "warned", "inconclusive", "error")

JsonValue: TypeAlias = "None | bool | int | float | str | list[JsonValue] | dict[str, JsonValue]"
"""A JSON value (what the schema document is made of)."""

# Defaults for keys a result may lack (a spec error has no kind, method or measurements).
_DEFAULTS: dict[str, object] = {
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
def schema() -> dict[str, JsonValue]:
    """The JSON Schema of the results document (draft 2020-12)."""
    from importlib.resources import files

    document: dict[str, JsonValue] = json.loads(files(__package__).joinpath(SCHEMA_FILE).read_text(encoding="utf-8"))
    return document


def result_key(result: ItemResult) -> tuple[str, str, int, str, str, str]:
    """The sort key of a result: spec path, the check's line (checks in spec order), check,
    variant, node id."""
    line = result.get("line")
    path, spec, check, variant, nodeid = (
        str(result.get(key) or "") for key in ("spec_path", "spec", "check", "variant", "nodeid")
    )
    return (path, spec, line if isinstance(line, int) else 0, check, variant, nodeid)


def normalise(result: ItemResult) -> ItemResult:
    """A copy of one item's result with every required key, and JSON-safe values (NaN -> null)."""
    out = {key: value for key, value in _DEFAULTS.items() if key not in result}
    out.update(result)
    safe: ItemResult = json_safe(out)
    return safe


def build_document(
    results: Iterable[ItemResult],
    *,
    artifacts: Iterable[str] = (),
    created: str | None = None,
    overrides: Iterable[str] = (),
) -> ResultsDocument:
    """The results document (see ``results.schema.json``) for these item results;
    ``overrides``: the run's ``--saliency-set KEY=VALUE`` arguments."""
    from .. import __version__

    rows = sorted((normalise(result) for result in results), key=result_key)
    statuses = [row["status"] for row in rows]
    counts: Summary = {
        "total": len(rows),
        "passed": statuses.count("passed"),
        "failed": statuses.count("failed"),
        "warned": statuses.count("warned"),
        "inconclusive": statuses.count("inconclusive"),
        "error": statuses.count("error"),
    }
    if not counts["inconclusive"]:  # only runs that decide by interval have any; older readers know four
        del counts["inconclusive"]
    listed = list(dict.fromkeys([*artifacts, *(path for row in rows for path in row.get("artifacts") or [])]))
    generator: GeneratorInfo = {"name": "pytest-saliency", "version": __version__, "python": sys.version.split()[0]}
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
        "summary": counts,
        "artifacts": listed,
        "overrides": list(overrides),
        "results": rows,
    }


def dumps(document: ResultsDocument) -> str:
    return json.dumps(document, indent=1, ensure_ascii=False, allow_nan=False) + "\n"


def write_document(path: str | os.PathLike[str], document: ResultsDocument) -> Path:
    """Write the document as JSON, atomically."""
    return write_atomic(path, dumps(document))


def load_document(path: str | os.PathLike[str]) -> ResultsDocument:
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
    return cast(ResultsDocument, document)  # a dict that passed the checks above


def validation_errors(document: object) -> list[str]:
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
