"""The HTML report (``--saliency-report``): one self-contained file, rendered with Jinja2.

Everything is inline — CSS, thumbnails as base64 PNG, charts as SVG — so the file opens from a
CI artefact with no network. The page is rendered from the results document
(:mod:`.results`), so ``pytest-saliency report results.json -o report.html`` gives the same page
as the run did. This module prepares plain data for the templates (chart geometry included);
the markup, SVG too, is in ``templates/``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

from .._constants import PATTERN_NAMES
from .._io import write_atomic
from ..errors import SaliencyError
from ..spec.schema import Threshold
from .format import fixed, percent, signed
from .results import (
    DriftRegion,
    DriftSummary,
    GeneratorInfo,
    ItemResult,
    MeasurementResult,
    ModelSource,
    Override,
    ResultsDocument,
    Summary,
    WeightsFile,
    WorstRow,
)

if TYPE_CHECKING:
    import jinja2

TEMPLATES = Path(__file__).parent / "templates"
CURVE_ORDERS = ("mif", "lif", "random", "insertion")


class ReportDependencyError(SaliencyError, ImportError):
    """The HTML report needs Jinja2 (``pip install 'pytest-saliency[report]'``)."""


def render_html(document: ResultsDocument, title: str | None = None, expand: bool = False) -> str:
    """The report page for a results document; ``expand`` opens passing checks too."""
    environment = _environment()
    template = environment.get_template("report.html")
    return template.render(report=view(document, title, expand))


def write_html(
    path: str | os.PathLike[str], document: ResultsDocument, title: str | None = None, expand: bool = False
) -> Path:
    """Render and write the report, atomically."""
    return write_atomic(path, render_html(document, title, expand))


def _environment() -> jinja2.Environment:
    try:
        import jinja2
    except ImportError:
        raise ReportDependencyError(
            "the saliency HTML report needs Jinja2: pip install 'pytest-saliency[report]'"
        ) from None
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["num"] = fixed
    environment.filters["signed"] = signed
    environment.filters["pct"] = percent
    return environment


# --- the view: plain data for the templates ----------------------------------------------------


class Example(TypedDict):
    """One worst example as the page shows it."""

    index: int
    label: str | int
    predicted: str | int
    correct: bool
    iou: float | None
    gtc: float | None
    sc: float | None
    patterns: list[str]
    thumbnail: str | None


class Limit(TypedDict):
    text: str
    x: float


class Bar(TypedDict):
    """One pattern's bar: its count and share, and its limit's tick when it has one."""

    name: str
    count: int
    fraction: float
    y: int
    width: float
    limit: Limit | None
    failing: bool


class PatternChart(TypedDict):
    bars: list[Bar]
    height: int
    bar_width: int


class PlotBox(TypedDict):
    """A chart's size and margins, pixels."""

    width: int
    height: int
    left: int
    right: int
    top: int
    bottom: int


class Line(TypedDict):
    order: str
    points: str


class TickX(TypedDict):
    x: float
    label: str


class TickY(TypedDict):
    y: float
    label: str


class Named(TypedDict):
    name: str
    value: float | None


class FidelityPlot(PlotBox):
    """The fidelity curves' geometry (:func:`fidelity_plot`)."""

    lines: list[Line]
    area: str | None
    ticks_x: list[TickX]
    ticks_y: list[TickY]
    gap: float | None
    x_axis_y: int
    plot_right: int
    aucs: list[Named]
    score: str | None


class Marker(TypedDict):
    x: float
    y: float
    name: str
    value: float


class Label(TypedDict):
    x: float
    name: str


class Level(TypedDict):
    y: float
    text: str


class SanityPlot(PlotBox):
    """The sanity curve's geometry (:func:`sanity_plot`)."""

    points: str
    markers: list[Marker]
    labels: list[Label]
    ticks_y: list[TickY]
    threshold: Level | None
    x_axis_y: int
    plot_right: int
    similarity: str
    axis_label: str


class ClusterRow(TypedDict):
    """One drift cluster as the page shows it."""

    cluster: int
    count: int
    share_a: float | None
    share_b: float | None
    shift: float | None
    width_a: float
    width_b: float
    crops: list[str]
    representatives: list[list[int]]


