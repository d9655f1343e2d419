"""``sanity`` checks from YAML through pytest: the randomisation test passes a gradient and fails
the built-in edge map, random logit and eMPRT run, the failure lists the similarity per layer,
the JSON and HTML reports carry the curve, and mistakes are positioned spec errors.

The generated project (``project`` fixture, ``tests/integration/conftest.py``) holds ``data.npz``
(six 16x16 images). ``sanitymodel.build`` is a small CNN whose "trained" weights are a fixed
seeded draw: its gradient depends on every weight, so re-initialising its layers changes the map,
while the ``edge`` map (the images' Sobel edges) cannot change at all: its similarity is exactly 1
at every step, and its eMPRT score exactly 0.
"""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest

import pytest_saliency.checks.sanity  # noqa: F401  (imported once here, not in every in-process run)
from pytest_saliency.report.results import validation_errors

SANITY_MODEL = """\
import torch
from torch import nn


def build(num_classes=3):
    torch.manual_seed(0)  # the "trained" weights: a fixed draw
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes),
    )
"""
MODEL = "factory: sanitymodel:build"
METHODS = "grad: {method: Saliency, params: {abs: true}}\nedge: {method: edge}"


def sanity_check(check_id: str, **keys: str) -> str:
    body = "".join(f"    {key}: {value}\n" for key, value in keys.items())
    return f"- id: {check_id}\n  sanity:\n{body}"


@pytest.fixture
def sanity_project(project: pytest.Pytester) -> pytest.Pytester:
    project.makepyfile(sanitymodel=SANITY_MODEL)
    return project


def test_gradient_passes_and_the_edge_map_fails_with_the_similarity_per_layer(
    sanity_project: pytest.Pytester, write_spec, helpers: SimpleNamespace
) -> None:
    path = write_spec(model=MODEL, attributions=METHODS, checks=sanity_check("randomisation", final='"<= 0.5"'))
    result = sanity_project.runpytest_inprocess()
    result.assert_outcomes(passed=1, failed=1)
    line = helpers.position(path.read_text(), "- id: randomisation").split(":")[0]
    result.stdout.fnmatch_lines(
        [
            (
                f"specs/x.saliency.yaml:{line}: check 'randomisation' [[]edge] failed: "
                "final spearman_abs (all 3 layers randomised) = 1 (want <= 0.5)"
            ),
            "*cascading randomisation of 3 layers (cumulatively, in the order of the computation, from the logits down; seed 0): spearman_abs *6 samples",
            "*step      randomised    type  spearman_abs  ± 95%",
            "*   0  none (trained)                 1.000  0.000",
            "*   1               6  Linear         1.000  0.000",
            "*   2               2  Conv2d         1.000  0.000",
            "*   3               0  Conv2d         1.000  0.000",
        ],
        consecutive=False,
    )
    rows = {row["method"]: row for row in helpers.summary_rows(result.stdout.str())}
    assert rows["edge"]["status"] == "failed" and rows["grad"]["status"] == "passed"
    assert float(rows["grad"]["value"].split("±")[0]) < 0.5
    helpers.assert_no_traceback(result.stdout.str())


def test_json_and_html_reports_carry_the_curve(sanity_project: pytest.Pytester, write_spec) -> None:
    checks = sanity_check("randomisation", methods="[grad]", every_step='"<= 1"', per_layer='{"2": "<= 0.99"}')
    write_spec(model=MODEL, attributions=METHODS, checks=checks)
    result = sanity_project.runpytest_inprocess(
        "--saliency-json", "out/results.json", "--saliency-report", "out/report.html"
    )
    result.assert_outcomes(passed=1)
    document = json.loads((sanity_project.path / "out" / "results.json").read_text())
    assert validation_errors(document) == []  # the shipped results schema
    (item,) = document["results"]
    sanity = item["sanity"]
    assert item["kind"] == "sanity"
    assert sanity["test"] == "cascading" and sanity["similarity"] == "spearman_abs"
    assert sanity["steps"] == ["original", "6", "2", "0"] and sanity["types"] == ["Linear", "Conv2d", "Conv2d"]
    assert sanity["curve"][0] == 1.0 and len(sanity["curve"]) == len(sanity["intervals"]) == 4
    assert sanity["curve"][-1] < sanity["curve"][0]
    assert [m["name"] for m in item["measurements"]] == [
        "spearman_abs after 6",
        "spearman_abs after 2",
        "spearman_abs after 2",
        "spearman_abs after 0",
    ]
    html = (sanity_project.path / "out" / "report.html").read_text()
    assert '<svg class="chart sanity"' in html
    assert html.count('class="marker-sanity"') == 4


