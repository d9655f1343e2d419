"""``fidelity`` checks from YAML through pytest: every fill and score, the failure block, the
summary row, spec errors, and curves (and robustness scores) that do not depend on the shard or
batch size.

The project's tiny model (``tests/integration/conftest.py``) scores ``x**2 / 2`` summed over the
object channel, so its gradient saliency is the object: removing the object first (MIF) sends
every logit to 0 at once, while removing background first (LIF) changes nothing until the object
is reached. The gap of ``grad`` is therefore large, and that of the built-in ``random``
attribution is not.
"""

from __future__ import annotations

import itertools
import json
import re
from types import SimpleNamespace

import pytest

import pytest_saliency.checks.fidelity  # noqa: F401  (imported once here, not in every in-process run)

FILLS = ("zeros", "mean", "blur", "uniform", "noisy_linear")
SCORES = ("probability", "logit", "accuracy")
METHODS = "grad: {method: Saliency, params: {abs: true}}\nrandom: {method: random}"


def fidelity_check(check_id: str, **keys: str) -> str:
    body = "".join(f"    {key}: {value}\n" for key, value in keys.items())
    return f"- id: {check_id}\n  fidelity:\n{body}"


def test_every_fill_and_score_runs_from_yaml(project: pytest.Pytester, write_spec, helpers: SimpleNamespace) -> None:
    checks = "".join(
        fidelity_check(f"{fill}-{score}", methods="[grad]", fill=fill, score=score, steps="4", gap='">= -1"')
        for fill, score in itertools.product(FILLS, SCORES)
    )
    write_spec(attributions=METHODS, checks=checks)
    result = project.runpytest_inprocess("-v")
    result.assert_outcomes(passed=len(FILLS) * len(SCORES))
    rows = helpers.summary_rows(result.stdout.str())
    assert sorted(row["check"] for row in rows) == sorted(f"{f}-{s}" for f, s in itertools.product(FILLS, SCORES))
    for row in rows:
        assert row["measured"] == "gap (AUC LIF - AUC MIF)" and row["status"] == "passed"
        gap = float(row["value"].split("±")[0])
        assert -1 <= gap <= 1, row
        if row["check"].endswith("-logit"):  # the object's energy is the logit: it goes first under MIF
            assert gap > 0.3, row
    # Probability and accuracy also follow the class code in channel 2, which fills other than
    # zeros change as well (uniform noise randomises it) or keep (mean, blur): they give no
    # fixed expectation on this model, only that every combination runs.


def test_a_real_method_beats_a_random_attribution(
    project: pytest.Pytester, write_spec, helpers: SimpleNamespace
) -> None:
    checks = fidelity_check("faithful", steps="8", gap='">= 0.15"', orders="[mif, lif, random]")
    write_spec(attributions=METHODS, checks=checks)
    result = project.runpytest_inprocess()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*check 'faithful' [[]random] failed: gap (AUC LIF - AUC MIF) = * (want >= 0.15)"])
    gaps = {row["method"]: float(row["value"].split("±")[0]) for row in helpers.summary_rows(result.stdout.str())}
    assert gaps["grad"] > 0.15 > gaps["random"]
    assert abs(gaps["random"]) < 0.1


def test_a_failure_shows_both_aucs_the_gap_with_its_interval_and_the_threshold(
    project: pytest.Pytester, write_spec, helpers: SimpleNamespace
) -> None:
    checks = fidelity_check("faithful", methods="[grad]", steps="5", gap='">= 0.99"', lif_auc='">= 0.1"')
    path = write_spec(attributions=METHODS, checks=checks)
    result = project.runpytest_inprocess()
    result.assert_outcomes(failed=1)
    line = helpers.position(path.read_text(), "- id: faithful").split(":")[0]
    output = result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            f"specs/x.saliency.yaml:{line}: check 'faithful' [[]grad] failed: gap (AUC LIF - AUC MIF) = * (want >= 0.99)",
            "*gap (AUC LIF - AUC MIF)*± 0.*>= 0.99*FAIL*",
            "*lif AUC*± 0.*>= 0.1*ok*",
            "*probability of the predicted class, fill zeros, unit pixel, 5 fractions from 0 to 0.80",
            "*MIF AUC 0.* ± 0.* (most important first); mean curve: 1.00 *",
            "*LIF AUC 0.* ± 0.* (least important first); mean curve: 1.00 *",
        ]
    )
    helpers.assert_no_traceback(output)
    mif, lif = (float(re.search(rf"{order} AUC (\d\.\d+)", output)[1]) for order in ("MIF", "LIF"))
    assert lif > mif