class DriftView(TypedDict):
    rows: list[ClusterRow]
    against: str
    max_abs_shift: float | None
    mean_abs_shift: float | None
    regions: dict[str, DriftRegion]


class ItemView(TypedDict):
    """One check item: its rows, its examples and charts (each None when the result has none)."""

    test_id: str
    nodeid: str
    kind: str
    method: str
    severity: str
    status: str
    open: bool
    message: str
    samples: int
    undefined: int
    measurements: list[MeasurementResult]
    details: list[str]
    worst: list[Example]
    worst_caption: str
    patterns: PatternChart | None
    fidelity: FidelityPlot | None
    drift: DriftView | None
    sanity: SanityPlot | None
    artifacts: list[str]
    anchor: str


class SpecView(TypedDict, total=False):
    """One spec's section: its checks, the weights tested, what was set from outside it."""

    name: str
    path: str
    checks: list[ItemView]
    anchor: str
    weights: WeightsFile | None
    model_source: ModelSource | None
    overrides: dict[str, Override]
    counts: Summary
    status: str


class ReportView(TypedDict):
    """What the page template reads."""

    title: str
    generator: GeneratorInfo
    created: str
    schema_version: int
    summary: Summary
    status: str
    artifacts: list[str]
    specs: list[SpecView]


def view(document: ResultsDocument, title: str | None = None, expand: bool = False) -> ReportView:
    results = document.get("results", [])
    specs: dict[str, SpecView] = {}
    for result in results:
        key = f"{result.get('spec', '')}\0{result.get('spec_path', '')}"
        spec = specs.setdefault(
            key,
            {
                "name": result.get("spec", ""),
                "path": result.get("spec_path", ""),
                "checks": [],
                "anchor": "",
                "weights": None,
                "model_source": None,
                "overrides": {},
            },
        )
        spec["weights"] = spec["weights"] or result.get("weights")
        spec["model_source"] = spec["model_source"] or result.get("model_source")
        spec["overrides"] = spec["overrides"] or result.get("overrides") or {}
        spec["checks"].append(item_view(result, len(spec["checks"])))
    for index, spec in enumerate(specs.values()):
        spec["anchor"] = f"spec-{index}-{_slug(spec['name'])}"
        spec["counts"] = _counts(item["status"] for item in spec["checks"])
        spec["status"] = _worst_status(item["status"] for item in spec["checks"])
        for item in spec["checks"]:
            item["anchor"] = f"{spec['anchor']}-{item['anchor']}"
            item["open"] = item["open"] or expand
    summary = document.get("summary") or _counts(r.get("status", "") for r in results)
    return {
        "title": title or "pytest-saliency report",
        "generator": document.get("generator", {"name": "pytest-saliency", "version": ""}),
        "created": document.get("created", ""),
        "schema_version": document.get("schema_version", 1),
        "summary": summary,
        "status": _worst_status(r.get("status", "") for r in results),
        "artifacts": document.get("artifacts", []),
        "specs": list(specs.values()),
    }


def item_view(result: ItemResult, position: int) -> ItemView:
    """One check item: its rows, its examples and charts (each None when the result has none)."""
    variant = result.get("variant") or ""
    test_id = result.get("check", "") + (f"[{variant}]" if variant else "")
    status = result.get("status", "error")
    measurements: list[MeasurementResult] = [
        {"interval": None, "lower": None, "upper": None, "inconclusive": False, **measurement}
        for measurement in result.get("measurements") or []
    ]
    worst = [_example(row) for row in result.get("worst") or []]
    return {
        "test_id": test_id,
        "nodeid": result.get("nodeid", ""),
        "kind": result.get("kind") or "",
        "method": result.get("method") or "",
        "severity": result.get("severity", "fail"),
        "status": status,
        "open": status != "passed",
        "message": result.get("message", ""),
        "samples": result.get("samples", 0),
        "undefined": result.get("undefined", 0),
        "measurements": measurements,
        "details": result.get("details") or [],
        "worst": worst,
        "worst_caption": _worst_caption(result),
        "patterns": pattern_chart(result),
        "fidelity": fidelity_plot(result),
        "drift": drift_view(result),
        "sanity": sanity_plot(result),
        "artifacts": result.get("artifacts") or [],
        "anchor": f"{position}-{_slug(test_id)}",
    }


