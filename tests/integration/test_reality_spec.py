"""``localisation``, ``complexity`` and ``robustness`` checks and fidelity's ``insertion`` from YAML
through pytest, on the project's tiny model (``tests/integration/conftest.py``).

Its gradient saliency is known exactly: with ``looks_at: object`` the ``abs_sum`` map of
``Saliency`` is 1 on the 4x4 object and 0 elsewhere, so every localisation score is 1, the
entropy is ln 16 and the Gini index 1 - 16/256; with ``looks_at: decoy`` it is the 3x3 decoy,
off the object: every mass and rank score is 0, and the pointing game hits only by its 15-pixel
tolerance. The gradient of ``x**2 / 2`` moves exactly with the input, so a perturbation of radius
r changes it by about ``r * 16 / (4 * sqrt(3)) = 2.31 r`` relative to the clean map.
"""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest

import pytest_saliency.checks.complexity  # noqa: F401  (imported once here, not in every in-process run)
import pytest_saliency.checks.fidelity  # noqa: F401
import pytest_saliency.checks.localisation  # noqa: F401
import pytest_saliency.checks.robustness  # noqa: F401

LOCALISED = """\
- id: on-object
  localisation:
    pointing_game: {mean: ">= 0.9"}
    relevance_mass_accuracy: {mean: ">= 0.9", min: ">= 0.5"}
    relevance_rank_accuracy: {mean: ">= 0.9"}
    attribution_localisation: {mean: ">= 0.9"}
    top_k_intersection: {mean: ">= 0.9"}
    k: 9
    auc: {mean: ">= 0.9"}
    energy_pointing_game: {mean: ">= 0.9"}
"""


def rows_by_measured(output: str, helpers: SimpleNamespace) -> dict[tuple[str, str], str]:
    return {(row["method"], row["measured"]): row["value"] for row in helpers.summary_rows(output)}


def test_a_map_on_the_object_passes_every_localisation_metric(project: pytest.Pytester, write_spec, helpers) -> None:
    write_spec(checks=LOCALISED)
    result = project.runpytest_inprocess()
    result.assert_outcomes(passed=1)
    values = rows_by_measured(result.stdout.str(), helpers)
    assert len(values) == 8 and set(values.values()) == {"1.0000"}, values


def test_a_map_on_the_decoy_fails_with_the_worst_samples(project: pytest.Pytester, write_spec, helpers) -> None:
    checks = (
        '- id: on-object\n  localisation:\n    pointing_game: {mean: ">= 0.9"}\n'
        '    relevance_mass_accuracy: {mean: ">= 0.9"}\n'
    )
    path = write_spec(looks_at="decoy", checks=checks)
    write_spec("strict", looks_at="decoy", checks=checks.replace("on-object", "strict") + "    tolerance: 0\n")
    result = project.runpytest_inprocess()
    result.assert_outcomes(failed=2)
    line = helpers.position(path.read_text(), "- id: on-object").split(":")[0]
    result.stdout.fnmatch_lines(
        [
            f"specs/x.saliency.yaml:{line}: check 'on-object' [[]grad] failed: relevance_mass_accuracy.mean = 0 (want >= 0.9)",
            "  measured                      value            threshold  status",
            "  pointing_game.mean            1.0000 ± 0.0000  >= 0.9     ok",
            "  relevance_mass_accuracy.mean  0.0000 ± 0.0000  >= 0.9     FAIL",
            "  samples: 6",
            "  maps: abs_sum over channels, empty masks are undefined, pointing game tolerance 15 px; "
            "samples with the smallest relevance_mass_accuracy (of 6; 0 undefined):",
            "  sample     label  predicted  pointing_game  relevance_mass_accuracy",
            "       0    circle     circle          1.000                    0.000",
        ],
        consecutive=True,
    )
    # Without the paper's tolerance the decoy's maximum is off every object: no hit at all.
    result.stdout.fnmatch_lines(
        ["*strict.saliency.yaml:*check 'strict' [[]grad] failed: pointing_game.mean = 0 (want >= 0.9); *"]
    )
    helpers.assert_no_traceback(result.stdout.str())


