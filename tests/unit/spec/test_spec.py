"""The spec language: thresholds, a valid spec, and every kind of spec error as one positioned line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_saliency.spec import Spec, SpecError, Threshold, json_schema, load_spec
from pytest_saliency.spec.schema import CHECK_KINDS
from pytest_saliency.spec.source import load_yaml

# --- thresholds ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "operator", "value"),
    [
        (">= 0.5", ">=", 0.5),
        ("<0.1", "<", 0.1),
        ("> 1e-3", ">", 0.001),
        ("<= -2", "<=", -2.0),
        ("  >=  .25  ", ">=", 0.25),
        ("< 1E+2", "<", 100.0),
    ],
)
def test_threshold_parses_valid_forms(text: str, operator: str, value: float) -> None:
    threshold = Threshold.parse(text)
    assert (threshold.operator, threshold.value) == (operator, value)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (0.5, 'a threshold is a quoted comparison such as ">= 0.5", not a bare number'),
        (1, 'such as ">= 1", not a bare number'),
        ("=> 0.5", "bad threshold '=> 0.5': write one comparison (>=, >, <=, <) and a number"),
        (">= abc", "bad threshold '>= abc'"),
        ("between", "bad threshold 'between'"),
        (">= 0.5 and < 0.9", "bad threshold"),
        ("0.5", "bad threshold '0.5'"),
        (True, "got True"),
        (None, "got None"),
    ],
)
def test_threshold_refuses_invalid_forms_clearly(given: object, message: str) -> None:
    with pytest.raises(ValueError) as raised:
        Threshold.parse(given)
    assert message in str(raised.value)


def test_threshold_comparisons() -> None:
    at_least = Threshold.parse(">= 0.5")
    assert at_least.passes(0.5) and at_least.passes(0.9) and not at_least.passes(0.49)
    assert not at_least.passes(float("nan"))
    below = Threshold.parse("< 0.1")
    assert below.passes(0.05) and not below.passes(0.1)
    assert not below.passes(float("nan"))
    assert Threshold.parse("> 0").passes(1e-9) and not Threshold.parse("> 0").passes(0.0)
    assert Threshold.parse("<= 0").passes(0.0)
    assert at_least.wants_high and not below.wants_high
    assert str(at_least) == ">= 0.5" and str(Threshold.parse("> 1e-3")) == "> 0.001"
    assert Threshold.parse(at_least) is at_least
    assert at_least == Threshold.parse(">=0.5") and hash(at_least) == hash(Threshold.parse(">=0.5"))
    assert at_least != Threshold.parse("> 0.5")


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from([">=", ">", "<=", "<"]), st.floats(allow_nan=False, allow_infinity=False), st.text(" ", max_size=2)
)
def test_threshold_round_trips_any_number(operator: str, value: float, space: str) -> None:
    threshold = Threshold.parse(f"{space}{operator}{space}{value!r}{space}")
    assert (threshold.operator, threshold.value) == (operator, value)
    assert Threshold.parse(str(threshold)).operator == operator


# --- spec files ------------------------------------------------------------------------------

BASE = """\
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


def write_npz(directory: Path, *, masks: tuple[int, ...] = (2, 8, 8), **extra: np.ndarray) -> Path:
    path = directory / "data.npz"
    np.savez(
        path,
        images=np.zeros((2, 3, 8, 8), np.float32),
        masks=np.zeros(masks, bool),
        labels=np.zeros(2, np.int64),
        decoy=np.zeros((2, 8, 8), bool),
        **extra,
    )
    return path


@pytest.fixture
def spec_dir(tmp_path: Path) -> Path:
    write_npz(tmp_path)
    return tmp_path


def write_spec(directory: Path, text: str, name: str = "model.saliency.yaml") -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def spec_errors(directory: Path, text: str) -> tuple[Path, list[str]]:
    path = write_spec(directory, text)
    with pytest.raises(SpecError) as raised:
        load_spec(path)
    return path, [str(problem) for problem in raised.value.problems]


def assert_one_error(directory: Path, text: str, line: int, column: int, phrase: str) -> str:
    path, problems = spec_errors(directory, text)
    assert len(problems) == 1, problems
    problem = problems[0]
    assert problem.startswith(f"{path}:{line}:{column}: "), problem
    assert phrase in problem, problem
    assert "\n" not in problem
    return problem