@pytest.mark.parametrize(
    ("keys", "needle", "message"),
    [
        (
            {"fill": "blurr"},
            "fill",
            "checks[0].fidelity.fill: 'blurr' is not one of zeros, mean, blur, uniform, noisy_linear (did you mean 'blur'?)",
        ),
        (
            {"score": "prob"},
            "score",
            "checks[0].fidelity.score: 'prob' is not one of probability, logit, accuracy (did you mean 'probability'?)",
        ),
        (
            {"unit": "patch:0"},
            "unit",
            "checks[0].fidelity.unit: 'patch:0' is not a removal unit: write pixel, or patch:K for K x K patches (patch:4)",
        ),
        ({"steps": "1"}, "steps", "checks[0].fidelity.steps: Input should be greater than or equal to 2"),
        ({"fractions": "[0.5, 0.2]"}, "gap:", "checks[0].fidelity: fractions must increase"),
        ({"orders": "[mif]"}, "gap:", "checks[0].fidelity: gap needs the lif order: add it to orders"),
        ({"gapp": '">= 0.1"'}, "gapp:", "checks[0].fidelity: unknown key 'gapp' (did you mean 'gap'?)"),
        (
            {"methods": "[gard]"},
            "gard",
            "checks[0].fidelity.methods[0]: no attribution named 'gard' (did you mean 'grad'?)",
        ),
    ],
)
def test_bad_parameters_are_spec_errors_with_their_position(
    project: pytest.Pytester, write_spec, helpers: SimpleNamespace, keys: dict[str, str], needle: str, message: str
) -> None:
    values = {"gap": '">= 0.1"'} | keys
    if "gapp" in keys:
        values.pop("gap")
    path = write_spec(attributions=METHODS, checks=fidelity_check("faithful", **values))
    result = project.runpytest_inprocess()
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(failed=1)  # the spec's one error item; no model ran
    text = path.read_text()
    if needle in keys:  # a bad value: its own position
        line, column = helpers.position(text, f"{needle}: {keys[needle]}").split(":")
        where = f"{line}:{int(column) + len(needle) + 2}"
    else:  # a rule across keys (at the block's first key), or a name
        where = helpers.position(text, needle)
    result.stdout.fnmatch_lines([f"specs/x.saliency.yaml:{where}: {helpers.literal(message)}"])
    helpers.assert_no_traceback(result.stdout.str())


def test_curves_and_robustness_scores_do_not_depend_on_the_shard_or_batch_size(
    project: pytest.Pytester, write_spec
) -> None:
    # Every random draw (tie keys, random order, uniform fill, random maps, perturbations) is
    # seeded by the sample's index in the data set, so one sample per shard, three, or all six
    # at once give the same per-sample numbers.
    checks = fidelity_check("faithful", fill="uniform", steps="5", orders="[mif, lif, random]", gap='">= -1"')
    checks += "- id: stable\n  robustness:\n    methods: [grad]\n    n_perturb_samples: 3\n"
    checks += '    max_sensitivity: {max: "<= 10"}\n    infidelity: {mean: "<= 10"}\n'
    write_spec(attributions=METHODS, checks=checks)

    def per_sample(shard_size: str, batch_size: str) -> dict[tuple[str, str], object]:
        settings = [
            "--saliency-set",
            f"data.shard_size={shard_size}",
            "--saliency-set",
            f"data.batch_size={batch_size}",
        ]
        result = project.runpytest_inprocess("--saliency-json", "out.json", *settings)
        result.assert_outcomes(passed=3)
        document = json.loads((project.path / "out.json").read_text())
        numbers: dict[tuple[str, str], object] = {}
        for item in document["results"]:
            if item["kind"] == "fidelity":
                orders = item["fidelity"]["orders"]
                numbers[item["check"], item["method"]] = {order: orders[order]["auc"] for order in orders}
            else:
                numbers[item["check"], item["method"]] = item["per_sample"]
        return numbers

    whole = per_sample("256", "64")
    assert set(whole) == {("faithful", "grad"), ("faithful", "random"), ("stable", "grad")}
    assert len(whole["faithful", "random"]["random"]) == 6 and len(whole["stable", "grad"]["infidelity"]) == 6
    assert per_sample("1", "1") == whole
    assert per_sample("3", "2") == whole