def test_random_logit_and_efficient_mprt_fail_the_edge_map(
    sanity_project: pytest.Pytester, write_spec, helpers: SimpleNamespace
) -> None:
    checks = sanity_check("logit", test="random_logit", final='"<= 0.9"') + sanity_check(
        "emprt", test="efficient", score='">= 0.01"'
    )
    write_spec(model=MODEL, attributions=METHODS, checks=checks)
    result = sanity_project.runpytest_inprocess("--saliency-json", "out/results.json")
    results = {
        (item["check"], item["method"]): item
        for item in json.loads((sanity_project.path / "out" / "results.json").read_text())["results"]
    }
    logit_edge, emprt_edge = results[("logit", "edge")], results[("emprt", "edge")]
    assert logit_edge["status"] == emprt_edge["status"] == "failed"
    assert logit_edge["measurements"][0]["name"] == "ssim to another class's map"
    assert logit_edge["measurements"][0]["value"] == pytest.approx(1.0)  # the same map for every class
    assert emprt_edge["measurements"][0]["value"] == 0.0  # the same map for the random model
    logit_grad = results[("logit", "grad")]
    assert logit_grad["measurements"][0]["value"] < 0.9
    assert all(
        other != label for other, label in zip(logit_grad["sanity"]["other_class"], [0, 1, 2, 0, 1, 2], strict=True)
    )
    result.stdout.fnmatch_lines(["*check 'emprt' [[]edge] failed: eMPRT score (H(ê) − H(e)) / H(e) = 0 (want >= 0.01)"])
    helpers.assert_no_traceback(result.stdout.str())


def test_an_unknown_layer_is_a_positioned_error_with_a_suggestion(
    sanity_project: pytest.Pytester, write_spec, helpers: SimpleNamespace
) -> None:
    path = write_spec(model=MODEL, checks=sanity_check("randomisation", layers='["6", "22"]', final='"<= 0.5"'))
    result = sanity_project.runpytest_inprocess()
    result.assert_outcomes(failed=1)
    where = helpers.position(path.read_text(), '"22"')
    result.stdout.fnmatch_lines(
        [
            f"specs/x.saliency.yaml:{where}: checks[[]0[]].sanity.layers[[]1[]]: the model has no layer '22' (did you mean '2'?)"
        ]
    )
    helpers.assert_no_traceback(result.stdout.str())


@pytest.mark.parametrize(
    ("keys", "needle", "message"),
    [
        ({"similarity": "spearmann", "final": '"<= 0.3"'}, "spearmann", "*did you mean 'spearman'*"),
        ({"test": "cascade", "final": '"<= 0.3"'}, "cascade", "*did you mean 'cascading'*"),
        ({"finall": '"<= 0.3"'}, "finall", "*did you mean 'final'*"),
        ({"test": "efficient"}, "test: efficient", "*test efficient needs score*"),
    ],
)
def test_spec_errors_are_positioned(
    sanity_project: pytest.Pytester,
    write_spec,
    helpers: SimpleNamespace,
    keys: dict[str, str],
    needle: str,
    message: str,
) -> None:
    path = write_spec(model=MODEL, checks=sanity_check("randomisation", **keys))
    result = sanity_project.runpytest_inprocess()
    assert result.ret != pytest.ExitCode.OK
    text = path.read_text()
    result.stdout.fnmatch_lines(
        [f"specs/x.saliency.yaml:{helpers.position(text, needle)}: checks[[]0[]].sanity*{message}"]
    )
    helpers.assert_no_traceback(result.stdout.str())


def test_a_layer_that_cannot_be_re_initialised_is_a_positioned_error(
    project: pytest.Pytester, write_spec, helpers: SimpleNamespace
) -> None:
    """``tinymodel.Focus`` holds a parameter of its own and has no ``reset_parameters()``."""
    path = write_spec(checks=sanity_check("randomisation", final='"<= 0.5"'))
    result = project.runpytest_inprocess()
    result.assert_outcomes(failed=1)
    where = helpers.position(path.read_text(), "final")
    result.stdout.fnmatch_lines(
        [
            f"specs/x.saliency.yaml:{where}: checks[[]0[]].sanity: cannot re-initialise layer '<network>': "
            "module (Focus) has parameters but no reset_parameters(); list the other layers in layers"
        ]
    )
    helpers.assert_no_traceback(result.stdout.str())


