"""The ``pytest-saliency`` command: validate spec files, print the JSON Schema."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pytest_saliency.cli import main
from pytest_saliency.report import html as report_html
from pytest_saliency.report import results as report_results
from tests.unit.report.hand_made import sample_results

SPEC = """\
version: 1
model:
  factory: mypkg.model:build
data:
  npz: data.npz
attributions:
  grad: {method: Saliency}
checks:
  - id: coverage
    shared_interest:
      gtc: {mean: ">= 0.5"}
"""


@pytest.fixture
def spec_dir(tmp_path: Path) -> Path:
    np.savez(
        tmp_path / "data.npz",
        images=np.zeros((2, 3, 8, 8), np.float32),
        masks=np.zeros((2, 8, 8), bool),
        labels=np.zeros(2, np.int64),
    )
    return tmp_path


def test_validate_a_valid_spec(spec_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = spec_dir / "good.saliency.yaml"
    path.write_text(SPEC)
    assert main(["validate", str(path)]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "1 of 1 spec files valid" in captured.err


def test_validate_prints_one_line_per_problem(spec_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = spec_dir / "typo.saliency.yaml"
    path.write_text(SPEC.replace("  npz: data.npz\n", "  npz: data.npz\n  limt: 8\n"))
    assert main(["validate", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == f"{path}:6:3: data: unknown key 'limt' (did you mean 'limit'?)\n"
    assert "0 of 1 spec files valid" in captured.err


def test_validate_searches_folders(spec_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (spec_dir / "a.saliency.yaml").write_text(SPEC)
    nested = spec_dir / "nested"
    nested.mkdir()
    (nested / "b.saliency.yml").write_text(SPEC.replace("data.npz", "../data.npz").replace("Saliency", "Salency"))
    (spec_dir / "notes.yaml").write_text("not: a spec\n")  # ignored: not *.saliency.yaml
    assert main(["validate", str(spec_dir)]) == 1
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"{nested / 'b.saliency.yml'}:7:18: ")
    assert "did you mean 'Saliency'?" in lines[0]
    assert "1 of 2 spec files valid" in captured.err


def test_validate_with_nothing_to_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(tmp_path)]) == 2
    assert "no *.saliency.yaml files" in capsys.readouterr().err


def test_schema_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["title"].startswith("pytest-saliency spec")
    assert {"model", "data", "attributions", "checks"} <= set(schema["properties"])


def test_a_command_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        main([])
    assert raised.value.code == 2
    assert "usage: pytest-saliency" in capsys.readouterr().err


# --- the report command: the HTML page again from a results file -------------------------------------------------------------------------


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