def test_minimal_valid_spec_loads(spec_dir: Path) -> None:
    path = write_spec(spec_dir, BASE)
    loaded = load_spec(path)
    spec = loaded.spec
    assert loaded.name == "model"  # the file's stem without .saliency.yaml
    assert loaded.resolve("data.npz") == (spec_dir / "data.npz").resolve()
    assert spec.model.factory == "mypkg.model:build"
    assert spec.attributions["grad"].method == "Saliency"
    assert spec.target == "label" and spec.saliency.channels == "abs_sum"
    assert spec.saliency.binarize.rule() == {"std": 1.0}  # Shared Interest's default
    check = spec.checks[0]
    assert check.kind == "shared_interest" and check.severity == "fail"
    assert check.shared_interest is not None
    assert check.shared_interest.metrics() == {"gtc": {"mean": Threshold(">=", 0.5)}}
    assert loaded.source.value(("checks", 0, "shared_interest", "gtc", "mean")) == (11, 19)
    assert loaded.source.key(("attributions", "grad")) == (7, 3)


def test_display_name_is_used_in_problems(spec_dir: Path) -> None:
    path = write_spec(spec_dir, BASE + "targt: label\n")
    with pytest.raises(SpecError) as raised:
        load_spec(path, display="specs/model.saliency.yaml")
    assert str(raised.value).startswith("specs/model.saliency.yaml:12:1: ")


