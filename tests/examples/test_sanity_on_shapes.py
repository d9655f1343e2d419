"""``examples/sanity.saliency.yaml`` on the shipped model: gradients pass the randomisation,
random-logit and eMPRT checks, the model-independent edge map fails all three, with the numbers
the spec reference (``docs/spec.md``, "sanity") reports (deterministic on the CPU; the tolerance absorbs float differences between
machines)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pytest_saliency.checks.outcome import Outcome
from pytest_saliency.checks.request import CheckRequest
from pytest_saliency.checks.sanity import KIND, decide
from pytest_saliency.engine import SpecEngine
from pytest_saliency.spec import load_spec
from pytest_saliency.streaming import Need, Plan

ROOT = Path(__file__).resolve().parents[2]
TOLERANCE = 0.01
QUOTED_CURVE = {"grad": [1.00, 0.80, 0.67, 0.28, 0.11], "edge": [1.00, 1.00, 1.00, 1.00, 1.00]}
QUOTED_VALUES = {("class-sensitive", "grad"): 0.701, ("class-sensitive", "edge"): 1.0,
                 ("disorder-when-random", "grad"): 0.917, ("disorder-when-random", "edge"): 0.0}  # fmt: skip


@pytest.fixture(scope="module")
def engine() -> SpecEngine:
    loaded = load_spec(ROOT / "examples" / "sanity.saliency.yaml")
    return SpecEngine(loaded, torch.device("cpu"), (ROOT,))


def outcome(engine: SpecEngine, check_id: str, method: str) -> Outcome:
    """The item's outcome; the first call computes every check of the spec in one pass."""
    checks = engine.spec.checks
    plan = Plan(tuple(Need(index, name) for index in range(len(checks)) for name in engine.spec.attributions))
    check = next(check for check in checks if check.id == check_id)
    return decide(CheckRequest(engine, check, KIND.config_of(check), method, None, engine.result(plan)))


@pytest.mark.parametrize("method", ["grad", "edge"])
def test_randomisation_curve_is_the_quoted_one(engine: SpecEngine, method: str) -> None:
    result = outcome(engine, "randomisation", method)
    assert result.extra["sanity"]["steps"] == ["original", "10", "6", "3", "0"]
    assert result.extra["sanity"]["curve"] == pytest.approx(QUOTED_CURVE[method], abs=TOLERANCE)
    assert result.passed == (method == "grad")


@pytest.mark.parametrize(("check_id", "method"), list(QUOTED_VALUES))
def test_random_logit_and_emprt_are_the_quoted_ones(engine: SpecEngine, check_id: str, method: str) -> None:
    result = outcome(engine, check_id, method)
    assert result.measurements[0].value == pytest.approx(QUOTED_VALUES[check_id, method], abs=TOLERANCE)
    assert result.passed == (method == "grad")


def test_the_spec_reference_quotes_these_numbers() -> None:
    reference = (ROOT / "docs" / "spec.md").read_text(encoding="utf-8")
    assert "0.80 → 0.67 → 0.28 → 0.11" in reference
    assert "0.701" in reference and "0.917" in reference