def _example(row: WorstRow) -> Example:
    return {
        "index": row["index"],
        "label": row.get("label", ""),
        "predicted": row.get("predicted", ""),
        "correct": row.get("label") == row.get("predicted"),
        "iou": row.get("iou"),
        "gtc": row.get("gtc"),
        "sc": row.get("sc"),
        "patterns": row.get("patterns") or [],
        "thumbnail": row.get("thumbnail"),
    }


def _worst_caption(result: ItemResult) -> str:
    if result.get("worst_in"):
        return f"samples in {result['worst_in']}, lowest IoU first"
    if result.get("worst_by"):
        return f"worst by {result['worst_by']}"
    return "worst examples"


# --- charts -------------------------------------------------------------------------------------

BAR_WIDTH = 260  # px, the longest bar of the pattern chart


def pattern_chart(result: ItemResult) -> PatternChart | None:
    """Horizontal bars of the pattern counts, with each bounded pattern's limit as a tick (the
    measurement keyed ``fraction_<pattern>``)."""
    counts = result.get("pattern_counts")
    if not counts:
        return None
    fractions = result.get("pattern_fractions") or {}
    by_key = {measurement.get("key"): measurement for measurement in result.get("measurements") or []}
    names = [n for n in PATTERN_NAMES if n in counts] + [n for n in counts if n not in PATTERN_NAMES]
    limits: dict[str, tuple[str, float, bool]] = {}
    for name in names:
        measurement = by_key.get(f"fraction_{name}")
        limit = None if measurement is None else _threshold_number(measurement["threshold"])
        if measurement is not None and limit is not None:
            limits[name] = (measurement["threshold"], limit, measurement["passed"])
    values: dict[str, float] = {}
    total = sum(counts[n] for n in names)
    for name in names:  # counts without fractions: the share of the counted samples
        given = fractions.get(name)
        values[name] = given if given is not None else (counts[name] / total if total else 0.0)
    scale = max([0.05, *values.values(), *(limit for _, limit, _ in limits.values())])
    bars: list[Bar] = []
    for row, name in enumerate(names):
        fraction = values[name] or 0.0
        bound = limits.get(name)
        bars.append(
            {
                "name": name,
                "count": counts[name],
                "fraction": fraction,
                "y": row * 22,
                "width": round(BAR_WIDTH * fraction / scale, 1),
                "limit": None if bound is None else {"text": bound[0], "x": round(BAR_WIDTH * bound[1] / scale, 1)},
                "failing": bound is not None and not bound[2],
            }
        )
    return {"bars": bars, "height": len(bars) * 22, "bar_width": BAR_WIDTH}


PLOT: PlotBox = {"width": 480, "height": 240, "left": 46, "right": 96, "top": 14, "bottom": 38}  # legend on the right


