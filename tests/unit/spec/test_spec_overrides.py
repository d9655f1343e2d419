"""``${VAR}`` substitution and ``KEY=VALUE`` overrides on the plain YAML data (spec/overrides.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_saliency.spec.overrides import Override, apply_overrides, parse_value, substitute_environment
from pytest_saliency.spec.source import SourceMap


def test_variables_are_replaced_in_strings_only_and_recorded() -> None:
    data = {"model": {"weights": "${W:-prod.pt}", "kwargs": {"n": 3}}, "name": "run-${TAG}-${TAG}", "seed": 0}
    out, records, problems = substitute_environment(data, {"TAG": "rc1"})
    assert out == {"model": {"weights": "prod.pt", "kwargs": {"n": 3}}, "name": "run-rc1-rc1", "seed": 0}
    assert records == {
        "model.weights": {"value": "prod.pt", "from": "${W:-prod.pt}"},
        "name": {"value": "run-rc1-rc1", "from": "run-${TAG}-${TAG}"},
    }
    assert problems == []


def test_an_empty_variable_takes_the_default_and_an_unset_one_without_default_is_a_problem() -> None:
    out, _, problems = substitute_environment({"a": ["${E:-x}", "${MISSING}", "$HOME and ${}"]}, {"E": ""})
    assert out == {"a": ["x", "", "$HOME and ${}"]}  # only ${NAME} forms are read
    (problem,) = problems
    assert problem.location == ("a", 1) and "MISSING is not set" in problem.message


def test_an_empty_variable_without_default_is_empty_not_a_problem() -> None:
    out, _, problems = substitute_environment({"a": "x${E}y"}, {"E": ""})
    assert out == {"a": "xy"} and problems == []


def test_a_value_that_is_one_variable_is_read_as_yaml() -> None:
    data = {"limit": "${N}", "threshold": "${T:->= 0.5}", "name": "n${N}", "weights": "${W}"}
    out, records, _ = substitute_environment(data, {"N": "4", "W": "cand.pt"})
    assert out == {"limit": 4, "threshold": ">= 0.5", "name": "n4", "weights": "cand.pt"}
    assert records["limit"] == {"value": "4", "from": "${N}"}


@pytest.mark.parametrize("argument", ["model.weights", "=x", "model..weights=x", ".x=1"])
def test_malformed_settings_are_refused(argument: str) -> None:
    with pytest.raises(ValueError, match="expects KEY=VALUE"):
        Override.parse(argument)


def test_values_are_yaml_and_list_items_are_addressed_by_index(tmp_path: Path) -> None:
    data = {"checks": [{"id": "a", "severity": "fail"}], "model": {"factory": "m:f"}}
    source = SourceMap()
    settings = [
        "checks.0.severity=warn",
        "checks.0.marks=[gate, nightly]",
        "seed=7",
        "model.weights=cand.pt",
        "data.npz=/abs/v.npz",
    ]
    records, problems = apply_overrides(data, source, [Override.parse(s) for s in settings], tmp_path)
    assert problems == []
    assert data["checks"][0] == {"id": "a", "severity": "warn", "marks": ["gate", "nightly"]}
    assert data["seed"] == 7
    assert data["model"]["weights"] == str(tmp_path / "cand.pt")  # a path: relative to the base
    assert data["data"] == {"npz": "/abs/v.npz"}  # created on the way; absolute paths stay
    assert records["checks.0.marks"] == {
        "value": "[gate, nightly]",
        "from": "--saliency-set checks.0.marks=[gate, nightly]",
    }
    assert source.override(("model", "weights")) == (("model", "weights"), "--saliency-set model.weights")
    assert source.override(("data",)) == (("data", "npz"), "--saliency-set data.npz")  # made by the override
    assert source.override(("checks", 0, "id")) is None


def test_a_mapping_set_whole_has_its_paths_made_absolute(tmp_path: Path) -> None:
    data: dict[str, object] = {}
    apply_overrides(data, SourceMap(), [Override.parse("model={factory: 'm:f', weights: w.pt}")], tmp_path)
    assert data == {"model": {"factory": "m:f", "weights": str(tmp_path / "w.pt")}}


def test_problems_name_the_option() -> None:
    data = {"checks": [{"id": "a"}], "seed": 0}
    overrides = [Override.parse(s, option="--set") for s in ("checks.2.id=b", "seed.x=1")]
    _, problems = apply_overrides(data, SourceMap(), overrides, Path("."))
    assert [(p.origin, p.message.split(":")[0]) for p in problems] == [
        ("--set checks.2.id", "checks has 1 items; no item 2"),
        ("--set seed.x", "seed is not a mapping"),
    ]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        (">= 0.5", ">= 0.5"),  # a threshold, not a YAML block scalar
        ("<= 0.1", "<= 0.1"),
        ("[grad", "[grad"),  # not YAML: the plain string
        ("a: b: c", "a: b: c"),
        ("0.5", 0.5),
        ("[grad, ig]", ["grad", "ig"]),
        ("", ""),
    ],
)
def test_a_value_that_is_no_yaml_is_a_plain_string(text: str, value: object) -> None:
    assert parse_value(text) == value


def test_a_key_under_a_string_is_no_key_of_a_mapping() -> None:
    data = {"data": {"npz": "data.npz"}}
    overrides = [Override.parse("data.npz.x=1", option="--set")]
    _, problems = apply_overrides(data, SourceMap(), overrides, Path("."))
    assert [(p.origin, p.message) for p in problems] == [
        ("--set data.npz.x", "data.npz is not a mapping: it has no key 'x'")
    ]
    assert data == {"data": {"npz": "data.npz"}}
