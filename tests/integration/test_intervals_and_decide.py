"""Intervals on every gated number, and ``decide: interval`` (pass / fail / inconclusive).

The tiny model with ``looks_at=object`` puts all 6 samples in ``human_aligned``: the fraction
is 6/6 = 1.0 and its Wilson 95 % interval [0.6097, 1.0]. So ``min_fraction: {human_aligned: 0.5}``
passes by interval, ``0.8`` is inconclusive (the point 1.0 passes it) and a decoy-looking model's
``distractor`` fraction 1.0 fails ``max_fraction: 0.5`` by interval too.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest

WriteSpec = Callable[..., Path]

HUMAN_ALIGNED = """\
- id: aligned
  {decide}patterns:
    min_fraction: {{human_aligned: {limit}}}
"""


def aligned(limit: float, decide: str = "") -> str:
    return HUMAN_ALIGNED.format(limit=limit, decide=f"decide: {decide}\n  " if decide else "")


def test_every_aggregate_carries_an_interval_in_the_summary_json_and_junit(
    project: pytest.Pytester, write_spec: WriteSpec, helpers: SimpleNamespace
) -> None:
    checks = """\
- id: cov
  shared_interest:
    iou: {mean: ">= 0.5", p10: ">= 0.5", min: ">= 0.5"}
- id: pat
  patterns:
    max_fraction: {distractor: 0.5}
