"""A check item whose class or slice has no samples fails, and says so."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest

WriteSpec = Callable[..., Path]

CHECKS = {
    "shared_interest": 'iou: {mean: ">= 0.5"}',
    "patterns": "max_fraction: {distractor: 0.5}",
    "complexity": 'sparseness: {mean: ">= 0.5"}',
    "localisation": 'pointing_game: {mean: ">= 0.5"}',
}


@pytest.mark.parametrize("kind", list(CHECKS))
def test_a_class_without_samples_fails_with_no_samples_of_class(
    project: pytest.Pytester, write_spec: WriteSpec, helpers: SimpleNamespace, kind: str
) -> None:
    checks = f"- id: c\n  {kind}:\n    {CHECKS[kind]}\n    per_class: true\n"
    write_spec(data="npz: ../data.npz\nclasses: [circle, square, triangle]\nlimit: 2", checks=checks)
    result = project.runpytest_inprocess("-v")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*c[[]grad-triangle] FAILED*",
            "*check 'c' [[]grad-triangle] failed: *",
            "  samples: 0",
            "  no samples of class 'triangle'",
        ]
    )
    helpers.assert_no_traceback(result.stdout.str())
