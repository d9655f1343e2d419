"""Reports: thumbnails, the JSON results document and its schema, the HTML page, the progress
bar and the ``pytest-saliency report`` command, on hand-made results (no model runs here)."""

from __future__ import annotations

import base64
import io
import json
import math
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from pytest_saliency.cli import main
from pytest_saliency.loaders.source import SampleBatch
from pytest_saliency.report import html as report_html
from pytest_saliency.report import outputs as report_outputs
from pytest_saliency.report import progress as report_progress
from pytest_saliency.report import results as report_results
from pytest_saliency.report import thumbnails
from pytest_saliency.report.format import fixed, percent, rounded, signed, significant, with_interval
from pytest_saliency.report.terminal import failure_text

Image = pytest.importorskip("PIL.Image")
jsonschema = pytest.importorskip("jsonschema")


def decode(png: str) -> Any:
    picture = Image.open(io.BytesIO(base64.b64decode(png)))
    picture.load()
    return picture.convert("RGB")


# --- markup ------------------------------------------------------------------------------------

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class Page(HTMLParser):
    """Parses a page strictly enough for tests: every non-void element closed in order, and
    what the tests look at collected (elements with their attributes, and the text)."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.problems: list[str] = []
        self.elements: list[tuple[str, dict[str, str], tuple[str, ...]]] = []  # tag, attributes, ancestors
        self.doctype = ""
        self.text_parts: list[str] = []
        self.feed(text)
        self.close()
        if self.stack:
            self.problems.append(f"unclosed: {self.stack}")

    def handle_decl(self, decl: str) -> None:
        self.doctype = decl

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}, tuple(self.stack)))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}, tuple(self.stack)))

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            self.problems.append(f"end tag of void element {tag}")
        elif not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text_parts.append(data)

    @property
    def text(self) -> str:
        return " ".join("".join(self.text_parts).split())

    def find(self, tag: str, **attributes: str) -> list[dict[str, str]]:
        return [
            attrs
            for name, attrs, _ in self.elements
            if name == tag and all(attributes[k] in attrs.get(k.rstrip("_"), "").split() for k in attributes)
        ]

    def inside(self, tag: str, ancestor: str) -> list[dict[str, str]]:
        return [attrs for name, attrs, stack in self.elements if name == tag and ancestor in stack]


# --- hand-made results ------------------------------------------------------------------------


def png_of(colour: tuple[float, float, float], size: int = 8) -> str:
    return thumbnails.png_base64(torch.tensor(colour).expand(size, size, 3).clone())


def worst_rows(count: int, thumbnail: bool = True) -> list[dict[str, Any]]:
    return [
        {
            "index": index,
            "label": "circle",
            "predicted": "square" if index % 2 else "circle",
            "iou": 0.1 * index,
            "gtc": None if index == 0 else 0.5,
            "sc": 0.25,
            "patterns": ["distractor"] if index % 2 else [],
            **({"thumbnail": png_of((0.9, 0.1, 0.1))} if thumbnail else {}),
        }
        for index in range(count)
    ]


def measurement(
    name: str, value: float | None, threshold: str, passed: bool, interval: float | None = None
) -> dict[str, Any]:
    return {"name": name, "value": value, "threshold": threshold, "passed": passed, "interval": interval}


def sample_results() -> list[dict[str, Any]]:
    """One of each: shared_interest (failing), patterns (passing), fidelity, drift, spec error."""
    fractions = [i / 10 for i in range(10)]
    base = {
        "spec": "shapes",
        "spec_path": "specs/shapes.saliency.yaml",
        "severity": "fail",
        "samples": 6,
        "undefined": 0,
    }
    return [
        {
            **base,
            "nodeid": "specs/shapes.saliency.yaml::cov[grad]",
            "line": 20,
            "check": "cov",
            "kind": "shared_interest",
            "variant": "grad",
            "method": "grad",
            "class_index": None,
            "status": "failed",
            "passed": False,
            "undefined": 1,
            "measurements": [
                measurement("iou.mean", 0.64, ">= 0.9", False),
                measurement("gtc.mean", float("nan"), ">= 0.5", False),
            ],
            "details": ["worst samples by iou (of 6; 1 undefined):"],
            "per_sample": {"index": [0, 1, 2], "iou": [0.1, None, 0.3]},
            "worst": worst_rows(3),
            "worst_by": "iou",
        },
        {
            **base,
            "nodeid": "specs/shapes.saliency.yaml::pat[grad]",
            "line": 25,
            "check": "pat",
            "kind": "patterns",
            "variant": "grad",
            "method": "grad",
            "class_index": None,
            "status": "passed",
            "measurements": [measurement("fraction distractor", 0.0, "<= 0.05", True)],
            "details": [],
            "pattern_counts": {"human_aligned": 4, "distractor": 0, "confuser": 2},
            "pattern_fractions": {"human_aligned": 0.666667, "distractor": 0.0, "confuser": 0.333333},
            "worst": worst_rows(2),
            "worst_in": None,
        },
        {
            **base,
            "nodeid": "specs/shapes.saliency.yaml::faithful[ig]",
            "line": 30,
            "check": "faithful",
            "kind": "fidelity",
            "variant": "ig",
            "method": "ig",
            "class_index": None,
            "status": "warned",
            "severity": "warn",
            "measurements": [measurement("gap", 0.2, ">= 0.3", False, 0.05)],
            "curves": {
                "mif": [1 - f for f in fractions],
                "lif": [1.0 - 0.1 * f for f in fractions],
                "random": [1 - 0.5 * f for f in fractions],
            },
            "fractions": fractions,
        },
        {
            **base,
            "nodeid": "specs/shapes.saliency.yaml::drifted[grad]",
            "line": 40,
            "check": "drifted",
            "kind": "drift",
            "variant": "grad",
            "method": "grad",
            "class_index": None,
            "status": "passed",
            "measurements": [measurement("max |shift|", 0.01, "<= 0.05", True)],
            "against": "other weights",
            "drift": {
                "max_abs_shift": 0.01,
                "clusters": [
                    {
                        "cluster": 0,
                        "count": 5,
                        "share_a": 0.3,
                        "share_b": 0.31,
                        "shift": 0.01,
                        "representatives": [[0, 1]],
                        "crops": [png_of((0.1, 0.1, 0.9))],
                    },
                    {"cluster": 1, "count": 0, "share_a": 0.0, "share_b": 0.0, "shift": 0.0, "representatives": []},
                    {
                        "cluster": 2,
                        "count": 3,
                        "share_a": 0.2,
                        "share_b": 0.19,
                        "shift": -0.01,
                        "representatives": [[1, 2], [2, 3]],
                    },
                ],
            },
            "regions": {"decoy": {"segments": 2, "cluster": 0, "share_a": 0.1, "share_b": 0.1}},
        },
        {
            "spec": "broken",
            "spec_path": "specs/broken.saliency.yaml",
            "nodeid": "specs/broken.saliency.yaml::spec",
            "line": 3,
            "check": "spec",
            "variant": "",
            "status": "error",
            "measurements": [],
            "message": "specs/broken.saliency.yaml:3:5: model: unknown key 'factori' (did you mean 'factory'?)",
        },
    ]


# --- thumbnails -------------------------------------------------------------------------------


def test_example_strip_scales_small_images_up_three_times_with_four_panels() -> None:
    image = torch.zeros(3, 32, 32)
    image[0, 8:16, 8:16] = 1.0
    mask = torch.zeros(32, 32, dtype=torch.bool)
    mask[8:16, 8:16] = True
    saliency = mask.float()
    strip = decode(thumbnails.example_strip(image, saliency, mask, mask))
    assert strip.size == (4 * 96 + 3 * thumbnails.GAP, 96)
    # panel 1 is the image, nearest-upscaled x3: its red square covers pixels 24..47
    assert strip.getpixel((30, 30)) == (255, 0, 0)
    assert strip.getpixel((20, 20)) == (0, 0, 0)
    # panel 4 (the region): white inside, the ground-truth outline green at its edge
    fourth = 3 * (96 + thumbnails.GAP)
    assert strip.getpixel((fourth + 36, 36)) == (255, 255, 255)
    edge = strip.getpixel((fourth + 24, 36))
    assert edge[1] > 150 and edge[0] < 100, edge


def test_example_strip_handles_grey_images_masks_of_another_size_and_big_images() -> None:
    grey = torch.rand(1, 16, 16)
    strip = decode(
        thumbnails.example_strip(
            grey, torch.rand(16, 16), torch.ones(8, 8, dtype=torch.bool), torch.zeros(16, 16, dtype=torch.bool)
        )
    )
    assert strip.size == (4 * 96 + 3 * thumbnails.GAP, 96)  # 16 px: x6
    big = decode(
        thumbnails.example_strip(
            torch.rand(3, 200, 100), torch.rand(200, 100), torch.rand(200, 100) > 0.5, torch.rand(200, 100) > 0.5
        )
    )
    assert big.size[1] == 96  # scaled down to the panel size


def test_outline_is_the_boundary_of_the_mask() -> None:
    mask = torch.zeros(6, 6, dtype=torch.bool)
    mask[1:5, 1:5] = True
    edge = thumbnails.outline(mask)
    assert edge.sum() == 12  # the 4x4 square's ring
    assert not edge[2:4, 2:4].any()
    assert thumbnails.outline(mask, width=2).sum() == 16


def test_to_rgb_scales_values_outside_0_1_for_display() -> None:
    rgb = thumbnails.to_rgb(torch.tensor([[[-1.0, 1.0]]]).expand(3, 1, 2))
    assert rgb.shape == (1, 2, 3)
    assert rgb.min() == 0 and rgb.max() == 1


def test_segment_crop_cuts_the_segment_of_the_grid() -> None:
    image = torch.zeros(3, 16, 16)
    image[2, 8:16, 0:8] = 1.0  # segment (row 1, column 0) of an 8-px grid is blue
    crop = decode(thumbnails.segment_crop(image, 1, 0, 8))
    assert crop.size == (48, 48)
    assert crop.getcolors() == [(48 * 48, (0, 0, 255))]


def reader(images: torch.Tensor, masks: torch.Tensor, maps: torch.Tensor | None = None) -> thumbnails.ReadSamples:
    """What the engine gives ``attach``: the samples at ``indices`` read again, with maps."""
    asked: list[list[int]] = []

    def read(indices: list[int], with_maps: bool) -> tuple[SampleBatch, torch.Tensor | None, torch.Tensor | None]:
        asked.append(indices)
        chosen = torch.tensor(indices, dtype=torch.long)
        batch = SampleBatch(chosen, images[chosen], masks[chosen], torch.zeros(len(indices), dtype=torch.long))
        if maps is None or not with_maps:
            return batch, None, None
        return batch, maps[chosen], maps[chosen] > 0.5

    read.asked = asked  # type: ignore[attr-defined]  # what the test inspects
    return read


def test_attach_adds_thumbnails_to_worst_rows_and_crops_to_drift_clusters() -> None:
    images = torch.rand(4, 3, 16, 16)
    masks = torch.rand(4, 16, 16) > 0.5
    maps = torch.rand(4, 16, 16)
    extra: dict[str, Any] = {"worst": [{"index": 3}, {"index": 1}]}
    read = reader(images, masks, maps)
    thumbnails.attach(extra, read)
    assert read.asked == [[3, 1]]  # type: ignore[attr-defined]  # only the shown samples are read again
    assert all(decode(row["thumbnail"]).size == (390, 96) for row in extra["worst"])

    drift: dict[str, Any] = {
        "drift": {
            "settings": {"segments": {"patch": 8}},
            "clusters": [
                {"cluster": 0, "representatives": [[0, 3], [2, 0], [1, 1], [3, 2]]},
                {"cluster": 1, "representatives": []},
            ],
        }
    }
    thumbnails.attach(drift, reader(images, masks))
    clusters = drift["drift"]["clusters"]
    assert len(clusters[0]["crops"]) == thumbnails.CROPS_PER_CLUSTER
    assert "crops" not in clusters[1]


def test_attach_without_maps_leaves_the_worst_rows_without_thumbnails() -> None:
    """A check without an attribution method passes no maps: its rows get no strip."""
    extra: dict[str, Any] = {"worst": [{"index": 0}]}
    thumbnails.attach(extra, reader(torch.rand(1, 3, 8, 8), torch.zeros(1, 8, 8, dtype=torch.bool)))
    assert "thumbnail" not in extra["worst"][0]


# --- formatting ---------------------------------------------------------------------------------


def test_formatters_show_undefined_values_as_the_caller_asks() -> None:
    assert fixed(0.33012) == "0.3301" and fixed(None) == "—" and fixed(None, undefined="undefined") == "undefined"
    assert fixed("circle") == "circle" and fixed(True) == "True"  # labels and flags as they are
    assert significant(1.23456e-5) == "1.235e-05" and significant(None) == "undefined"
    assert signed(0.125) == "+0.125" and signed(-0.5, 1) == "-0.5" and signed(None) == "—"
    assert percent(0.125) == "12.5 %" and percent(None) == "—"
    measurement = {"value": 0.33012, "interval": 0.02101}
    assert with_interval(measurement) == "0.3301 ± 0.0210"
    assert with_interval(measurement, 4, 3) == "0.3301 ± 0.021"
    assert with_interval({"value": 0.5, "interval": None}) == "0.5000"
    assert with_interval({"value": None, "interval": 0.1}, undefined="—") == "—"


def test_failure_text_reads_nan_as_undefined() -> None:
    """An outcome's own dict (not yet JSON-safe) may carry NaN: the text shows no ``± nan``."""
    nan = float("nan")
    result = {
        "samples": 1,
        "undefined": 0,
        "measurements": [
            {"name": "gtc.mean", "value": 0.25, "threshold": ">= 0.5", "passed": False, "interval": nan},
            {
                "name": "iou.mean",
                "value": 0.25,
                "threshold": ">= 0.2",
                "passed": False,
                "interval": nan,
                "lower": nan,
                "upper": nan,
                "inconclusive": True,
                "needed_samples": None,
            },
        ],
        "details": [],
    }
    text = failure_text("s.saliency.yaml:3", "check 'c' failed", result)
    assert "nan" not in text
    assert "gtc.mean = 0.25 (want >= 0.5)" in text
    assert "iou.mean = 0.25, no interval for >= 0.2: it needs at least 2 samples" in text
    assert result["measurements"][0]["interval"] != result["measurements"][0]["interval"]  # the input is left as it was


