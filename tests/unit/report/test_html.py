"""The HTML page (pytest_saliency.report.html) on hand-made results."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_saliency.report import html as report_html
from pytest_saliency.report import results as report_results
from tests.unit.report.hand_made import Page, sample_results


@pytest.fixture(scope="module")
def page() -> Page:
    return Page(report_html.render_html(report_results.build_document(sample_results(), artifacts=["r.html"])))


def test_page_is_valid_markup_and_self_contained(page: Page) -> None:
    assert page.problems == []
    assert page.doctype.lower() == "doctype html"
    assert page.find("meta", charset="utf-8") or any(a.get("charset") == "utf-8" for a in page.find("meta"))
    for tag, attribute in (("img", "src"), ("script", "src"), ("link", "href"), ("iframe", "src")):
        for attrs in page.find(tag):
            assert not attrs.get(attribute, "").startswith(("http:", "https:", "//")), attrs
    assert all(a["src"].startswith("data:image/png;base64,") for a in page.find("img"))
    ids = [attrs["id"] for _, attrs, _ in page.elements if "id" in attrs]
    assert len(ids) == len(set(ids))
    assert all(a["href"][1:] in ids for a in page.find("a") if a.get("href", "").startswith("#"))


def test_page_has_a_section_and_summary_table_per_spec(page: Page) -> None:
    sections = page.find("section", class_="spec")
    assert len(sections) == 2
    assert len(page.find("table", class_="summary")) == 2
    assert "shapes specs/shapes.saliency.yaml" in page.text
    # a row per measurement, the spec error's message in its own row
    assert "iou.mean 0.6400 >= 0.9" in page.text
    assert "gtc.mean — >= 0.5" in page.text
    assert "unknown key 'factori'" in page.text


def test_failing_checks_are_open_and_passing_ones_collapsed(page: Page) -> None:
    details = {a["id"].split("-", 3)[-1]: "open" in a for a in page.find("details", class_="check")}
    assert details == {
        "0-spec": True,
        "0-cov-grad": True,
        "1-pat-grad": False,
        "2-faithful-ig": True,
        "3-drifted-grad": False,
    }


def test_one_image_per_worst_example(page: Page) -> None:
    examples = page.find("figure", class_="example")
    assert len(examples) == 3 + 2
    images = page.inside("img", "figure")
    assert len(images) == len(examples)
    assert "#1 circle → square" in page.text
    assert "IoU 0.100 · GTC 0.500 · SC 0.250" in page.text
    assert "IoU 0.000 · GTC — · SC 0.250" in page.text  # undefined reads as a dash


def test_pattern_counts_are_a_bar_chart_with_limits(page: Page) -> None:
    charts = page.find("svg", class_="patterns")
    assert len(charts) == 1
    assert len(page.find("rect", class_="bar")) == 3  # one bar per pattern in the counts
    assert len(page.find("line", class_="limit")) == 1  # distractor's <= 0.05
    assert "4 (66.7 %)" in page.text


def test_fidelity_curves_are_plotted_with_the_gap(page: Page) -> None:
    assert len(page.find("svg", class_="fidelity")) == 1
    lines = page.find("polyline", class_="curve")
    assert sorted(line["class"] for line in lines) == ["curve curve-lif", "curve curve-mif", "curve curve-random"]
    assert all(len(line["points"].split()) == 10 for line in lines)
    assert len(page.find("polygon", class_="gap-area")) == 1
    assert "gap AUC(LIF) − AUC(MIF): 0.2000" in page.text


def test_fidelity_curves_from_a_nested_summary() -> None:
    result = {
        "fidelity": {
            "fractions": [0, 0.5],
            "orders": {"mif": {"mean_curve": [1, 0]}, "lif": {"mean_curve": [1, 1]}},
            "gap": 0.5,
        }
    }
    plot = report_html.fidelity_plot(result)
    assert plot is not None and [line["order"] for line in plot["lines"]] == ["mif", "lif"]
    assert plot["gap"] == 0.5
    assert report_html.fidelity_plot({"measurements": []}) is None


def test_drift_clusters_show_shares_and_crops(page: Page) -> None:
    assert page.find("section", class_="drift-clusters")
    assert len(page.find("img", class_="crop")) == 1
    assert "image 1 segment 2, image 2 segment 3" in page.text  # no crops: where the examples are
    assert "+0.010" in page.text and "-0.010" in page.text
    assert "decoy: 2 kept segments, mostly in cluster 0" in page.text
    assert len(page.find("rect", class_="share-b")) == 2  # the empty cluster is left out


def test_page_escapes_what_it_shows() -> None:
    results = sample_results()[:1]
    results[0]["details"] = ["<script>alert(1)</script>"]
    text = report_html.render_html(report_results.build_document(results))
    assert "<script>" not in text
    assert "&lt;script&gt;" in text


def test_empty_run_renders() -> None:
    page = Page(report_html.render_html(report_results.build_document([])))
    assert page.problems == []
    assert "No saliency checks ran." in page.text


def test_missing_jinja2_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_jinja(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "jinja2":
            raise ImportError("No module named 'jinja2'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_jinja)
    with pytest.raises(report_html.ReportDependencyError, match=r"pytest-saliency\[report\]"):
        report_html.render_html(report_results.build_document([]))


def test_sanity_curve_is_plotted_with_its_final_threshold() -> None:
    result = {
        "sanity": {
            "test": "cascading",
            "similarity": "spearman_abs",
            "final": "<= 0.3",
            "steps": ["original", "10", "6", "3", "0"],
            "curve": [1.0, 0.8, 0.67, None, 0.11],
        }
    }
    plot = report_html.sanity_plot(result)
    assert plot is not None
    assert [marker["name"] for marker in plot["markers"]] == ["original", "10", "6", "0"]  # null: no point
    assert [label["name"] for label in plot["labels"]] == ["original", "10", "6", "3", "0"]
    top, bottom = plot["top"], plot["x_axis_y"]
    assert plot["markers"][0]["y"] == top  # similarity 1 at the top, 0 on the axis
    assert plot["threshold"]["y"] == pytest.approx(bottom - 0.3 * (bottom - top), abs=0.1)
    assert plot["axis_label"] == "layers randomised, cumulatively from the output down"
    document = {
        "generator": {"version": "0", "pytest": "9"},
        "results": [{"check": "s", "status": "passed", "measurements": [], **result}],
    }
    html = report_html.render_html(document)
    assert html.count('class="marker-sanity"') == 4 and '<svg class="chart sanity"' in html
    assert report_html.sanity_plot({"sanity": {"test": "random_logit"}}) is None
    assert report_html.sanity_plot({"measurements": []}) is None
