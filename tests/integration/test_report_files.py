"""Reports from real runs: ``--saliency-json`` (checked against its schema), ``--saliency-report``
(its structure, and a screenshot in headless Chromium), JUnit properties, the same JSON under
``pytest -n 2``, ``pytest-saliency report`` and the terminal progress bar.

The tiny model's scores are exact (see conftest): ``looks_at=both`` gives IoU = SC = 0.64 and
GTC = 1 on every sample; ``looks_at=object`` scores 1 everywhere.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

# Imported here, before pytester snapshots sys.modules, so in-process runs do not import them again.
import pytest_saliency.report.html  # noqa: F401
import pytest_saliency.report.thumbnails  # noqa: F401
from pytest_saliency.cli import main
from pytest_saliency.report.results import schema, validation_errors
from pytest_saliency.report.screenshot import find_chromium, screenshot

Image = pytest.importorskip("PIL.Image")
pytest.importorskip("jinja2")
pytest.importorskip("jsonschema")

WriteSpec = Callable[..., Path]

CHECKS = """\
- id: cov
  shared_interest:
    iou: {mean: ">= 0.9"}
    gtc: {min: ">= 0.9"}
- id: pat
  patterns:
    max_fraction: {distractor: 0.05}
- id: by-class
  shared_interest:
    gtc: {min: ">= 0.9"}
    per_class: true
