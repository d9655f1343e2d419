"""The README's remedies table, reproduced from the shipped weights, and a quick retraining.

The fast tests recompute every number of the table with ``examples/shapes/evaluate.py`` and
compare it with the README within :data:`TOLERANCE` (the computation is deterministic on the CPU;
the tolerance absorbs float differences between machines: one image of ``val.npz`` is 0.0039 of
accuracy). They also tie the ``decoy-unused`` checks of the example specs to those numbers.

The slow test retrains the normal and decoy models fully (about 15 s each) and the two remedies
briefly (``examples.shapes.margins.QUICK_EPOCHS``, 8 of the shipped 20 epochs: their extra passes
make them the expensive ones), and checks only the effects whose margin held on every one of five
seeds (training trajectories differ between machines, so a seed stands for another machine).
The remedies' effects on accuracy and the decoy share need the full training: they are checked on
the shipped weights by :func:`test_effects_the_readme_reports`, and the quick run records their
numbers.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from examples.shapes import evaluate
from examples.shapes.evaluate import FIDELITY, MODELS, Measured, measure_all, validation_set
from examples.shapes.margins import margins, quick_retraining
from examples.shapes.model import load
from examples.shapes.train import TRAIN_SEED

ROOT = Path(__file__).resolve().parents[2]
SHAPES = ROOT / "examples" / "shapes"
TOLERANCE = {"accuracy": 0.005, "decoy share": 0.005, "GTC": 0.005, "fidelity gap": 0.01}
SPECS = {
    "clean.pt": ROOT / "specs" / "shapes.saliency.yaml",
    "decoy.pt": ROOT / "examples" / "decoy.saliency.yaml",
    "cdep.pt": ROOT / "examples" / "cdep.saliency.yaml",
}


def readme_table() -> dict[str, list[str]]:
    """The README's remedies table: weights file -> the row's cells."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    header = "| " + " | ".join(evaluate.HEADER) + " |"
    assert header in lines, f"the README has no table with the header {header}"
    rows = {}
    for line in lines[lines.index(header) + 2 :]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        rows[cells[1].strip("`")] = cells
    return rows


def number(cell: str) -> float:
    return float(cell.split("±")[0])


@pytest.fixture(scope="module")
def measured() -> dict[str, Measured]:
    return {row.weights: row for row in measure_all()}


def test_readme_table_lists_every_shipped_model() -> None:
    rows = readme_table()
    assert list(rows) == [weights for _, weights, _ in MODELS]
    for method, weights, trained_on in MODELS:
        assert rows[weights][:3] == [method, f"`{weights}`", trained_on]
        assert (SHAPES / weights).stat().st_size < 200_000


@pytest.mark.parametrize("weights", [weights for _, weights, _ in MODELS])
def test_readme_numbers_are_reproduced_from_the_shipped_weights(measured: dict[str, Measured], weights: str) -> None:
    cells, row = readme_table()[weights], measured[weights]
    assert number(cells[3]) == pytest.approx(row.accuracy, abs=TOLERANCE["accuracy"])
    assert number(cells[4]) == pytest.approx(row.decoy_share, abs=TOLERANCE["decoy share"])
    assert number(cells[5]) == pytest.approx(row.gtc, abs=TOLERANCE["GTC"])
    assert len(cells) == 6 + len(FIDELITY)
    for cell, (gap, half) in zip(cells[6:], row.fidelity.values(), strict=True):
        assert number(cell) == pytest.approx(gap, abs=TOLERANCE["fidelity gap"])
        assert number(cell.split("±")[1]) == pytest.approx(half, abs=TOLERANCE["fidelity gap"])


def test_effects_the_readme_reports(measured: dict[str, Measured]) -> None:
    clean, decoy, cdep, guided = (measured[weights] for _, weights, _ in MODELS)
    assert decoy.accuracy < 0.5 < clean.accuracy and decoy.decoy_share > 4 * clean.decoy_share
    # CDEP (centred form) on the decoy data removes the shortcut: normal accuracy, a low share.
    assert cdep.accuracy > 0.95 and cdep.decoy_share < 0.15 < decoy.decoy_share
    # Saliency guided training: as accurate as normal training, more ground-truth coverage, and
    # a larger gap when pixels are zeroed (the removal it trains against), a smaller one with blur.
    assert abs(guided.accuracy - clean.accuracy) < 0.02 and guided.gtc > clean.gtc
    assert guided.fidelity["zeros"][0] > clean.fidelity["zeros"][0]
    assert guided.fidelity["blur"][0] < clean.fidelity["blur"][0]


def _decoy_unused_threshold(spec: Path) -> tuple[str, float]:
    """``(operator, value)`` of the ``decoy-unused`` check's ``share.mean`` in ``spec``."""
    text = spec.read_text(encoding="utf-8")
    block = text[text.index("- id: decoy-unused") :]
    match = re.search(r'share:\s*\{mean:\s*"(<=|<)\s*([0-9.]+)"\}', block)
    assert match, f"no share mean threshold in the decoy-unused check of {spec}"
    return match.group(1), float(match.group(2))