def test_per_class_localisation_is_one_test_per_class(project: pytest.Pytester, write_spec, helpers) -> None:
    write_spec(checks='- id: loc\n  localisation:\n    auc: {mean: ">= 0.9"}\n    per_class: true\n')
    result = project.runpytest_inprocess("-v")
    result.assert_outcomes(passed=3)
    for name in helpers.CLASSES:  # in any order
        result.stdout.fnmatch_lines([f"*::loc[[]grad-{name}] PASSED*"])


def test_complexity_of_the_object_map(project: pytest.Pytester, write_spec, helpers) -> None:
    checks = (
        '- id: simple\n  complexity:\n    sparseness: {mean: ">= 0.9"}\n    complexity: {max: "<= 2.8"}\n'
        '- id: too-simple\n  complexity:\n    complexity: {mean: "<= 2.5"}\n'
    )
    path = write_spec(checks=checks)
    result = project.runpytest_inprocess()
    result.assert_outcomes(passed=1, failed=1)
    values = rows_by_measured(result.stdout.str(), helpers)
    assert float(values[("grad", "sparseness.mean")]) == pytest.approx(1 - 16 / 256, abs=1e-4)
    assert float(values[("grad", "complexity.max")]) == pytest.approx(math.log(16), abs=1e-4)
    line = helpers.position(path.read_text(), "- id: too-simple").split(":")[0]
    result.stdout.fnmatch_lines(
        [
            f"specs/x.saliency.yaml:{line}: check 'too-simple' [[]grad] failed: complexity.mean = 2.773 (want <= 2.5)",
            "*maps: abs_sum over channels; complexity of a flat map: ln 256 = 5.545; samples with the largest complexity (of 6; 0 undefined):",
        ]
    )


ROBUST = """\
- id: stable
  robustness:
    max_sensitivity: {{max: "{bound}"}}
    avg_sensitivity: {{mean: "{bound}"}}
    infidelity: {{mean: "<= 0.001"}}
    n_perturb_samples: 4
"""


def test_robustness_passes_and_fails_by_its_bound(project: pytest.Pytester, write_spec, helpers) -> None:
    write_spec(checks=ROBUST.format(bound="<= 0.1"))
    result = project.runpytest_inprocess()
    result.assert_outcomes(passed=1)
    values = {k[1]: float(v) for k, v in rows_by_measured(result.stdout.str(), helpers).items()}
    expected = 0.02 * 16 / (4 * math.sqrt(3))
    assert values["avg_sensitivity.mean"] == pytest.approx(expected, rel=0.15)
    assert values["avg_sensitivity.mean"] <= values["max_sensitivity.max"] < 0.1
    assert 0 <= values["infidelity.mean"] < 1e-4

    path = write_spec(checks=ROBUST.format(bound="<= 0.01"))
    result = project.runpytest_inprocess()
    result.assert_outcomes(failed=1)
    line = helpers.position(path.read_text(), "- id: stable").split(":")[0]
    result.stdout.fnmatch_lines(
        [
            f"specs/x.saliency.yaml:{line}: check 'stable' [[]grad] failed: max_sensitivity.max = 0.0* (want <= 0.01); *",
            "*4 perturbations per image; sensitivity: uniform noise in ±0.02, fro norm, relative to the clean attribution; "
            "infidelity: Gaussian noise σ 0.003 on the target's logit, normalized; samples with the largest max_sensitivity (of 6; 0 undefined):",
            "*sample*label*predicted*max_sensitivity*avg_sensitivity*infidelity",
        ]
    )