def test_independent_randomisation_names_each_layer_alone(sanity_project: pytest.Pytester, write_spec) -> None:
    checks = sanity_check("alone", methods="[grad]", test="independent", every_step='"<= 1"', final='"<= 1"')
    write_spec(model=MODEL, attributions=METHODS, checks=checks)
    result = sanity_project.runpytest_inprocess("--saliency-json", "out/results.json")
    result.assert_outcomes(passed=1)
    (item,) = json.loads((sanity_project.path / "out" / "results.json").read_text())["results"]
    assert [m["name"] for m in item["measurements"]] == [
        "final spearman_abs (only 0 randomised)",
        "spearman_abs with only 6 randomised",
        "spearman_abs with only 2 randomised",
        "spearman_abs with only 0 randomised",
    ]
    assert item["measurements"][0]["value"] == item["measurements"][-1]["value"]
    assert item["measurements"][0]["value"] == pytest.approx(item["sanity"]["curve"][-1], abs=1e-6)  # JSON: 6 decimals


def test_ssim_on_maps_smaller_than_its_window_is_a_positioned_error_with_a_fix(
    sanity_project: pytest.Pytester, write_spec, helpers: SimpleNamespace
) -> None:
    arrays = helpers.make_arrays()
    arrays.update(images=arrays["images"][..., :6, :6], masks=arrays["masks"][..., :6, :6])
    del arrays["decoy"]
    (sanity_project.path / "data.npz").write_bytes(helpers.npz_bytes(arrays))
    path = write_spec(model=MODEL, checks=sanity_check("logit", test="random_logit", final='"<= 0.5"'))
    result = sanity_project.runpytest_inprocess()
    result.assert_outcomes(failed=1)
    where = helpers.position(path.read_text(), "test: random_logit")
    result.stdout.fnmatch_lines(
        [
            f"specs/x.saliency.yaml:{where}: checks[[]0[]].sanity.similarity: ssim needs maps of at least 7x7 "
            "pixels, the abs_sum maps are 6x6 (use similarity: spearman or spearman_abs)"
        ]
    )
    helpers.assert_no_traceback(result.stdout.str())


def test_statistics_do_not_depend_on_the_shard_size(sanity_project: pytest.Pytester, write_spec) -> None:
    """Each worker draws the randomised layers once and every shard steps through them; the other
    class is drawn per sample: shards of 1, 3 and all 6 samples give the same numbers (up to the
    float rounding of a network run on batches of another size) and the same other classes."""
    checks = (
        sanity_check("cascade", every_step='"<= 1"', final='"<= 1"')
        + sanity_check("alone", test="independent", final='"<= 1"')
        + sanity_check("logit", test="random_logit", final='"<= 1"')
        + sanity_check("emprt", test="efficient", score='">= -10"')
    )
    write_spec(model=MODEL, attributions=METHODS, checks=checks)
    documents = []
    for size in (1, 3, 6):
        result = sanity_project.runpytest_inprocess(
            "--saliency-set", f"data.shard_size={size}", "--saliency-json", f"out/{size}.json"
        )
        result.assert_outcomes(passed=8)
        document = json.loads((sanity_project.path / "out" / f"{size}.json").read_text())
        documents.append({(item["check"], item["method"]): item for item in document["results"]})
    first = documents[0]
    others = first[("logit", "grad")]["sanity"]["other_class"]
    assert len(set(others)) > 1  # drawn per sample
    for other in documents[1:]:
        assert other.keys() == first.keys()
        for key, item in first.items():
            assert [(m["name"], m["passed"]) for m in other[key]["measurements"]] == [
                (m["name"], m["passed"]) for m in item["measurements"]
            ]
            for block in ("measurements", "sanity"):
                expected = pytest.approx(numbers(item[block]), abs=1e-4, nan_ok=True)
                assert numbers(other[key][block]) == expected, (key, block)
            assert other[key]["sanity"].get("other_class") == item["sanity"].get("other_class"), key


def numbers(value: object) -> list[float]:
    """Every number in a JSON value, in order (None, an undefined number, as NaN)."""
    if isinstance(value, dict):
        return [number for key in sorted(value) for number in numbers(value[key])]
    if isinstance(value, list):
        return [number for item in value for number in numbers(item)]
    if value is None:
        return [math.nan]
    return [float(value)] if isinstance(value, int | float) and not isinstance(value, bool) else []