@pytest.mark.parametrize(("weights", "passes"), [("clean.pt", True), ("decoy.pt", False), ("cdep.pt", True)])
def test_decoy_unused_checks_of_the_specs_agree_with_the_table(
    measured: dict[str, Measured], weights: str, passes: bool
) -> None:
    operator, value = _decoy_unused_threshold(SPECS[weights])
    share = measured[weights].decoy_share
    assert (share <= value if operator == "<=" else share < value) is passes


@pytest.mark.parametrize(
    ("weights", "outcome", "failing"),
    [
        ("decoy.pt", "9 failed", ["decoy-unused", "no-distraction[grad]", "object-coverage[grad-circle]"]),
        ("cdep.pt", "1 failed, 8 passed", ["object-coverage[ig-triangle]"]),
    ],
)
def test_the_example_specs_fail_as_the_readme_says(weights: str, outcome: str, failing: list[str]) -> None:
    """``examples/decoy.saliency.yaml`` fails every test; ``examples/cdep.saliency.yaml`` passes
    the region check and every ``grad`` check, and integrated gradients' saliency mass on
    triangles stays too low."""
    spec = SPECS[weights]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(spec.relative_to(ROOT))],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 1, result.stdout[-3000:]
    for test_id in failing:
        assert f"FAILED examples/{spec.name}::{test_id}" in result.stdout, result.stdout[-3000:]
    assert re.search(rf"\b{outcome} in\b", result.stdout), result.stdout[-3000:]


def test_the_region_check_measures_the_tables_decoy_share(measured: dict[str, Measured]) -> None:
    """The spec's own engine and check give the table's number (batched by the spec's batch size)."""
    from pytest_saliency.checks.region import KIND, decide
    from pytest_saliency.checks.request import CheckRequest
    from pytest_saliency.engine import SpecEngine
    from pytest_saliency.spec import load_spec
    from pytest_saliency.streaming import Need, Plan

    loaded = load_spec(SPECS["decoy.pt"])
    engine = SpecEngine(loaded, torch.device("cpu"), (ROOT,))
    check = next(check for check in loaded.spec.checks if check.id == "decoy-unused")
    result = engine.result(Plan((Need(loaded.spec.checks.index(check), None),)))
    outcome = decide(CheckRequest(engine, check, KIND.config_of(check), None, None, result))
    (share,) = [m for m in outcome.measurements if m.name == "share.mean"]
    assert share.value == pytest.approx(measured["decoy.pt"].decoy_share, abs=1e-4)
    assert not outcome.passed and outcome.undefined == 0


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One CPU thread and deterministic algorithms (as the training script), restored after."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)


# Margins of the quick retraining over five seeds (`python -m examples.shapes.margins`, one
# thread; a seed draws other initial weights, batches and masking noise, as another machine's
# trajectory would), smallest first:
#   decoy share, decoy - normal:   0.219  0.372  0.377  0.383  0.392
#   accuracy, normal - decoy:      0.387  0.609  0.613  0.637  0.645
#   corner penalty, decoy / CDEP:  5.8e4  8.2e4  1.1e5  1.5e5  1.5e5
#   accuracy, CDEP - decoy:        0.027  0.117  0.230  0.422  0.555   (not asserted: see below)
#   decoy share, decoy - CDEP:     0.039  0.086  0.134  0.259  0.426   (not asserted)
#   accuracy, saliency guided:     0.363  0.395  0.516  0.637  0.840   (not asserted)
# After 8 epochs CDEP has met its penalty on every seed, but whether its model has left the
# shortcut for the shapes yet depends on the trajectory; the shipped, fully trained weights show
# that it does (test_effects_the_readme_reports), and so does saliency guided training's accuracy.


@pytest.mark.slow
def test_quick_retraining_shows_the_direction_of_each_effect(one_thread: None, record_property: Any) -> None:
    rows, penalties = quick_retraining(TRAIN_SEED)
    report = {
        name: (round(r.accuracy, 3), round(r.decoy_share, 3), round(r.gtc, 3), r.fidelity) for name, r in rows.items()
    }
    for name, values in report.items():
        record_property(f"quick.{name}", values)
    margin = margins(rows, penalties)
    # The shortcut: the decoy model reads the patch, the normal one does not (smallest margins
    # over five seeds 0.219 and 0.387).
    assert margin["decoy share: decoy - normal"] > 0.1, report
    assert margin["accuracy: normal - decoy"] > 0.2, report
    # CDEP lowers what it optimises by four orders of magnitude or more (smallest ratio 5.8e4).
    assert margin["corner penalty: decoy / CDEP"] > 100, report
    # Saliency guided training runs to finite numbers (its effects: on the shipped weights).
    assert math.isfinite(rows["saliency_guided"].decoy_share) and math.isfinite(rows["saliency_guided"].accuracy), (
        report
    )


def test_shipped_weights_load_and_predict() -> None:
    val = validation_set()
    for _, weights, _ in MODELS:
        model = load(SHAPES / weights)
        with torch.no_grad():
            assert model(val["images"][:4]).shape == (4, 3)