def fidelity_plot(result: ItemResult) -> FidelityPlot | None:
    """MIF / LIF / random mean curves as polylines, the area between LIF and MIF shaded."""
    curves, fractions = _fidelity_data(result)
    if not curves:
        return None
    length = max(len(curve) for curve in curves.values())
    if len(fractions) != length:
        fractions = [i / max(1, length - 1) for i in range(length)]
    values = [v for curve in curves.values() for v in curve if v is not None]
    if not values:
        return None
    low, high = min(0.0, min(values)), max(1.0, max(values))
    if 0.0 <= min(fractions) and max(fractions) <= 1.0:
        x_low, x_high = 0.0, 1.0  # fractions of the input: the whole axis
    else:
        x_low, x_high = min(fractions), max(fractions) if max(fractions) > min(fractions) else min(fractions) + 1
    inner_w = PLOT["width"] - PLOT["left"] - PLOT["right"]
    inner_h = PLOT["height"] - PLOT["top"] - PLOT["bottom"]

    def x(value: float) -> float:
        return round(PLOT["left"] + inner_w * (value - x_low) / (x_high - x_low), 1)

    def y(value: float) -> float:
        return round(PLOT["top"] + inner_h * (1 - (value - low) / (high - low)), 1)

    def points(curve: Sequence[float | None]) -> list[tuple[float, float]]:
        return [
            (x(f), y(v)) for f, v in zip(fractions, curve, strict=False) if v is not None
        ]  # a shorter curve stops early

    lines: list[Line] = []
    for order in [o for o in CURVE_ORDERS if o in curves] + [o for o in curves if o not in CURVE_ORDERS]:
        lines.append({"order": order, "points": " ".join(f"{px},{py}" for px, py in points(curves[order]))})
    area = None
    if "mif" in curves and "lif" in curves:
        lif, mif = points(curves["lif"]), points(curves["mif"])
        area = " ".join(f"{px},{py}" for px, py in [*lif, *reversed(mif)])
    ticks_x: list[TickX] = [
        {"x": x(v), "label": f"{v:.0%}" if x_high <= 1 else f"{v:g}"} for v in _ticks(x_low, x_high)
    ]
    ticks_y: list[TickY] = [{"y": y(v), "label": f"{v:.2g}"} for v in _ticks(low, high)]
    fidelity = result.get("fidelity")
    gap = _measured(result, "gap")
    if gap is None and fidelity is not None:
        gap = fidelity.get("gap")
    return {
        **PLOT,
        "lines": lines,
        "area": area,
        "ticks_x": ticks_x,
        "ticks_y": ticks_y,
        "gap": gap,
        "x_axis_y": PLOT["height"] - PLOT["bottom"],
        "plot_right": PLOT["width"] - PLOT["right"],
        "aucs": _aucs(result),
        "score": None if fidelity is None else fidelity.get("score"),
    }


SANITY_PLOT: PlotBox = {**PLOT, "right": 24, "bottom": 70}  # room for the layer names under the axis


def sanity_plot(result: ItemResult) -> SanityPlot | None:
    """A sanity check's similarity after each randomisation step (Adebayo et al.'s cascading
    curve: the trained model first, then one more layer randomised at each step), with the
    ``final`` threshold as a dashed line."""
    sanity = result.get("sanity")
    curve = None if sanity is None else sanity.get("curve")
    if sanity is None or curve is None or len(curve) < 2:
        return None
    steps = sanity.get("steps")
    names = (
        [str(step) for step in steps]
        if steps is not None and len(steps) == len(curve)
        else [str(i) for i in range(len(curve))]
    )
    values = [v for v in curve if v is not None]
    low, high = min([0.0, *values]), max([1.0, *values])
    inner_w = SANITY_PLOT["width"] - SANITY_PLOT["left"] - SANITY_PLOT["right"]
    inner_h = SANITY_PLOT["height"] - SANITY_PLOT["top"] - SANITY_PLOT["bottom"]

    def x(position: int) -> float:
        return round(SANITY_PLOT["left"] + inner_w * position / (len(curve) - 1), 1)

    def y(value: float) -> float:
        return round(SANITY_PLOT["top"] + inner_h * (1 - (value - low) / (high - low)), 1)

    markers: list[Marker] = [
        {"x": x(i), "y": y(v), "name": names[i], "value": v} for i, v in enumerate(curve) if v is not None
    ]
    text = sanity.get("final")
    final = _threshold_number(text) if text else None
    x_axis_y = SANITY_PLOT["height"] - SANITY_PLOT["bottom"]
    return {
        **SANITY_PLOT,
        "points": " ".join(f"{m['x']},{m['y']}" for m in markers),
        "markers": markers,
        "labels": [{"x": x(i), "name": name} for i, name in enumerate(names)],
        "ticks_y": [{"y": y(v), "label": f"{v:.2g}"} for v in _ticks(low, high)],
        "threshold": None
        if text is None or final is None or not low <= final <= high
        else {"y": y(final), "text": text},
        "x_axis_y": x_axis_y,
        "plot_right": SANITY_PLOT["width"] - SANITY_PLOT["right"],
        "similarity": sanity.get("similarity", ""),
        "axis_label": (
            "layer randomised alone (the others trained)"
            if sanity.get("test") == "independent"
            else "layers randomised, cumulatively from the output down"
        ),
    }