def test_insertion_auc_from_yaml(project: pytest.Pytester, write_spec, helpers) -> None:
    checks = (
        "- id: insert\n  fidelity:\n    orders: [insertion]\n    score: logit\n    steps: 4\n    insertion_auc: {}\n"
    )
    write_spec(
        attributions="grad: {method: Saliency, params: {abs: true}}\nrandom: {method: random}",
        checks=checks.format('">= 0"'),
    )
    result = project.runpytest_inprocess()
    result.assert_outcomes(passed=2)
    values = rows_by_measured(result.stdout.str(), helpers)
    grad, random = (float(values[(m, "insertion AUC")].split("±")[0]) for m in ("grad", "random"))
    assert grad > random > 0  # the object first: the logit comes back at once
    write_spec(checks=checks.format(f'">= {grad + 1}"'))
    result = project.runpytest_inprocess()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*check 'insert' [[]grad] failed: insertion AUC = * (want >= *)",
            "*logit of the predicted class, fill blur (insertion), unit pixel, 4 fractions from 0 to 0.75",
            "*INSERTION AUC * ± * (most important put back first into the blurred image; raw score); mean curve: *",
        ]
    )


@pytest.mark.parametrize(
    ("checks", "at", "message"),
    [
        (
            '- id: loc\n  localisation:\n    top_k_intersection: {mean: ">= 0.5"}\n',
            "top_k_intersection",
            "checks[0].localisation: top_k_intersection needs k: the number of top pixels, such as k: 100",
        ),
        (
            '- id: loc\n  localisation:\n    pointing_gme: {mean: ">= 0.5"}\n',
            "pointing_gme",
            "checks[0].localisation: unknown key 'pointing_gme' (did you mean 'pointing_game'?)",
        ),
        (
            '- id: simple\n  complexity:\n    sparseness: {avg: ">= 0.5"}\n',
            "avg",
            "checks[0].complexity.sparseness: bad key 'avg': aggregates are mean, median, min, max or pNN (p10, p90, ...)",
        ),
        (
            '- id: stable\n  robustness:\n    infidelity: {mean: "<= 0.1"}\n    norm_ord: l2\n',
            "l2",
            "checks[0].robustness.norm_ord: 'l2' is not one of fro, inf",
        ),
        (
            '- id: insert\n  fidelity:\n    insertion_auc: ">= 0.5"\n',
            "insertion_auc",
            "checks[0].fidelity: insertion_auc needs the insertion order: add it to orders",
        ),
    ],
    ids=["top-k-without-k", "typo", "bad-aggregate", "bad-norm", "insertion-not-in-orders"],
)
def test_spec_errors_point_at_the_key(
    project: pytest.Pytester, write_spec, helpers, checks: str, at: str, message: str
) -> None:
    text = write_spec(checks=checks).read_text()
    result = project.runpytest_inprocess()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([helpers.literal(f"specs/x.saliency.yaml:{helpers.position(text, at)}: {message}")])
    helpers.assert_no_traceback(result.stdout.str())


def test_k_larger_than_an_image_is_an_error_at_k(project: pytest.Pytester, write_spec, helpers) -> None:
    text = write_spec(
        checks='- id: loc\n  localisation:\n    top_k_intersection: {mean: ">= 0.5"}\n    k: 300\n'
    ).read_text()
    result = project.runpytest_inprocess()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            f"specs/x.saliency.yaml:{helpers.position(text, '300')}: checks[0].localisation.k: k = 300 is more than the 256 pixels of an image: give k <= 256"
        ]
    )
    helpers.assert_no_traceback(result.stdout.str())


def test_results_json_of_the_new_kinds_matches_the_schema(project: pytest.Pytester, write_spec) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    from pytest_saliency.report import results as report_results

    checks = (
        LOCALISED + '- id: simple\n  complexity:\n    sparseness: {mean: ">= 0.5"}\n' + ROBUST.format(bound="<= 0.1")
    )
    write_spec(checks=checks)
    result = project.runpytest_inprocess("--saliency-json", "results.json")
    result.assert_outcomes(passed=3)
    document = json.loads((project.path / "results.json").read_text())
    jsonschema.Draft202012Validator(report_results.schema()).validate(document)
    by_kind = {entry["kind"]: entry for entry in document["results"]}
    assert set(by_kind) == {"localisation", "complexity", "robustness"}
    assert by_kind["localisation"]["per_sample"]["auc"] == [1.0] * 6
    assert by_kind["complexity"]["per_sample"]["index"] == list(range(6))
    assert by_kind["robustness"]["robustness"]["n_perturb_samples"] == 4
    assert len(by_kind["robustness"]["per_sample"]["infidelity"]) == 6
