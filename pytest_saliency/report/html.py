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
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._constants import PATTERN_NAMES
from .._io import write_atomic
from ..errors import SaliencyError
from ..spec.schema import Threshold
from .format import fixed, percent, signed

if TYPE_CHECKING:
    import jinja2

TEMPLATES = Path(__file__).parent / "templates"
CURVE_ORDERS = ("mif", "lif", "random", "insertion")


class ReportDependencyError(SaliencyError, ImportError):
    """The HTML report needs Jinja2 (``pip install 'pytest-saliency[report]'``)."""


def render_html(document: dict[str, Any], title: str | None = None, expand: bool = False) -> str:
    """The report page for a results document; ``expand`` opens passing checks too."""
    environment = _environment()
    template = environment.get_template("report.html")
    return template.render(report=view(document, title, expand))


def write_html(
    path: str | os.PathLike[str], document: dict[str, Any], title: str | None = None, expand: bool = False
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


def view(document: dict[str, Any], title: str | None = None, expand: bool = False) -> dict[str, Any]:
    results = document.get("results", [])
    specs: dict[str, dict[str, Any]] = {}
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
        "generator": document.get("generator", {}),
        "created": document.get("created", ""),
        "schema_version": document.get("schema_version"),
        "summary": summary,
        "status": _worst_status(r.get("status", "") for r in results),
        "artifacts": document.get("artifacts", []),
        "specs": list(specs.values()),
    }


def item_view(result: dict[str, Any], position: int) -> dict[str, Any]:
    """One check item: its rows, its examples and charts (each None when the result has none)."""
    variant = result.get("variant") or ""
    test_id = result.get("check", "") + (f"[{variant}]" if variant else "")
    status = result.get("status", "error")
    measurements = [
        {
            "name": "",
            "value": None,
            "threshold": "",
            "passed": False,
            "interval": None,
            "lower": None,
            "upper": None,
            "inconclusive": False,
            **measurement,
        }
        for measurement in result.get("measurements") or []
        if isinstance(measurement, dict)
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


def _example(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "index": row.get("index"),
        "label": row.get("label", ""),
        "predicted": row.get("predicted", ""),
        "correct": row.get("label") == row.get("predicted"),
        "iou": row.get("iou"),
        "gtc": row.get("gtc"),
        "sc": row.get("sc"),
        "patterns": row.get("patterns") or [],
        "thumbnail": row.get("thumbnail"),
    }


def _worst_caption(result: dict[str, Any]) -> str:
    if result.get("worst_in"):
        return f"samples in {result['worst_in']}, lowest IoU first"
    if result.get("worst_by"):
        return f"worst by {result['worst_by']}"
    return "worst examples"


# --- charts -------------------------------------------------------------------------------------

BAR_WIDTH = 260  # px, the longest bar of the pattern chart


def pattern_chart(result: dict[str, Any]) -> dict[str, Any] | None:
    """Horizontal bars of the pattern counts, with each bounded pattern's limit as a tick."""
    counts = result.get("pattern_counts")
    if not isinstance(counts, dict) or not counts:
        return None
    fractions = result.get("pattern_fractions") or {}
    limits: dict[str, tuple[str, float, bool]] = {}
    for measurement in result.get("measurements") or []:
        key = str(measurement.get("key", ""))
        if key.startswith("fraction_"):  # a patterns check's key: fraction_<pattern>
            limit = _threshold_number(measurement.get("threshold", ""))
            if limit is not None:
                limits[key.removeprefix("fraction_")] = (
                    measurement["threshold"],
                    limit,
                    bool(measurement.get("passed")),
                )
    names = [n for n in PATTERN_NAMES if n in counts] + [n for n in counts if n not in PATTERN_NAMES]
    values = {n: fractions.get(n) if isinstance(fractions.get(n), int | float) else None for n in names}
    total = sum(int(counts[n]) for n in names)
    for name in names:  # counts without fractions: the share of the counted samples
        if values[name] is None:
            values[name] = int(counts[name]) / total if total else 0.0
    scale = max([0.05, *(v for v in values.values() if v is not None), *(limit for _, limit, _ in limits.values())])
    bars = []
    for row, name in enumerate(names):
        fraction = values[name] or 0.0
        bound = limits.get(name)
        bars.append(
            {
                "name": name,
                "count": int(counts[name]),
                "fraction": fraction,
                "y": row * 22,
                "width": round(BAR_WIDTH * fraction / scale, 1),
                "limit": None if bound is None else {"text": bound[0], "x": round(BAR_WIDTH * bound[1] / scale, 1)},
                "failing": bound is not None and not bound[2],
            }
        )
    return {"bars": bars, "height": len(bars) * 22, "bar_width": BAR_WIDTH}


PLOT = {"width": 480, "height": 240, "left": 46, "right": 96, "top": 14, "bottom": 38}  # legend on the right


def fidelity_plot(result: dict[str, Any]) -> dict[str, Any] | None:
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

    lines = []
    for order in [o for o in CURVE_ORDERS if o in curves] + [o for o in curves if o not in CURVE_ORDERS]:
        lines.append({"order": order, "points": " ".join(f"{px},{py}" for px, py in points(curves[order]))})
    area = None
    if "mif" in curves and "lif" in curves:
        lif, mif = points(curves["lif"]), points(curves["mif"])
        area = " ".join(f"{px},{py}" for px, py in [*lif, *reversed(mif)])
    ticks_x = [{"x": x(v), "label": f"{v:.0%}" if x_high <= 1 else f"{v:g}"} for v in _ticks(x_low, x_high)]
    ticks_y = [{"y": y(v), "label": f"{v:.2g}"} for v in _ticks(low, high)]
    gap = _measured(result, "gap")
    if gap is None and isinstance(result.get("gap"), int | float):
        gap = result["gap"]
    if gap is None and isinstance(result.get("fidelity"), dict):
        gap = result["fidelity"].get("gap")
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
        "score": (result.get("fidelity") or {}).get("score")
        if isinstance(result.get("fidelity"), dict)
        else result.get("score"),
    }