"""
    write_spec(checks=checks)
    result = project.runpytest_inprocess("--saliency-json", "out.json", "--junitxml", "junit.xml")
    result.assert_outcomes(passed=2)
    rows = {row["measured"]: row for row in helpers.summary_rows(result.stdout.str())}
    assert rows["iou.mean"]["interval"] == "0.000"  # every sample scores 1
    assert rows["iou.p10"]["interval"] == "0.000"
    assert rows["iou.min"]["interval"] == ""  # an extreme has no interval
    assert rows["fraction distractor"]["interval"] == "0.195"  # Wilson, 0 of 6
    document = json.loads((project.path / "out.json").read_text())
    measured = {m["name"]: m for r in document["results"] for m in r["measurements"]}
    assert measured["fraction distractor"]["lower"] == pytest.approx(0.0, abs=1e-12)
    assert measured["fraction distractor"]["upper"] == pytest.approx(0.3903, abs=1e-4)
    assert measured["fraction distractor"]["samples"] == 6
    assert measured["iou.min"]["interval"] is None and "lower" not in measured["iou.min"]
    assert {r["decide"] for r in document["results"]} == {"point"}
    properties = {p.get("name"): p.get("value") for p in ET.parse(project.path / "junit.xml").iter("property")}
    assert properties["saliency.fraction distractor.upper"] == "0.390334"
    assert properties["saliency.fraction distractor.interval"] == "0.195167"


def test_decide_interval_passes_when_the_whole_interval_meets_the_threshold(
    project: pytest.Pytester, write_spec: WriteSpec
) -> None:
    write_spec(checks=aligned(0.5, "interval"))
    result = project.runpytest_inprocess()
    result.assert_outcomes(passed=1)
    assert "inconclusive" not in result.stdout.str()


def test_decide_interval_fails_when_the_whole_interval_misses_the_threshold(
    project: pytest.Pytester, write_spec: WriteSpec
) -> None:
    checks = "- id: pat\n  decide: interval\n  patterns:\n    max_fraction: {distractor: 0.5}\n"
    write_spec(model="factory: tinymodel:build\nkwargs: {looks_at: decoy, shift: 1}", checks=checks)  # all distractors
    result = project.runpytest_inprocess()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*check 'pat' [[]grad] failed: fraction distractor = 1 (want <= 0.5)"])


def test_an_undecided_interval_is_an_inconclusive_warning_with_the_samples_it_needs(
    project: pytest.Pytester, write_spec: WriteSpec, helpers: SimpleNamespace
) -> None:
    write_spec(text=helpers.spec_yaml(checks=aligned(0.8)) + "decide: interval\n")  # spec-wide
    result = project.runpytest_inprocess("--saliency-json", "out.json")
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=1, warnings=1)
    # the lower half-width 1 - 0.6097 must shrink below 1 - 0.8: about 6 * (0.3903 / 0.2)^2 samples
    result.stdout.fnmatch_lines(
        [
            "*SaliencyWarning: "
            + helpers.literal(
                "check 'aligned' [grad] inconclusive: fraction human_aligned = 1, "
                "interval [0.6097, 1] straddles >= 0.8: about 23 samples (now 6) would likely decide it"
            ),
            "*fraction human_aligned  1.0000 ± 0.1952  >= 0.8     INCONCLUSIVE",
        ]
    )
    rows = helpers.summary_rows(result.stdout.str())
    assert [(row["check"], row["status"], row["ok"]) for row in rows] == [("aligned", "inconclusive", "inconclusive")]
    document = json.loads((project.path / "out.json").read_text())
    (entry,) = document["results"]
    assert entry["status"] == "inconclusive" and entry["decide"] == "interval"
    assert entry["measurements"][0]["inconclusive"] is True and entry["measurements"][0]["needed_samples"] == 23
    assert document["summary"]["inconclusive"] == 1

    strict = project.runpytest_inprocess("--saliency-strict")
    strict.assert_outcomes(failed=1)
    strict.stdout.fnmatch_lines(["*check 'aligned' [[]grad] inconclusive: fraction human_aligned = 1, interval *"])
    helpers.assert_no_traceback(strict.stdout.str())


def test_the_default_decides_by_the_point_and_a_check_overrides_the_spec(
    project: pytest.Pytester, write_spec: WriteSpec, helpers: SimpleNamespace
) -> None:
    write_spec(checks=aligned(0.8))
    project.runpytest_inprocess().assert_outcomes(passed=1)
    write_spec(text=helpers.spec_yaml(checks=aligned(0.8, "point")) + "decide: interval\n")
    overridden = project.runpytest_inprocess()
    overridden.assert_outcomes(passed=1)
    assert "SaliencyWarning" not in overridden.stdout.str()


def test_a_bad_decide_value_is_a_positioned_spec_error(
    project: pytest.Pytester, write_spec: WriteSpec, helpers: SimpleNamespace
) -> None:
    path = write_spec(checks=aligned(0.8, "intervall"))
    result = project.runpytest_inprocess()
    result.assert_outcomes(failed=1)
    where = helpers.position(path.read_text(), "intervall")
    result.stdout.fnmatch_lines(
        [
            f"specs/x.saliency.yaml:{where}: checks[[]0].decide: 'intervall' is not one of point, interval (did you mean 'interval'?)"
        ]
    )


def test_decide_interval_decides_aggregates_of_per_sample_scores_by_their_interval(
    project: pytest.Pytester, write_spec: WriteSpec, helpers: SimpleNamespace
) -> None:
    arrays = helpers.make_arrays()
    for i, size in enumerate((1, 2, 3, 4, 3, 2)):  # objects of 1 to 16 pixels: the sparseness varies
        arrays["images"][i, 0] = 0
        arrays["images"][i, 0, :size, :size] = 1
    (project.path / "varied.npz").write_bytes(helpers.npz_bytes(arrays))
    checks = '- id: sparse\n  decide: interval\n  complexity:\n    sparseness: {mean: ">= 0.97"}\n'
    write_spec(data="npz: ../varied.npz\nclasses: [circle, square, triangle]", checks=checks)
    result = project.runpytest_inprocess("--saliency-json", "out.json")
    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines(
        ["*check 'sparse' [[]grad] inconclusive: sparseness.mean = *, interval * straddles >= 0.97*"]
    )
    (entry,) = json.loads((project.path / "out.json").read_text())["results"]
    (measured,) = entry["measurements"]
    assert entry["status"] == "inconclusive" and measured["inconclusive"] is True
    assert measured["lower"] < 0.97 < measured["value"] < measured["upper"] and measured["samples"] == 6
