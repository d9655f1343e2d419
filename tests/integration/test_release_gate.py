"""The README's release-gate recipe and the pre-commit hook work as written."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from pytest_saliency import plugin
from pytest_saliency.cli import main

ROOT = Path(__file__).resolve().parents[2]  # the repository


def readme_yaml_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Gating a release") :]
    section = section[: section.index("\n## ", 1)]
    return re.findall(r"```yaml\n(.*?)```", section, flags=re.S)


def gate_command() -> list[str]:
    workflow = yaml.safe_load(readme_yaml_blocks()[0])
    steps = workflow["jobs"]["gate"]["steps"]
    (command,) = [step["run"] for step in steps if str(step.get("run", "")).startswith("pytest ")]
    return shlex.split(command)


def registered_options() -> set[str]:
    names: set[str] = set()

    class Group:
        def addoption(self, *flags: str, **_: object) -> None:
            names.update(flags)

    class Parser:
        def getgroup(self, *_: object) -> Group:
            return Group()

        def addini(self, *_: object, **__: object) -> None:
            pass

    plugin.pytest_addoption(Parser())  # type: ignore[arg-type]
    return names


def test_the_workflow_uses_only_options_that_exist() -> None:
    command = gate_command()
    assert command[:2] == ["pytest", "specs/"]
    options = {argument.split("=", 1)[0] for argument in command if argument.startswith("--saliency")}
    assert options <= registered_options()
    assert {
        "--saliency-set",
        "--saliency-strict",
        "--saliency-json",
        "--saliency-report",
        "--saliency-markdown",
    } <= options
    assert "--junitxml=saliency-junit.xml" in command


def test_the_gate_passes_the_production_weights_and_names_them(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The README's command, with the shipped clean weights as the candidate, from the repository
    root: every check passes by its interval, under --saliency-strict."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("PYTEST_ADDOPTS", "-p no:cacheprovider")
    results = tmp_path / "saliency.json"
    arguments = [
        argument.replace("candidate.pt", "examples/shapes/clean.pt")
        for argument in gate_command()[1:]
        if not argument.startswith(("--junitxml", "--saliency-json", "--saliency-report", "--saliency-markdown"))
    ]
    result = pytester.runpytest_inprocess(*arguments, f"--saliency-json={results}")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    document = json.loads(results.read_text())
    assert document["overrides"] == ["model.weights=examples/shapes/clean.pt", "decide=interval"]
    assert {r["decide"] for r in document["results"]} == {"interval"}
    assert {r["weights"]["path"] for r in document["results"]} == {"examples/shapes/clean.pt"}


def test_the_pre_commit_hook_validates_the_spec_files(capsys: pytest.CaptureFixture[str]) -> None:
    (hook,) = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    program, *arguments = shlex.split(hook["entry"])
    assert f'{program} = "pytest_saliency.cli:main"' in (ROOT / "pyproject.toml").read_text()  # the console script
    assert re.search(hook["files"], "specs/shapes.saliency.yaml") and not re.search(hook["files"], "specs/notes.yaml")
    assert hook["pass_filenames"] is True
    assert main([*arguments, str(ROOT / "specs/shapes.saliency.yaml")]) == 0
    assert "1 of 1 spec files valid" in capsys.readouterr().err