def _fidelity_data(result: ItemResult) -> tuple[dict[str, list[float | None]], list[float]]:
    """Mean curves by order and their fractions, from ``curves``/``fractions`` or the
    ``fidelity`` summary (``orders.<order>.mean_curve``)."""
    curves = result.get("curves")
    if curves:
        return {order: list(curve) for order, curve in curves.items()}, _numbers(result.get("fractions") or [])
    fidelity = result.get("fidelity")
    if fidelity is not None and fidelity["orders"]:
        found = {order: list(summary["mean_curve"]) for order, summary in fidelity["orders"].items()}
        return found, _numbers(fidelity["fractions"])
    return {}, []


def _numbers(values: Iterable[float | None]) -> list[float]:
    return [value for value in values if value is not None]


AUC_KEYS = tuple(f"{order}_auc" for order in CURVE_ORDERS)
"""The keys of a fidelity check's AUC measurements (``mif AUC`` is ``mif_auc``)."""


def _aucs(result: ItemResult) -> list[Named]:
    return [
        {"name": measurement["name"], "value": measurement["value"]}
        for measurement in result.get("measurements") or []
        if measurement.get("key") in AUC_KEYS
    ]


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    step = (high - low) / (count - 1)
    return [low + step * i for i in range(count)]


def drift_view(result: ItemResult) -> DriftView | None:
    """Clusters (largest ``|shift|`` first) with their shares under A and B and example crops."""
    drift: DriftSummary | None = result.get("drift")
    clusters = [] if drift is None else drift["clusters"]
    if drift is None or not clusters:
        return None
    rows: list[ClusterRow] = []
    shares = [abs(share or 0.0) for c in clusters for share in (c.get("share_a"), c.get("share_b"))]
    scale = max([0.05, *shares])
    for cluster in clusters:
        if cluster.get("count") == 0:
            continue
        share_a, share_b = cluster.get("share_a"), cluster.get("share_b")
        shift = cluster.get("shift")
        if shift is None and share_a is not None and share_b is not None:
            shift = share_b - share_a
        rows.append(
            {
                "cluster": cluster["cluster"],
                "count": cluster["count"],
                "share_a": share_a,
                "share_b": share_b,
                "shift": shift,
                "width_a": round(120 * (share_a or 0.0) / scale, 1),
                "width_b": round(120 * (share_b or 0.0) / scale, 1),
                "crops": cluster.get("crops") or [],
                "representatives": cluster.get("representatives") or [],
            }
        )
    rows.sort(key=lambda row: -abs(row["shift"] or 0.0))
    return {
        "rows": rows,
        "against": result.get("against", ""),
        "max_abs_shift": drift.get("max_abs_shift"),
        "mean_abs_shift": drift.get("mean_abs_shift"),
        "regions": result.get("regions") or {},
    }


# --- helpers ------------------------------------------------------------------------------------


def _measured(result: ItemResult, key: str) -> float | None:
    """The value of the measurement keyed ``key`` (``gap`` for ``gap (AUC LIF - AUC MIF)``)."""
    for measurement in result.get("measurements") or []:
        if measurement.get("key") == key:
            return measurement["value"]
    return None


def _threshold_number(threshold: str) -> float | None:
    """The number of a threshold as the results write it (``">= 0.05"``), read by the spec
    language's own parser; None for anything else."""
    try:
        return Threshold.parse(threshold).value
    except ValueError:
        return None


def _counts(statuses: Iterable[str]) -> Summary:
    seen = list(statuses)
    return {
        "total": len(seen),
        "passed": seen.count("passed"),
        "failed": seen.count("failed"),
        "warned": seen.count("warned"),
        "inconclusive": seen.count("inconclusive"),
        "error": seen.count("error"),
    }


def _worst_status(statuses: Iterable[str]) -> str:
    seen = set(statuses)
    for status in ("error", "failed", "inconclusive", "warned", "passed"):
        if status in seen:
            return status
    return "passed"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-").lower() or "x"