# --- JSON results -------------------------------------------------------------------------------


def test_document_matches_the_shipped_schema_and_is_sorted() -> None:
    results = sample_results()
    document = report_results.build_document(list(reversed(results)), artifacts=["report.html"])
    assert report_results.validation_errors(document) == []
    jsonschema.Draft202012Validator.check_schema(report_results.schema())
    assert document["format"] == "pytest-saliency-results"
    assert document["schema_version"] == report_results.SCHEMA_VERSION == 1
    assert [r["nodeid"].split("::")[1] for r in document["results"]] == [
        "spec",
        "cov[grad]",
        "pat[grad]",
        "faithful[ig]",
        "drifted[grad]",
    ]
    assert document["summary"] == {"total": 5, "passed": 2, "failed": 1, "warned": 1, "error": 1}
    assert document["artifacts"] == ["report.html"]
    # NaN is never written: an undefined aggregate is null
    cov = document["results"][1]
    assert cov["measurements"][1]["value"] is None
    # a spec error gets every required key
    error = document["results"][0]
    assert (error["kind"], error["method"], error["severity"], error["samples"]) == (None, None, "fail", 0)
    json.loads(report_results.dumps(document))  # strict JSON (allow_nan=False)


def test_schema_rejects_what_it_should() -> None:
    document = report_results.build_document(sample_results())
    broken = json.loads(report_results.dumps(document))
    broken["results"][0]["status"] = "maybe"
    del broken["results"][1]["measurements"]
    broken["schema_version"] = 2
    problems = report_results.validation_errors(broken)
    assert any(p.startswith("results/0/status") for p in problems), problems
    assert any(p.startswith("results/1") and "measurements" in p for p in problems), problems
    assert any(p.startswith("schema_version") for p in problems), problems


