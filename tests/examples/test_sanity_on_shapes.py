"""``examples/sanity.saliency.yaml`` on the shipped model: gradients pass the randomisation,
random-logit and eMPRT checks, the model-independent edge map fails all three, with the numbers
the README reports (deterministic on the CPU; the tolerance absorbs float differences between
machines)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pytest_saliency.checks.base import CheckRequest
from pytest_saliency.checks.sanity import evaluate
from pytest_saliency.engine import SpecEngine
from pytest_saliency.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]
TOLERANCE = 0.01
README_CURVE = {"grad": [1.00, 0.80, 0.67, 0.28, 0.11], "edge": [1.00, 1.00, 1.00, 1.00, 1.00]}
README_VALUES = {("class-sensitive", "grad"): 0.707, ("class-sensitive", "edge"): 1.0,
                 ("disorder-when-random", "grad"): 0.917, ("disorder-when-random", "edge"): 0.0}  # fmt: skip


@pytest.fixture(scope="module")
def engine() -> SpecEngine:
    loaded = load_spec(ROOT / "examples" / "sanity.saliency.yaml")
    return SpecEngine(loaded, torch.device("cpu"), (ROOT,))


def outcome(engine: SpecEngine, check_id: str, method: str):  # type: ignore[no-untyped-def]
    check = next(check for check in engine.spec.checks if check.id == check_id)
    return evaluate(CheckRequest(engine, check, method, None))


@pytest.mark.parametrize("method", ["grad", "edge"])
def test_randomisation_curve_is_the_readmes(engine: SpecEngine, method: str) -> None:
    result = outcome(engine, "randomisation", method)
    assert result.extra["sanity"]["steps"] == ["original", "10", "6", "3", "0"]
    assert result.extra["sanity"]["curve"] == pytest.approx(README_CURVE[method], abs=TOLERANCE)
    assert result.passed == (method == "grad")


@pytest.mark.parametrize(("check_id", "method"), list(README_VALUES))
def test_random_logit_and_emprt_are_the_readmes(engine: SpecEngine, check_id: str, method: str) -> None:
    result = outcome(engine, check_id, method)
    assert result.measurements[0].value == pytest.approx(README_VALUES[check_id, method], abs=TOLERANCE)
    assert result.passed == (method == "grad")


def test_the_readme_quotes_these_numbers() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "0.80 → 0.67 → 0.28 → 0.11" in readme
    assert "0.707" in readme and "0.917" in readme