SANITY_PLOT = {**PLOT, "right": 24, "bottom": 70}  # room for the layer names under the axis


def sanity_plot(result: dict[str, Any]) -> dict[str, Any] | None:
    """A sanity check's similarity after each randomisation step (Adebayo et al.'s cascading
    curve: the trained model first, then one more layer randomised at each step), with the
    ``final`` threshold as a dashed line."""
    sanity = result.get("sanity")
    curve = sanity.get("curve") if isinstance(sanity, dict) else None
    if not isinstance(sanity, dict) or not isinstance(curve, list) or len(curve) < 2:
        return None
    steps = sanity.get("steps")
    names = (
        [str(step) for step in steps]
        if isinstance(steps, list) and len(steps) == len(curve)
        else [str(i) for i in range(len(curve))]
    )
    values = [v for v in curve if isinstance(v, int | float)]
    low, high = min([0.0, *values]), max([1.0, *values])
    inner_w = SANITY_PLOT["width"] - SANITY_PLOT["left"] - SANITY_PLOT["right"]
    inner_h = SANITY_PLOT["height"] - SANITY_PLOT["top"] - SANITY_PLOT["bottom"]

    def x(position: int) -> float:
        return round(SANITY_PLOT["left"] + inner_w * position / (len(curve) - 1), 1)

    def y(value: float) -> float:
        return round(SANITY_PLOT["top"] + inner_h * (1 - (value - low) / (high - low)), 1)

    markers = [
        {"x": x(i), "y": y(v), "name": names[i], "value": v} for i, v in enumerate(curve) if isinstance(v, int | float)
    ]
    final = _threshold_number(sanity["final"]) if sanity.get("final") else None
    x_axis_y = SANITY_PLOT["height"] - SANITY_PLOT["bottom"]
    return {
        **SANITY_PLOT,
        "points": " ".join(f"{m['x']},{m['y']}" for m in markers),
        "markers": markers,
        "labels": [{"x": x(i), "name": name} for i, name in enumerate(names)],
        "ticks_y": [{"y": y(v), "label": f"{v:.2g}"} for v in _ticks(low, high)],
        "threshold": None if final is None or not low <= final <= high else {"y": y(final), "text": sanity["final"]},
        "x_axis_y": x_axis_y,
        "plot_right": SANITY_PLOT["width"] - SANITY_PLOT["right"],
        "similarity": sanity.get("similarity", ""),
        "axis_label": (
            "layer randomised alone (the others trained)"
            if sanity.get("test") == "independent"
            else "layers randomised, cumulatively from the output down"
        ),
    }