def test_result_artifacts_are_listed_once_at_the_top() -> None:
    results = sample_results()
    results[3]["artifacts"] = ["specs/saliency-baselines/x.obtained.json"]
    document = report_results.build_document(results, artifacts=["r.html", "r.html"])
    assert document["artifacts"] == ["r.html", "specs/saliency-baselines/x.obtained.json"]


def test_load_document_checks_format_and_version(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    report_results.write_document(good, report_results.build_document(sample_results()))
    assert report_results.load_document(good)["summary"]["total"] == 5
    for name, text, message in [
        ("junk.json", "{not json", "cannot read"),
        ("other.json", '{"format": "something-else"}', "not a pytest-saliency results file"),
        ("future.json", json.dumps({"format": "pytest-saliency-results", "schema_version": 99}), "version 99"),
    ]:
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(report_results.ResultsFileError, match=message):
            report_results.load_document(path)


def test_write_run_outputs_reports_paths_and_problems(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    outputs = report_outputs.write_run_outputs(
        sample_results(), report_path=str(tmp_path / "r.html"), json_path=str(tmp_path / "r.json")
    )
    assert outputs.lines == ["saliency results (JSON): r.json", "saliency report (HTML): r.html"]
    assert not outputs.missing
    (tmp_path / "blocked").write_text("a file, not a folder")
    outputs = report_outputs.write_run_outputs(sample_results(), json_path=str(tmp_path / "blocked" / "r.json"))
    assert outputs.lines[0].startswith("saliency results (JSON): could not write blocked/r.json")
    assert outputs.missing


def test_significant_digits_for_junit() -> None:
    assert rounded(0.6399999856948853) == 0.64
    assert rounded(123456789.0) == 123457000.0
    assert rounded(1.23456789e-7) == 1.23457e-7
    assert math.isnan(rounded(float("nan")))


# --- HTML ---------------------------------------------------------------------------------------


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


# --- the report command -------------------------------------------------------------------------


def test_report_command_renders_the_json_again(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "results.json"
    document = report_results.build_document(sample_results())
    report_results.write_document(results, document)
    assert main(["report", str(results), "-o", str(tmp_path / "again.html")]) == 0
    assert (tmp_path / "again.html").read_text() == report_html.render_html(document)
    assert "again.html" in capsys.readouterr().err
    assert main(["report", str(results)]) == 0  # default: beside the JSON
    assert (tmp_path / "results.html").is_file()


def test_report_command_fails_cleanly_on_a_bad_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path / "missing.json")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("pytest-saliency report: ") and "missing.json" in err
    assert "Traceback" not in err


# --- progress -----------------------------------------------------------------------------------


def terminal() -> tuple[Any, io.StringIO]:
    from rich.console import Console

    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=True, width=80, no_color=True), buffer


def test_progress_draws_a_transient_bar_and_returns_to_pytests_line() -> None:
    console, buffer = terminal()
    bar = report_progress.TerminalProgress(console, column=lambda: 27)
    bar("shapes: ig", 64, 256)
    assert bar.active
    bar("shapes: ig", 200, 256)
    bar("shapes: ig", 320, 256)  # the last batch may count past the total
    assert not bar.active
    out = buffer.getvalue()
    assert out.startswith("\n")  # the bar goes below pytest's line
    assert "shapes: ig" in out and "256/256" in out and "images/s" in out
    assert out.endswith("\x1b[1A\x1b[28G")  # back to pytest's line, column 28


def test_progress_starts_a_new_bar_per_computation_and_close_erases_an_unfinished_one() -> None:
    console, buffer = terminal()
    suspended: list[str] = []

    class Suspend:
        def __enter__(self) -> None:
            suspended.append("in")

        def __exit__(self, *args: Any) -> None:
            suspended.append("out")

    bar = report_progress.TerminalProgress(console, suspend=Suspend)
    bar("a", 1, 4)
    bar("b", 1, 4)  # another computation: the first bar goes
    bar.close()
    assert not bar.active
    assert buffer.getvalue().count("\x1b[1A\x1b[1G") == 2
    assert suspended == ["in", "out"] * 3  # every write happens with capture suspended
    bar.close()  # nothing to erase: no write, no suspend
    assert len(suspended) == 6


def fake_config(verbose: int = 0, worker: bool = False) -> Any:
    config = SimpleNamespace(getoption=lambda name: verbose, pluginmanager=SimpleNamespace(getplugin=lambda name: None))
    if worker:
        config.workerinput = {}
    return config


class TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_off_when_quiet_on_workers_and_without_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdout", TTY())
    monkeypatch.setattr("sys.stderr", TTY())
    monkeypatch.setenv("TERM", "xterm")
    assert report_progress.for_config(fake_config()) is not None
    assert report_progress.for_config(fake_config(verbose=-1)) is None
    assert report_progress.for_config(fake_config(worker=True)) is None
    monkeypatch.setenv("TERM", "dumb")
    assert report_progress.for_config(fake_config()) is None
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert report_progress.for_config(fake_config()) is None


# --- screenshot helper --------------------------------------------------------------------------


def test_find_chromium_honours_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from pytest_saliency.report import screenshot

    monkeypatch.setenv("PYTEST_SALIENCY_CHROMIUM", str(tmp_path / "nothing-here"))
    assert screenshot.find_chromium() is None
    with pytest.raises(FileNotFoundError, match="apt-get install chromium"):
        screenshot.screenshot(tmp_path / "r.html", tmp_path / "r.png")


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