"""
ITEMS = ["cov[grad]", "pat[grad]", "by-class[grad-circle]", "by-class[grad-square]", "by-class[grad-triangle]"]


def png_size(data: str) -> tuple[int, int]:
    picture = Image.open(io.BytesIO(base64.b64decode(data)))
    assert picture.format == "PNG"
    return picture.size  # type: ignore[no-any-return]


class Page(HTMLParser):
    """The parts of the report the tests look at; ``problems`` lists unbalanced tags."""

    VOID = {"br", "hr", "img", "meta", "link", "input", "source", "wbr"}

    def __init__(self, text: str) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.problems: list[str] = []
        self.elements: list[tuple[str, dict[str, str], tuple[str, ...]]] = []
        self.feed(text)
        self.close()
        self.problems += [f"unclosed {tag}" for tag in self.stack]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}, tuple(self.stack)))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}, tuple(self.stack)))

    def handle_endtag(self, tag: str) -> None:
        if self.stack and self.stack[-1] == tag:
            self.stack.pop()
        else:
            self.problems.append(f"</{tag}> in {self.stack[-3:]}")

    def having(self, tag: str, css_class: str) -> list[dict[str, str]]:
        return [a for t, a, _ in self.elements if t == tag and css_class in a.get("class", "").split()]


def run_with_reports(project: pytest.Pytester, *arguments: str, subprocess_run: bool = False) -> pytest.RunResult:
    run = project.runpytest_subprocess if subprocess_run else project.runpytest_inprocess
    return run("--saliency-json", "out/results.json", "--saliency-report", "out/report.html", *arguments)


def comparable(document: dict[str, Any]) -> dict[str, Any]:
    """What must not depend on the run: everything but times."""
    results = [{k: v for k, v in r.items() if k != "duration"} for r in document["results"]]
    return {"summary": document["summary"], "artifacts": document["artifacts"], "results": results}


def test_json_results_match_the_schema_and_the_measurements(write_spec: WriteSpec, project: pytest.Pytester) -> None:
    write_spec(looks_at="both", checks=CHECKS)
    result = run_with_reports(project)
    result.assert_outcomes(passed=4, failed=1)
    result.stdout.fnmatch_lines(
        ["saliency results (JSON): out/results.json", "saliency report (HTML): out/report.html"]
    )

    document = json.loads((project.path / "out" / "results.json").read_text())
    assert validation_errors(document) == []
    assert document["schema_version"] == schema()["properties"]["schema_version"]["const"] == 1
    assert document["summary"] == {"total": 5, "passed": 4, "failed": 1, "warned": 0, "error": 0}
    assert document["artifacts"] == ["out/report.html"]
    results = document["results"]
    assert [r["nodeid"] for r in results] == [f"specs/x.saliency.yaml::{name}" for name in ITEMS]  # spec order
    cov = results[0]
    assert (cov["check"], cov["kind"], cov["method"], cov["status"], cov["line"]) == (
        "cov",
        "shared_interest",
        "grad",
        "failed",
        11,
    )
    assert [(m["name"], m["value"], m["threshold"], m["passed"]) for m in cov["measurements"]] == [
        ("iou.mean", pytest.approx(0.64), ">= 0.9", False),
        ("gtc.min", 1.0, ">= 0.9", True),
    ]
    assert cov["per_sample"]["index"] == list(range(6))
    assert cov["per_sample"]["iou"] == [pytest.approx(0.64)] * 6
    assert len(cov["worst"]) == 5
    assert all(png_size(row["thumbnail"]) == (4 * 96 + 3 * 2, 96) for row in cov["worst"])  # 16 px, x6
    assert len(results[1]["pattern_counts"]) == 8  # IoU and SC of 0.64 are neither low nor high: no pattern
    assert len(results[1]["worst"]) == 5  # no bounded pattern has samples: the lowest IoU overall
    assert results[2]["class_index"] == 0 and results[2]["variant"] == "grad-circle"
    assert not list((project.path / "out").glob(".*"))  # no temporary files left


def test_html_report_has_the_sections_and_one_image_per_worst_example(
    write_spec: WriteSpec, project: pytest.Pytester
) -> None:
    write_spec(looks_at="both", checks=CHECKS)
    write_spec("broken", text="version: 1\nmodel: {factori: x:y}\n")
    run_with_reports(project).assert_outcomes(passed=4, failed=2)
    text = (project.path / "out" / "report.html").read_text()
    page = Page(text)
    assert page.problems == []
    assert text.lstrip().lower().startswith("<!doctype html>")
    assert "http://" not in text and "https://" not in text  # nothing to fetch
    assert len(page.having("section", "spec")) == 2
    assert len(page.having("table", "summary")) == 2
    checks = {a["id"].split("-", 3)[-1]: "open" in a for a in page.having("details", "check")}
    assert checks == {
        "0-spec": True,  # the broken spec: an error, open
        "0-cov-grad": True,
        "1-pat-grad": False,
        "2-by-class-grad-circle": False,
        "3-by-class-grad-square": False,
        "4-by-class-grad-triangle": False,
    }
    document = json.loads((project.path / "out" / "results.json").read_text())
    examples = sum(len(r.get("worst", [])) for r in document["results"])
    figures = page.having("figure", "example")
    images = [a for t, a, stack in page.elements if t == "img" and "figure" in stack]
    assert len(figures) == len(images) == examples == 5 + 5 + 3 * 2  # cov, pat, by-class (2 samples per class)
    assert all(a["src"].startswith("data:image/png;base64,") for a in images)
    assert len(page.having("svg", "patterns")) == 1


def test_report_command_renders_the_same_page_from_the_json(write_spec: WriteSpec, project: pytest.Pytester) -> None:
    write_spec(looks_at="both", checks=CHECKS)
    run_with_reports(project)
    out = project.path / "out"
    assert main(["report", str(out / "results.json"), "-o", str(out / "again.html")]) == 0
    assert (out / "again.html").read_text() == (out / "report.html").read_text()


def test_junit_properties_are_rounded_with_threshold_and_status(
    write_spec: WriteSpec, project: pytest.Pytester
) -> None:
    write_spec(looks_at="both")
    project.runpytest_inprocess("--junitxml=junit.xml").assert_outcomes(failed=1)
    case = ET.parse(project.path / "junit.xml").getroot().find(".//testcase")
    assert case is not None
    properties = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert properties == {
        "saliency.iou.mean": "0.64",  # 0.6399999856948853 as float32 maths gives it
        "saliency.iou.mean.threshold": ">= 0.9",
        "saliency.iou.mean.interval": "0.0",  # every sample scores the same
        "saliency.iou.mean.lower": "0.64",
        "saliency.iou.mean.upper": "0.64",
        "saliency.iou.mean.status": "failed",
        "saliency.status": "failed",
    }


def test_reports_are_not_written_without_the_options(write_spec: WriteSpec, project: pytest.Pytester) -> None:
    write_spec()
    result = project.runpytest_inprocess()
    result.assert_outcomes(passed=1)
    assert "saliency report" not in result.stdout.str()
    assert not (project.path / "out").exists()


def test_xdist_writes_the_same_json_once_from_the_controller(write_spec: WriteSpec, project: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    write_spec("x", looks_at="both", checks=CHECKS)
    write_spec("y", checks=CHECKS)
    run_with_reports(project).assert_outcomes(passed=9, failed=1)
    plain = json.loads((project.path / "out" / "results.json").read_text())
    plain_html = (project.path / "out" / "report.html").read_text()

    result = run_with_reports(project, "-n", "2", "--dist", "loadscope", subprocess_run=True)
    result.assert_outcomes(passed=9, failed=1)
    assert result.stdout.str().count("saliency results (JSON): out/results.json") == 1
    parallel = json.loads((project.path / "out" / "results.json").read_text())
    assert validation_errors(parallel) == []
    assert comparable(parallel) == comparable(plain)
    # the page differs only in the time it was made
    strip = lambda text: re.sub(r"\d{4}-\d\d-\d\dT[\d:+.]+", "TIME", text)  # noqa: E731
    assert strip((project.path / "out" / "report.html").read_text()) == strip(plain_html)


# --- the report in a browser ----------------------------------------------------------------


@pytest.mark.skipif(find_chromium() is None, reason="headless Chromium is not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(write_spec: WriteSpec, project: pytest.Pytester) -> None:
    write_spec(looks_at="both", checks=CHECKS)
    run_with_reports(project)
    png = screenshot(project.path / "out" / "report.html", project.path / "out" / "report.png", size=(1200, 1600))
    picture = Image.open(png).convert("RGB")
    assert picture.size == (1200, 1600)
    colours = picture.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) >= 50  # text, badges, thumbnails: not a blank page
    white = max(count for count, colour in colours if colour == (255, 255, 255))
    assert white < 0.95 * 1200 * 1600
    header = picture.crop((0, 0, 1200, 40)).getcolors(maxcolors=1 << 20)
    assert header is not None and max(header)[1] == (0x24, 0x29, 0x2F)  # the page's dark header rendered
    reds = sum(count for count, (r, g, b) in colours if r > 180 and g < 80 and b < 80)
    assert reds > 100  # the failed badges


# --- the progress bar -------------------------------------------------------------------------


def screen(raw: str) -> list[str]:
    """What a terminal shows after ``raw``: handles the cursor moves the bar uses (CR, LF,
    up, column, erase line) and drops other escape sequences (colours, cursor visibility)."""
    lines: list[list[str]] = [[]]
    row = column = 0
    for token in re.finditer(r"\x1b\[([?\d;]*)([A-Za-z])|\r|\n|[^\x1b\r\n]", raw):
        text = token.group()
        if text == "\r":
            column = 0
        elif text == "\n":
            row += 1
            column = 0
            while len(lines) <= row:
                lines.append([])
        elif text.startswith("\x1b["):
            argument, command = token.group(1), token.group(2)
            if command == "A":
                row = max(0, row - int(argument or 1))
            elif command == "G":
                column = int(argument or 1) - 1
            elif command == "K":
                lines[row] = [] if argument == "2" else lines[row][:column]
        else:
            line = lines[row]
            line.extend(" " * (column - len(line)))
            if column < len(line):
                line[column] = text
            else:
                line.append(text)
            column += 1
    return ["".join(line).rstrip() for line in lines]


def run_in_terminal(project: pytest.Pytester, *arguments: str) -> str:
    """pytest in a pseudo-terminal (stdout and stderr are a TTY), its raw output."""
    pty = pytest.importorskip("pty")
    import fcntl
    import select
    import struct
    import termios

    main_fd, child_fd = pty.openpty()
    fcntl.ioctl(child_fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
    environment = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_ADDOPTS", "NO_COLOR", "FORCE_COLOR")}
    environment.update(TERM="xterm", COLUMNS="100", PYTHONPATH=os.pathsep.join(sys.path))
    process = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--color=no", *arguments],
        cwd=project.path,
        stdin=child_fd,
        stdout=child_fd,
        stderr=child_fd,
        env=environment,
        close_fds=True,
    )
    os.close(child_fd)
    chunks = []
    while True:
        ready, _, _ = select.select([main_fd], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(main_fd, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        elif process.poll() is not None:
            break
    process.wait(timeout=120)
    os.close(main_fd)
    return b"".join(chunks).decode("utf-8", "replace")


def test_progress_bar_shows_in_a_terminal_and_leaves_pytests_output_intact(
    write_spec: WriteSpec, project: pytest.Pytester
) -> None:
    write_spec(checks=CHECKS)
    raw = run_in_terminal(project)
    assert "x: 3 checks" in raw and "images/s" in raw, raw  # the bar (spec name: checks in the pass) was drawn
    shown = screen(raw)
    assert "specs/x.saliency.yaml .....  " in "\n".join(line + "  " for line in shown), shown
    assert not any("images/s" in line for line in shown), shown  # ... and erased
    assert any(re.search(r"=+ 5 passed in ", line) for line in shown), shown

    quiet = run_in_terminal(project, "-q")
    assert "images/s" not in quiet
    assert any(re.search(r"5 passed in ", line) for line in screen(quiet))
