"""The shipped ViT pair (``examples/vit``): its README tables reproduced from the shipped weights,
and ``examples/vit.saliency.yaml`` passing the clean ViT and failing the decoy one.

The accuracy table is recomputed with ``examples/vit/train.py``'s :func:`accuracies` (deterministic
on the CPU; the tolerance absorbs float differences between machines: one image of ``val.npz`` is
0.0039). The spec runs in a pytest subprocess per weights file, as a user runs it; its JSON results
give the README's table of measurements. Retraining (``python -m examples.vit.train``, about 5.5
minutes per model) is left out of the suite.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from examples.vit.models import load
from examples.vit.train import DECOY_MODES, accuracies

ROOT = Path(__file__).resolve().parents[2]
VIT = ROOT / "examples" / "vit"
SPEC = ROOT / "examples" / "vit.saliency.yaml"
TOLERANCE = {"accuracy": 0.005, "measured": 0.005}
FAILED_BY_DECOY = {
    "object-coverage[rollout]",
    "object-coverage[relevance]",
    "on-the-shape[rollout]",
    "on-the-shape[relevance]",
    "decoy-unused",
}
OUTCOMES = {"clean.pt": (0, set[str]()), "decoy.pt": (1, FAILED_BY_DECOY)}
"""weights -> (pytest's exit status, the tests that fail) of the spec run against them; every other
test passes (``cam-is-unfaithful`` passes both: Grad-CAM ranks neither model's evidence)."""


def table(header: str) -> list[list[str]]:
    """The rows (cells) of the table of ``examples/vit/README.md`` whose header starts with ``header``."""
    lines = (VIT / "README.md").read_text(encoding="utf-8").splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(header)), None)
    assert start is not None, f"examples/vit/README.md has no table whose header starts with {header!r}"
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


@pytest.fixture(scope="module")
def measured_accuracies() -> dict[str, tuple[float, float]]:
    return {f"{name}.pt": accuracies(load(VIT / f"{name}.pt")) for name in DECOY_MODES}


def test_the_accuracy_table_is_reproduced_from_the_shipped_weights(
    measured_accuracies: dict[str, tuple[float, float]],
) -> None:
    rows = {row[0].strip("`"): row for row in table("| file |")}
    assert list(rows) == ["clean.pt", "decoy.pt"]
    for weights, (on_random, on_label) in measured_accuracies.items():
        assert float(rows[weights][2]) == pytest.approx(on_random, abs=TOLERANCE["accuracy"])
        assert float(rows[weights][3]) == pytest.approx(on_label, abs=TOLERANCE["accuracy"])
        assert (VIT / weights).stat().st_size < 400_000


def test_the_decoy_vit_reads_the_patch_and_the_clean_vit_the_shape(
    measured_accuracies: dict[str, tuple[float, float]],
) -> None:
    clean, decoy = measured_accuracies["clean.pt"], measured_accuracies["decoy.pt"]
    assert min(clean) > 0.9 and abs(clean[0] - clean[1]) < 0.02
    assert decoy[0] < 0.5 < 0.95 < decoy[1]


def run_spec(weights: str, json_path: Path) -> subprocess.CompletedProcess[str]:
    """``pytest examples/vit.saliency.yaml`` against ``examples/vit/<weights>``, results in ``json_path``."""
    weights_path = (VIT / weights).relative_to(ROOT)
    options = ["--saliency-set", f"model.weights={weights_path}", "--saliency-json", str(json_path)]
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(SPEC.relative_to(ROOT)), *options]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def spec_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, dict[str, dict[str, object]]]]:
    """weights -> (exit status, nodeid's check and variant -> its JSON result)."""
    runs = {}
    for weights in OUTCOMES:
        path = tmp_path_factory.mktemp("vit") / "results.json"
        result = run_spec(weights, path)
        assert path.exists(), result.stdout[-3000:] + result.stderr[-3000:]
        results = json.loads(path.read_text(encoding="utf-8"))["results"]
        runs[weights] = (result.returncode, {r["nodeid"].split("::")[1]: r for r in results})
    return runs


@pytest.mark.parametrize("weights", list(OUTCOMES))
def test_the_spec_passes_the_clean_vit_and_fails_the_decoy_vit(
    spec_runs: dict[str, tuple[int, dict[str, dict[str, object]]]], weights: str
) -> None:
    returncode, results = spec_runs[weights]
    expected_code, failing = OUTCOMES[weights]
    assert returncode == expected_code
    assert set(results) == {row[0].strip("`") for row in table("| test |")}
    assert {test for test, result in results.items() if result["status"] != "passed"} == failing


def test_layer_auto_picks_the_last_blocks_first_norm(
    spec_runs: dict[str, tuple[int, dict[str, dict[str, object]]]],
) -> None:
    _, results = spec_runs["clean.pt"]
    details = results["cam-is-unfaithful[cam]"]["details"]
    assert isinstance(details, list)
    assert "cam: attributes to layer encoder.layers.encoder_layer_2.ln_1 (tokens: 1 prefix, grid 8x8)" in details


def test_the_readme_measurements_are_the_specs(
    spec_runs: dict[str, tuple[int, dict[str, dict[str, object]]]],
) -> None:
    """Each row of the README's measurement table: test, measured key, clean, decoy, threshold."""
    for test, key, clean, decoy, threshold in table("| test |"):
        for weights, cell in (("clean.pt", clean), ("decoy.pt", decoy)):
            measurements = spec_runs[weights][1][test.strip("`")]["measurements"]
            assert isinstance(measurements, list)
            (found,) = [m for m in measurements if m["key"] == key.strip("`")]
            assert float(cell) == pytest.approx(found["value"], abs=TOLERANCE["measured"]), (weights, test, key)
            assert found["threshold"] == threshold.strip("`")


def test_the_project_readme_quotes_the_pairs_numbers() -> None:
    """Every number in the project README's table of the pair is one of ``examples/vit/README.md``'s."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### The ViT pair") :]
    quoted = re.findall(r"−?\d+\.\d{3}", section[: section.index("\n\n", section.index("| |"))])
    own = set(re.findall(r"-?\d+\.\d{3}", (VIT / "README.md").read_text(encoding="utf-8")))
    assert len(quoted) == 20
    assert {number.replace("−", "-") for number in quoted} <= own