def _fidelity_data(result: dict[str, Any]) -> tuple[dict[str, list[float | None]], list[float]]:
    """Mean curves by order and their fractions, from ``curves``/``fractions`` or a nested
    ``fidelity`` summary (``orders.<order>.mean_curve``)."""
    sources = [result]
    if isinstance(result.get("fidelity"), dict):
        sources.append(result["fidelity"])
    for source in sources:
        curves = source.get("curves")
        if isinstance(curves, dict) and curves:
            return {str(k): list(v) for k, v in curves.items() if isinstance(v, list)}, list(
                source.get("fractions") or []
            )
        orders = source.get("orders")
        if isinstance(orders, dict) and orders:
            found = {
                str(k): list(v["mean_curve"])
                for k, v in orders.items()
                if isinstance(v, dict) and isinstance(v.get("mean_curve"), list)
            }
            if found:
                return found, list(source.get("fractions") or [])
    return {}, []


def _aucs(result: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for measurement in result.get("measurements") or []:
        name = str(measurement.get("name", ""))
        if "auc" in name.lower() and not name.startswith("gap"):
            out.append({"name": measurement["name"], "value": measurement.get("value")})
    return out


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    step = (high - low) / (count - 1)
    return [low + step * i for i in range(count)]


def drift_view(result: dict[str, Any]) -> dict[str, Any] | None:
    """Clusters (largest ``|shift|`` first) with their shares under A and B and example crops."""
    drift = result.get("drift")
    if not isinstance(drift, dict):  # a drift check's own result holds the clusters
        drift = result
    clusters = drift.get("clusters")
    if not isinstance(clusters, list) or not clusters:
        return None
    rows = []
    shares = [abs(c.get(k) or 0.0) for c in clusters for k in ("share_a", "share_b")]
    scale = max([0.05, *shares])
    for cluster in clusters:
        if not isinstance(cluster, dict) or cluster.get("count") == 0:
            continue
        share_a, share_b = cluster.get("share_a"), cluster.get("share_b")
        shift = cluster.get("shift")
        if shift is None and share_a is not None and share_b is not None:
            shift = share_b - share_a
        rows.append(
            {
                "cluster": cluster.get("cluster"),
                "count": cluster.get("count"),
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
    regions = drift.get("regions") if isinstance(drift.get("regions"), dict) else result.get("regions")
    return {
        "rows": rows,
        "against": result.get("against", ""),
        "max_abs_shift": drift.get("max_abs_shift"),
        "mean_abs_shift": drift.get("mean_abs_shift"),
        "regions": regions if isinstance(regions, dict) else {},
    }


# --- helpers ------------------------------------------------------------------------------------


def _measured(result: dict[str, Any], name: str) -> float | None:
    """The value of the measurement called ``name`` (or ``name (...)``, e.g. ``gap (AUC LIF - AUC MIF)``)."""
    for measurement in result.get("measurements") or []:
        measured = str(measurement.get("name", ""))
        if measured == name or measured.startswith(f"{name} ("):
            value = measurement.get("value")
            return value if isinstance(value, int | float) else None
    return None


def _threshold_number(threshold: str) -> float | None:
    """The number of a threshold as the results write it (``">= 0.05"``), read by the spec
    language's own parser; None for anything else."""
    try:
        return Threshold.parse(threshold).value
    except ValueError:
        return None


def _counts(statuses: Any) -> dict[str, int]:
    counts = {"total": 0, "passed": 0, "failed": 0, "warned": 0, "inconclusive": 0, "error": 0}
    for status in statuses:
        counts["total"] += 1
        if status in counts:
            counts[status] += 1
    return counts


def _worst_status(statuses: Any) -> str:
    seen = set(statuses)
    for status in ("error", "failed", "inconclusive", "warned", "passed"):
        if status in seen:
            return status
    return "passed"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-").lower() or "x"