# Each case: (spec text, line, column, key phrase). Lines and columns are 1-based.
ERRORS: dict[str, tuple[str, int, int, str]] = {
    "unknown top-level key": (
        BASE + "targt: label\n",
        12,
        1,
        "spec: unknown key 'targt' (did you mean 'target'?)",
    ),
    "unknown nested key": (
        BASE.replace("  factory: mypkg.model:build\n", "  factory: mypkg.model:build\n  weigths: w.pt\n"),
        4,
        3,
        "model: unknown key 'weigths' (did you mean 'weights'?)",
    ),
    "unknown key deep in a check": (
        BASE + "      per_clas: true\n",
        12,
        7,
        "checks[0].shared_interest: unknown key 'per_clas' (did you mean 'per_class'?)",
    ),
    "wrong type": (
        BASE.replace("  npz: data.npz\n", '  npz: data.npz\n  batch_size: "64"\n'),
        6,
        15,
        "data.batch_size: Input should be a valid integer",
    ),
    "missing required key": (
        BASE.replace("{method: Saliency}", "{params: {abs: true}}"),
        7,
        3,
        "attributions.grad: missing required key 'method'",
    ),
    "missing top-level key": (
        BASE.replace("data:\n  npz: data.npz\n", ""),
        1,
        1,
        "spec: missing required key 'data'",
    ),
    "bad threshold": (
        BASE.replace('">= 0.5"', '">= abc"'),
        11,
        19,
        "checks[0].shared_interest.gtc.mean: bad threshold '>= abc'",
    ),
    "bare number threshold": (
        BASE.replace('">= 0.5"', "0.5"),
        11,
        19,
        "checks[0].shared_interest.gtc.mean: a threshold is a quoted comparison",
    ),
    "bad aggregate": (
        BASE.replace("{mean:", "{average:"),
        11,
        13,
        "bad key 'average': aggregates are mean, median, min, max or pNN",
    ),
    "unknown captum method": (
        BASE.replace("Saliency", "IntegratedGradient"),
        7,
        18,
        "attributions.grad.method: unknown captum attribution method 'IntegratedGradient'"
        " (did you mean 'IntegratedGradients'?)",
    ),
    "unknown pattern name": (
        BASE.replace(
            '    shared_interest:\n      gtc: {mean: ">= 0.5"}\n', "    patterns:\n      forbid: [distracter]\n"
        ),
        11,
        16,
        "checks[0].patterns.forbid[0]: 'distracter' is not one of human_aligned",
    ),
    "unknown pattern name as a key": (
        BASE.replace(
            '    shared_interest:\n      gtc: {mean: ">= 0.5"}\n',
            "    patterns:\n      max_fraction: {distracter: 0.1}\n",
        ),
        11,
        22,
        "checks[0].patterns.max_fraction: bad key 'distracter': 'distracter' is not one of human_aligned",
    ),
    "fraction out of range": (
        BASE.replace(
            '    shared_interest:\n      gtc: {mean: ">= 0.5"}\n',
            "    patterns:\n      max_fraction: {distractor: 1.5}\n",
        ),
        11,
        34,
        "checks[0].patterns.max_fraction.distractor: Input should be less than or equal to 1",
    ),
    "two check kinds in one check": (
        BASE.replace("  - id: coverage\n", '  - id: coverage\n    fidelity: {gap: ">= 0.1"}\n'),
        9,
        5,
        f"checks[0]: give exactly one of {', '.join(CHECK_KINDS)} (got shared_interest, fidelity)",
    ),
    "unsupported version": (
        BASE.replace("version: 1", "version: 2"),
        1,
        10,
        "version: 2 is not one of 1",
    ),
    "bad attribution name": (
        BASE.replace("  grad: {method: Saliency}", "  gr ad: {method: Saliency}"),
        7,
        3,
        "attributions: bad key 'gr ad': String should match pattern",
    ),
    "unknown baseline": (
        BASE.replace("{method: Saliency}", "{method: IntegratedGradients, baseline: zero}"),
        7,
        49,
        "attributions.grad.baseline: baseline must be one of zeros, mean, blur, uniform or a number, got 'zero'"
        " (did you mean 'zeros'?)",
    ),
    "unknown channel reduction": (
        BASE + "saliency: {channels: abs_summ}\n",
        12,
        22,
        "saliency.channels: 'abs_summ' is not one of sum, abs_sum, max_abs, positive (did you mean 'abs_sum'?)",
    ),
    "check names an unknown attribution": (
        BASE + "      methods: [gard]\n",
        12,
        17,
        "checks[0].shared_interest.methods[0]: no attribution named 'gard' (did you mean 'grad'?)",
    ),
    "missing weights file": (
        BASE.replace("  factory: mypkg.model:build\n", "  factory: mypkg.model:build\n  weights: missing.pt\n"),
        4,
        12,
        "model.weights: file not found: missing.pt (paths are relative to the spec file)",
    ),
    "missing npz file": (
        BASE.replace("npz: data.npz", "npz: nope.npz"),
        5,
        8,
        "data.npz: file not found: nope.npz",
    ),
    "duplicate key": (
        BASE + "version: 1\n",
        12,
        1,
        "duplicate key 'version'",
    ),
    "duplicate nested key": (
        BASE.replace("  npz: data.npz\n", "  npz: data.npz\n  npz: other.npz\n"),
        6,
        3,
        "duplicate key 'npz'",
    ),
    "YAML syntax error": (
        BASE.replace("  npz: data.npz\n", "  npz: data.npz\n   limit: 2\n"),
        6,
        9,
        "YAML syntax: mapping values are not allowed here",
    ),
    "duplicate check ids": (
        BASE + '  - id: coverage\n    shared_interest:\n      iou: {mean: ">= 0.2"}\n',
        9,
        3,
        "checks: check id 'coverage' is used twice",
    ),
    "per_class without data.classes": (
        BASE + "      per_class: true\n",
        12,
        18,
        "checks[0].shared_interest.per_class: per_class needs the class names: add data.classes",
    ),
    "region mask not in the npz": (
        BASE + '  - id: decoy\n    region:\n      mask: decoi\n      share: {mean: "<= 0.1"}\n',
        14,
        13,
        "checks[1].region.mask: the data has no mask 'decoi' (did you mean 'decoy'?) (extra masks: decoy)",
    ),
    "two rules where exactly one is allowed": (
        BASE + "saliency:\n  binarize: {std: 1.0, threshold: 0.5}\n",
        13,
        13,
        "saliency.binarize: give exactly one of std, percentile, top_fraction, threshold (got std, threshold)",
    ),
    "layer method without a layer": (
        BASE.replace("Saliency", "LayerGradCam"),
        7,
        9,
        "attributions.grad: LayerGradCam attributes to a layer: add layer",
    ),
    "bad factory reference": (
        BASE.replace("mypkg.model:build", "mypkg.model.build"),
        3,
        12,
        "model.factory: 'mypkg.model.build' is not \"package.module:callable\"",
    ),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_spec_error_is_one_positioned_line(spec_dir: Path, case: str) -> None:
    text, line, column, phrase = ERRORS[case]
    assert_one_error(spec_dir, text, line, column, phrase)


def test_npz_shape_mismatch_between_images_and_masks(tmp_path: Path) -> None:
    write_npz(tmp_path, masks=(2, 8, 9))
    assert_one_error(tmp_path, BASE, 5, 8, "data.npz: masks (2, 8, 9) do not match images (2, 3, 8, 8)")


def test_npz_without_labels(tmp_path: Path) -> None:
    np.savez(tmp_path / "data.npz", images=np.zeros((2, 1, 4, 4)), masks=np.zeros((2, 4, 4)))
    assert_one_error(tmp_path, BASE, 5, 8, "data.npz has no array 'labels'")


def test_npz_normalize_channel_count(spec_dir: Path) -> None:
    text = BASE.replace(
        "  factory: mypkg.model:build\n", "  factory: mypkg.model:build\n  normalize: {mean: [0.5], std: [0.5]}\n"
    )
    assert_one_error(spec_dir, text, 4, 21, "normalize has 1 values but the images have 3 channels")


def test_every_problem_is_reported_in_file_order(spec_dir: Path) -> None:
    text = BASE.replace("  npz: data.npz\n", '  npz: data.npz\n  batch_size: "64"\n') + "targt: label\n"
    path, problems = spec_errors(spec_dir, text)
    assert [problem.split(": ", 1)[0] for problem in problems] == [f"{path}:6:15", f"{path}:13:1"]


def test_a_spec_that_is_not_a_mapping(spec_dir: Path) -> None:
    assert_one_error(spec_dir, "- just\n- a list\n", 1, 1, "a spec is a mapping")


def test_an_unreadable_spec(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r":1:1: cannot read spec"):
        load_spec(tmp_path / "absent.saliency.yaml")


def test_yaml_tags_do_not_construct_objects(spec_dir: Path) -> None:
    text = BASE + "name: !!python/object/apply:os.getcwd []\n"
    assert_one_error(spec_dir, text, 12, 7, "YAML syntax: could not determine a constructor")


def test_source_map_positions_scalars_and_list_items() -> None:
    data, source = load_yaml("a:\n  b: [1, {c: 2}]\n  d: x\n")
    assert data == {"a": {"b": [1, {"c": 2}], "d": "x"}}
    assert source.value(("a", "b", 0)) == (2, 7)
    assert source.value(("a", "b", 1, "c")) == (2, 14)
    assert source.key(("a", "d")) == (3, 3)
    assert source.value(("a", "d")) == (3, 6)
    assert source.value(("a", "zz", 3)) == source.value(("a",))  # nearest enclosing value


# --- JSON Schema -----------------------------------------------------------------------------

EXAMPLE: dict[str, Any] = {
    "version": 1,
    "name": "shapes-v2",
    "model": {
        "factory": "examples.shapes.model:build",
        "kwargs": {"num_classes": 3},
        "weights": "v2.pt",
        "normalize": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
    },
    "data": {"npz": "val.npz", "limit": 64, "batch_size": 16, "classes": ["circle", "square", "triangle"]},
    "attributions": {
        "ig": {"method": "IntegratedGradients", "params": {"n_steps": 16}, "baseline": "zeros"},
        "grad": {"method": "Saliency", "params": {"abs": True}},
        "cam": {"method": "LayerGradCam", "layer": "features.3"},
    },
    "saliency": {"channels": "abs_sum", "binarize": {"std": 1.0}},
    "target": "label",
    "checks": [
        {
            "id": "object-coverage",
            "shared_interest": {"gtc": {"mean": ">= 0.5"}, "sc": {"p10": ">= 0.2"}, "per_class": True},
        },
        {"id": "no-distraction", "patterns": {"max_fraction": {"distractor": 0.05}, "forbid": ["confuser"]}},
        {"id": "faithful", "severity": "warn", "fidelity": {"methods": ["ig"], "fill": "blur", "gap": ">= 0.3"}},
        {"id": "stable", "drift": {"against": {"weights": "v1.pt"}, "max_shift": 0.15}},
        {"id": "decoy-unused", "region": {"mask": "decoy", "share": {"mean": "<= 0.05"}}},
    ],
}


def test_json_schema_is_json() -> None:
    schema = json_schema()
    assert json.loads(json.dumps(schema)) == schema
    assert schema["$schema"].endswith("2020-12/schema")
    assert set(schema["required"]) >= {"version", "model", "data", "attributions", "checks"}
    assert schema["additionalProperties"] is False


def test_example_is_a_valid_spec() -> None:
    spec = Spec.model_validate(EXAMPLE)
    assert [check.kind for check in spec.checks] == ["shared_interest", "patterns", "fidelity", "drift", "region"]


def test_json_schema_validates_the_example() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json_schema()
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    validator = validator_class(schema)
    assert list(validator.iter_errors(EXAMPLE)) == []
    # and it refuses what the loader refuses
    assert list(validator.iter_errors({**EXAMPLE, "targt": "label"}))
    bad_threshold = json.loads(json.dumps(EXAMPLE))
    bad_threshold["checks"][0]["shared_interest"]["gtc"]["mean"] = ">= abc"
    assert list(validator.iter_errors(bad_threshold))
    bad_pattern = json.loads(json.dumps(EXAMPLE))
    bad_pattern["checks"][1]["patterns"]["forbid"] = ["distracter"]
    assert list(validator.iter_errors(bad_pattern))


def test_example_round_trips_through_yaml(tmp_path: Path) -> None:
    write_npz(tmp_path)
    example = json.loads(json.dumps(EXAMPLE))
    example["model"]["weights"] = None
    del example["model"]["weights"]
    example["data"]["npz"] = "data.npz"
    example["checks"] = example["checks"][:3]
    path = write_spec(tmp_path, yaml.safe_dump(example, sort_keys=False))
    loaded = load_spec(path)
    assert loaded.name == "shapes-v2"
    assert loaded.spec.attributions["cam"].layer == "features.3"
