"""The ``drift`` check on a model whose gradient saliency is known exactly, and its baselines.

``drift_twins_unit.py`` (written once per session) holds ``Twin``: its Saliency map is
``gain[c] * x[c]`` on channel 0 (the object) and channel 1 (the decoy), so two state_dicts that
differ only in ``gain`` are two versions of one model that look at different things. The data:
16x16 images cut into 4x4 segments, one 4x4 object segment and one 4x4 decoy segment per image,
so every share below is known in advance: the clean version puts 1/1.1 of its attribution on the
object and 0.1/1.1 on the decoy, its decoy twin 0.2/1.2 and 1/1.2.
"""

from __future__ import annotations

import json
import os
import stat
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from pytest_saliency import _io
from pytest_saliency._constants import spec_stem
from pytest_saliency.baselines.settings import BaselineSettings, ci_is_set, snapshot_name, update_command
from pytest_saliency.baselines.summary import summary_lines
from pytest_saliency.checks.drift import KIND, decide
from pytest_saliency.checks.request import CheckRequest
from pytest_saliency.engine import SpecEngine
from pytest_saliency.errors import SnapshotEnvironmentWarning, SpecDeprecationWarning, SpecError, SpecRuntimeError
from pytest_saliency.spec import load_spec
from pytest_saliency.streaming import Need, Plan

TWINS = '''\
import torch
from torch import nn


class Twin(nn.Module):
    """Saliency of any logit is gain[c] * x[c] (channels 0 and 1; channel 2 has gain 0)."""

    def __init__(self, num_classes=3):
        super().__init__()
        self.features = nn.Conv2d(3, 3, kernel_size=1, bias=False)  # identity: the embedding layer
        with torch.no_grad():
            self.features.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
        self.gain = nn.Parameter(torch.tensor([1.0, 0.1, 0.0]))
        self.scale = nn.Parameter(torch.linspace(1.0, 2.0, num_classes))
        self.unused = nn.Identity()  # never called: no activations to embed with

    def forward(self, x):
        f = self.features(x)
        energy = 0.5 * (self.gain.view(1, 3, 1, 1) * f.square()).flatten(1).sum(1)
        return energy[:, None] * self.scale


def build(num_classes=3):
    return Twin(num_classes)
'''

N, SIZE, PATCH = 12, 16, 4
CLEAN_GAIN, DECOY_GAIN = (1.0, 0.1, 0.0), (0.2, 1.0, 0.0)
DECOY_SHIFT = 1.0 / 1.2 - 0.1 / 1.1  # the decoy segments' share: 0.1/1.1 under clean -> 1/1.2 under the twin


def make_arrays(n: int = N) -> dict[str, np.ndarray]:
    """Image i: object in 4x4 cell (1 + i % 2, 1 + (i // 2) % 2), decoy in corner cell i % 4,
    channel 2 a random texture that carries no attribution."""
    rng = np.random.default_rng(0)
    images = np.zeros((n, 3, SIZE, SIZE), np.float32)
    masks = np.zeros((n, SIZE, SIZE), bool)
    decoy = np.zeros((n, SIZE, SIZE), bool)
    for i in range(n):
        row, col = 1 + i % 2, 1 + (i // 2) % 2
        masks[i, 4 * row : 4 * row + 4, 4 * col : 4 * col + 4] = True
        corner_row, corner_col = (0 if i % 4 < 2 else 3), (0 if i % 2 == 0 else 3)
        decoy[i, 4 * corner_row : 4 * corner_row + 4, 4 * corner_col : 4 * corner_col + 4] = True
        images[i, 0], images[i, 1] = masks[i], decoy[i]
        images[i, 2] = rng.uniform(0.2, 0.8, size=(SIZE, SIZE))
    return {"images": images, "masks": masks, "labels": np.arange(n) % 3, "decoy": decoy}


@pytest.fixture(scope="session")
def twins_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with ``drift_twins_unit.py``, ``clean.pt``, ``decoy.pt`` and ``data.npz``."""
    folder = tmp_path_factory.mktemp("twins")
    (folder / "drift_twins_unit.py").write_text(TWINS, encoding="utf-8")
    namespace: dict[str, object] = {}
    exec(compile(TWINS, "drift_twins_unit.py", "exec"), namespace)
    for name, gain in (("clean", CLEAN_GAIN), ("decoy", DECOY_GAIN)):
        model = namespace["build"]()  # type: ignore[operator]
        with torch.no_grad():
            model.gain.copy_(torch.tensor(gain))
        torch.save(model.state_dict(), folder / f"{name}.pt")
    np.savez(folder / "data.npz", **make_arrays())  # type: ignore[arg-type]
    return folder


@pytest.fixture
def project(twins_dir: Path, tmp_path: Path) -> Path:
    """A fresh folder per test holding links to the twins' files (baselines are written here)."""
    for item in twins_dir.iterdir():
        if item.is_file():
            (tmp_path / item.name).symlink_to(item)
    return tmp_path


def write_spec(
    folder: Path,
    *,
    weights: str = "decoy.pt",
    against: str = "{weights: clean.pt}",
    extra: str = "",
    batch_size: int = 64,
    shard_size: int = 256,
    name: str = "twin",
) -> Path:
    text = textwrap.dedent(
        f"""\
        version: 1
        model:
          factory: drift_twins_unit:build
          weights: {weights}
        data:
          npz: data.npz
          classes: [a, b, c]
          batch_size: {batch_size}
          shard_size: {shard_size}
        attributions:
          grad: {{method: Saliency, params: {{abs: true}}}}
        checks:
          - id: drift
            drift:
              against: {against}
              segments: {{patch: {PATCH}}}
              keep: 2
              clusters: 2
              max_shift: 0.1
        """
    )
    text += textwrap.indent(textwrap.dedent(extra), " " * 6) if extra else ""
    path = folder / f"{name}.saliency.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def decided(engine: SpecEngine, method: str = "grad", baselines: BaselineSettings | None = None):
    """The outcome of the spec's first check for ``method``, from one streaming pass."""
    result = engine.result(Plan((Need(0, method),)))
    check = engine.spec.checks[0]
    return decide(
        CheckRequest(engine, check, KIND.config_of(check), method, None, result, baselines or BaselineSettings())
    )


def run(path: Path, method: str = "grad", baselines: BaselineSettings | None = None):
    return decided(SpecEngine(load_spec(path), torch.device("cpu"), ()), method, baselines)


def measured(outcome, name: str) -> float:
    return next(m.value for m in outcome.measurements if m.name == name)


BASELINE = "{snapshot: production}"

# --------------------------------------------------------------------------------------------
# Against another version
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["activations", "colour_texture"])
def test_a_model_against_itself_has_zero_shift(project, kind):
    path = write_spec(project, weights="clean.pt", extra=f"embedding: {{kind: {kind}}}\nmin_rank_correlation: 0.99\n")
    outcome = run(path)
    assert outcome.passed
    assert measured(outcome, "max |shift|") == 0.0
    assert measured(outcome, "rank correlation mean") == pytest.approx(1.0)
    drift = outcome.extra["drift"]
    assert all(cluster["shift"] == 0.0 for cluster in drift["clusters"])
    assert outcome.samples == N and outcome.undefined == 0


@pytest.mark.parametrize("kind", ["activations", "colour_texture"])
def test_the_decoy_twin_moves_the_cluster_that_holds_the_decoys(project, kind):
    outcome = run(write_spec(project, extra=f"embedding: {{kind: {kind}}}\nmean_shift: 0.05\n"))
    assert not outcome.passed
    assert measured(outcome, "max |shift|") == pytest.approx(DECOY_SHIFT, abs=1e-6)
    region = outcome.extra["regions"]["decoy"]
    assert region["segments"] == N and region["fraction"] == 1.0
    cluster = outcome.extra["drift"]["clusters"][region["cluster"]]
    assert cluster["shift"] == pytest.approx(DECOY_SHIFT, abs=1e-6)
    assert cluster["share_a"] == pytest.approx(0.1 / 1.1, abs=1e-6)
    assert cluster["share_b"] == pytest.approx(1 / 1.2, abs=1e-6)
    assert cluster["count"] == N and len(cluster["representatives"]) == 5
    text = "\n".join(outcome.details)
    top = region["cluster"]
    assert f"cluster {top} (n={N}): share 0.09 → 0.83 (+0.74) [holds the decoy]" in text
    assert (
        f"decoy: cluster {top} holds 100 % of the {N} kept segments on the decoy mask; their share 0.09 → 0.83" in text
    )
    assert "A = weights clean.pt (reference); B = this spec's model (weights decoy.pt)" in text
    assert f"ground truth: the {N} kept segments on the ground-truth mask hold share 0.91 → 0.17" in text
    json.dumps(outcome.to_dict(), allow_nan=False)


@pytest.mark.parametrize("kind", ["activations", "colour_texture"])
@pytest.mark.parametrize("against", ["{weights: clean.pt}", BASELINE])
def test_the_result_does_not_depend_on_the_batch_or_shard_size(project, kind, against):
    extra = f"embedding: {{kind: {kind}}}\n"
    run(write_spec(project, against=against, extra=extra, shard_size=7), baselines=BaselineSettings(mode="missing"))
    whole = run(write_spec(project, against=against, extra=extra))  # a snapshot made in two shards, read in one
    assert run(write_spec(project, against=against, extra=extra, batch_size=5)).extra["drift"] == whole.extra["drift"]
    for size in (1, 5):
        assert (
            run(write_spec(project, against=against, extra=extra, shard_size=size)).extra["drift"]
            == whole.extra["drift"]
        )


def test_against_a_whole_model_block_and_a_named_layer(project):
    against = "{model: {factory: drift_twins_unit:build, weights: clean.pt}}"
    outcome = run(write_spec(project, against=against, extra="embedding: {layer: features}\n"))
    assert measured(outcome, "max |shift|") == pytest.approx(DECOY_SHIFT, abs=1e-6)
    assert outcome.extra["against"] == "model drift_twins_unit:build with weights clean.pt"


def test_an_unknown_embedding_layer_is_a_spec_level_error(project):
    with pytest.raises(SpecRuntimeError) as error:
        run(write_spec(project, extra="embedding: {layer: featurez}\n"))
    assert error.value.location == ("checks", 0, "drift", "embedding", "layer")
    assert "no layer 'featurez' (did you mean 'features'?)" in error.value.message


@pytest.mark.parametrize("against", ["{weights: clean.pt}", "{snapshot: production}"])
def test_a_layer_the_model_never_calls_is_a_spec_level_error(project, against):
    path = write_spec(project, against=against, extra="embedding: {layer: unused}\n")
    with pytest.raises(SpecRuntimeError) as error:
        run(path, baselines=BaselineSettings(mode="missing"))
    assert error.value.location == ("checks", 0, "drift", "embedding")
    assert error.value.message == (
        "cannot embed segments with the activations of layer 'unused': "
        "layer 'network.unused' was not called by the model's forward"
    )
    assert not (project / "saliency-baselines" / "twin" / "production.drift.grad.pt").exists()


def test_the_reference_and_its_embedder_are_built_once_per_worker(project, monkeypatch):
    from pytest_saliency import streaming
    from pytest_saliency.checks import drift

    loads, embedders = [], []
    load_model, reference_embedder = streaming.load_model, drift._reference_embedder
    monkeypatch.setattr(streaming, "load_model", lambda *a, **k: loads.append(a) or load_model(*a, **k))
    monkeypatch.setattr(drift, "_reference_embedder", lambda *a: embedders.append(a) or reference_embedder(*a))
    outcome = run(write_spec(project, shard_size=5))  # three shards
    assert measured(outcome, "max |shift|") == pytest.approx(DECOY_SHIFT, abs=1e-6)
    assert len(loads) == 2 and len(embedders) == 1  # the spec's model and the reference, once each


EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "drift.saliency.yaml"


@pytest.mark.skipif(not (EXAMPLE.parent / "shapes" / "decoy.pt").exists(), reason="the shapes weights are not built")
def test_the_shipped_example_fails_and_names_the_decoy_cluster():
    loaded = load_spec(EXAMPLE)
    outcome = decided(SpecEngine(loaded, torch.device("cpu"), (EXAMPLE.parents[1],)))
    assert not outcome.passed
    region = outcome.extra["regions"]["decoy"]
    drift = outcome.extra["drift"]
    largest = max(drift["clusters"], key=lambda cluster: abs(cluster["shift"] or 0))
    assert largest["cluster"] == region["cluster"] and largest["shift"] > 0.05  # the decoy cluster moves most
    assert region["fraction"] >= 0.9 and region["share_b"] > 4 * region["share_a"]
    ground_truth = outcome.extra["regions"]["ground_truth"]
    assert ground_truth["share_b"] < ground_truth["share_a"]
    assert f"decoy: cluster {region['cluster']} holds" in "\n".join(outcome.details)


# --------------------------------------------------------------------------------------------
# Against a stored snapshot
# --------------------------------------------------------------------------------------------


def test_the_former_key_names_the_same_files_and_warns_at_its_line(project):
    path = write_spec(project, against="{baseline: production}")
    with pytest.warns(
        SpecDeprecationWarning, match=r"against\.baseline: 'baseline' is the former name of 'snapshot'"
    ) as caught:
        created = run(path, baselines=BaselineSettings(mode="missing"))
    assert created.extra["baseline"]["action"] == "created" and all(file.is_file() for file in stored(project))
    line = next(number for number, text in enumerate(path.read_text().splitlines(), 1) if "against:" in text)
    assert {(Path(item.filename), item.lineno) for item in caught if item.category is SpecDeprecationWarning} == {
        (path, line)
    }
    with pytest.raises(SpecError, match="give exactly one of weights, model, snapshot, baseline"):
        load_spec(write_spec(project, against="{snapshot: production, baseline: production}"))
    assert run(write_spec(project, against=BASELINE)).extra["baseline"]["action"] == "compared"


def stored(project: Path, name: str = "production.drift.grad") -> tuple[Path, Path]:
    folder = project / "saliency-baselines" / "twin"
    return folder / f"{name}.pt", folder / f"{name}.json"


def test_a_missing_baseline_fails_with_the_command_that_creates_it(project):
    path = write_spec(project, against=BASELINE)
    with pytest.raises(SpecRuntimeError) as error:
        run(path)
    assert error.value.location == ("checks", 0, "drift", "against", "snapshot")
    assert error.value.message == (
        f"no baseline 'production.drift.grad' in {project / 'saliency-baselines' / 'twin'}; create it with: "
        f"pytest --saliency-update-baselines --saliency-update-mode=missing {path}"
    )
    assert not (project / "saliency-baselines").exists()  # a normal run never writes


@pytest.mark.parametrize("kind", ["activations", "colour_texture"])
def test_baseline_round_trip(project, kind):
    path = write_spec(project, weights="clean.pt", against=BASELINE, extra=f"embedding: {{kind: {kind}}}\n")
    created = run(path, baselines=BaselineSettings(mode="changed"))
    assert created.passed and created.extra["baseline"]["action"] == "created"
    tensors_path, json_path = stored(project)
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(tensors_path.stat().st_mode) == stat.S_IMODE(json_path.stat().st_mode) == 0o666 & ~umask
    tensors = torch.load(tensors_path, weights_only=True)
    if kind == "activations":  # every segment of every image, embedded by the baselined model's layer
        assert (
            tensors["embeddings"].shape == (N, (SIZE // PATCH) ** 2, 3) and tensors["embeddings"].dtype == torch.float16
        )
    else:
        assert "embeddings" not in tensors
    assert tensors["scores_a"].shape == (N, 16) and tensors["centres"].shape[0] == 2
    metadata = json.loads(json_path.read_text())
    assert metadata["settings"]["segments"] == {"patch": PATCH} and metadata["data_hash"] and metadata["weights_hash"]
    assert metadata["spec_hash"] and metadata["library_version"] and metadata["created"]
    assert metadata["check"] == "drift" and metadata["method"] == "grad"

    again = run(path)  # a normal run compares
    assert again.passed and measured(again, "max |shift|") == 0.0
    assert again.extra["baseline"]["action"] == "compared"

    before = tensors_path.read_bytes(), json_path.read_text()
    for mode, action in (("changed", "unchanged"), ("missing", "unchanged")):
        assert run(path, baselines=BaselineSettings(mode=mode)).extra["baseline"]["action"] == action
    assert (tensors_path.read_bytes(), json_path.read_text()) == before
    assert run(path, baselines=BaselineSettings(mode="all")).extra["baseline"]["action"] == "updated"


def test_a_new_version_against_the_baseline_fails_and_writes_the_obtained_summary(project):
    path = write_spec(project, weights="clean.pt", against=BASELINE)
    run(path, baselines=BaselineSettings(mode="missing"))
    write_spec(project, weights="decoy.pt", against=BASELINE)  # the next version of the model
    summaries = project / "cache" / "saliency-obtained"
    outcome = run(path, baselines=BaselineSettings(obtained=summaries))
    assert not outcome.passed
    assert measured(outcome, "max |shift|") == pytest.approx(DECOY_SHIFT, abs=1e-6)
    obtained = summaries / "twin" / "production.drift.grad.obtained.json"  # never beside the snapshot
    assert outcome.extra["baseline"]["obtained"] == str(obtained) == outcome.extra["artifacts"][0]
    record = json.loads(obtained.read_text())
    assert record["passed"] is False and record["drift"]["max_abs_shift"] == pytest.approx(DECOY_SHIFT, abs=1e-5)
    assert "decoy: cluster" in "\n".join(outcome.details) and f"written to {obtained}" in outcome.details[-1]
    assert outcome.extra["against"].startswith("baseline 'production' (production.drift.grad, made ")

    updated = run(path, baselines=BaselineSettings(mode="changed", obtained=summaries))
    assert updated.passed and updated.extra["baseline"]["action"] == "updated"
    assert not obtained.exists()  # the mismatch is resolved: its stale summary is gone


def test_a_baseline_made_with_other_segments_or_data_is_refused(project):
    path = write_spec(project, weights="clean.pt", against=BASELINE)
    run(path, baselines=BaselineSettings(mode="missing"))
    text = path.read_text()
    path.write_text(text.replace(f"patch: {PATCH}", "patch: 8"))
    with pytest.raises(SpecRuntimeError) as error:
        run(path)
    assert (
        "was made from other data or settings and is refused: segments: baseline has {'patch': 4}, "
        in error.value.message
    )
    assert "this run has {'patch': 8}" in error.value.message
    assert error.value.message.endswith(f"rewrite it with: pytest --saliency-update-baselines {path}")

    path.write_text(text.replace("  classes: [a, b, c]", "  classes: [a, b, c]\n  limit: 8"))
    with pytest.raises(SpecRuntimeError, match=r"refused: data_hash: baseline has '\w+', this run has '\w+'"):
        run(path)
    with pytest.raises(SpecRuntimeError, match="refused"):
        run(path, baselines=BaselineSettings(mode="missing"))  # create-missing never rewrites an existing baseline
    assert run(path, baselines=BaselineSettings(mode="changed")).extra["baseline"]["action"] == "updated"


def test_an_interrupted_update_leaves_the_previous_baseline_intact(project, monkeypatch):
    path = write_spec(project, weights="clean.pt", against=BASELINE)
    run(path, baselines=BaselineSettings(mode="missing"))
    tensors_path, json_path = stored(project)
    before = tensors_path.read_bytes(), json_path.read_bytes()

    def interrupted(handle, data):
        handle.write(data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_io, "write_all", interrupted)
    write_spec(project, weights="decoy.pt", against=BASELINE)
    with pytest.raises(SpecRuntimeError) as error:
        run(path, baselines=BaselineSettings(mode="all"))
    assert "cannot write baseline 'production.drift.grad'" in error.value.message
    assert "the previous baseline, if any, is unchanged" in error.value.message
    assert (tensors_path.read_bytes(), json_path.read_bytes()) == before
    assert sorted(p.name for p in tensors_path.parent.iterdir()) == [
        ".gitignore",
        "production.drift.grad.json",
        "production.drift.grad.pt",
    ]
    monkeypatch.undo()
    assert not run(path).passed  # the old baseline still loads, and the twin still drifts from it


def test_a_baseline_from_another_environment_warns(project):
    path = write_spec(project, weights="clean.pt", against=BASELINE)
    run(path, baselines=BaselineSettings(mode="missing"))
    json_path = stored(project)[1]
    metadata = json.loads(json_path.read_text())
    json_path.write_text(json.dumps({**metadata, "torch_version": "1.0.0"}))
    with pytest.warns(SnapshotEnvironmentWarning, match="torch_version: baseline made with 1.0.0"):
        outcome = run(path)
    assert outcome.passed and any(line.startswith("note: baseline torch_version") for line in outcome.details)


def test_update_reports_baselines_no_check_names(project):
    path = write_spec(project, weights="clean.pt", against=BASELINE)
    run(path, baselines=BaselineSettings(mode="missing"))
    path.write_text(path.read_text().replace("id: drift", "id: renamed"))
    outcome = run(path, baselines=BaselineSettings(mode="missing"))
    assert outcome.extra["baseline"]["unused"] == [
        str(project / "saliency-baselines" / "twin" / "production.drift.grad")
    ]
    assert stored(project)[0].exists()  # reported, never deleted


def test_a_configured_baseline_directory(project, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("baselines")
    path = write_spec(project, weights="clean.pt", against=BASELINE)
    assert (
        run(path, baselines=BaselineSettings(directory=elsewhere, mode="missing")).extra["baseline"]["action"]
        == "created"
    )
    assert (elsewhere / "twin" / "production.drift.grad.pt").is_file()
    assert not (project / "saliency-baselines").exists()


# --------------------------------------------------------------------------------------------
# Baseline settings of a run
# --------------------------------------------------------------------------------------------


def test_baseline_settings_helpers(monkeypatch, tmp_path):
    assert BaselineSettings().mode is None and not BaselineSettings().updating
    assert BaselineSettings(mode="all").updating
    assert spec_stem(Path("a/shapes.saliency.yaml")) == "shapes" and spec_stem(Path("x.saliency.yml")) == "x"
    assert snapshot_name("production", "stable", "ig") == "production.stable.ig"
    assert BaselineSettings().folder(Path("specs/shapes.saliency.yaml")) == Path("specs/saliency-baselines/shapes")
    assert BaselineSettings(directory=tmp_path).folder(Path("specs/shapes.saliency.yaml")) == tmp_path / "shapes"
    for value, expected in (("true", True), ("1", True), ("yes", True), ("", False), ("0", False), ("false", False)):
        assert ci_is_set({"CI": value}) is expected
    assert ci_is_set({}) is False
    assert update_command("specs/a b.saliency.yaml") == "pytest --saliency-update-baselines 'specs/a b.saliency.yaml'"
    assert (
        update_command("s.saliency.yaml", "all")
        == "pytest --saliency-update-baselines --saliency-update-mode=all s.saliency.yaml"
    )
    monkeypatch.setenv("CI", "true")
    assert "CI is set here" in update_command("s.saliency.yaml")


def test_summary_lines_count_each_action():
    results = [
        {"baseline": {"action": "created", "folder": "/x/specs/saliency-baselines/a"}},
        {"baseline": {"action": "unchanged", "folder": "/x/specs/saliency-baselines/a", "unused": ["/x/old"]}},
        {"baseline": {"action": "compared", "obtained": "/x/specs/saliency-baselines/a/p.d.ig.obtained.json"}},
        {"measurements": []},
    ]
    lines = summary_lines(results, BaselineSettings(mode="changed"))
    assert lines[0].startswith(
        "saliency baselines (--saliency-update-mode=changed): 1 created, 0 updated, 1 unchanged in "
    )
    assert "named by no check" in lines[1] and lines[2].startswith("saliency drift mismatches")
    assert lines[3].endswith("p.d.ig.obtained.json")
    assert summary_lines(results[3:], BaselineSettings()) == []


def test_a_format_1_baseline_compares_without_its_data_hash_and_says_so(project):
    path = write_spec(project, weights="clean.pt", against=BASELINE)
    run(path, baselines=BaselineSettings(mode="missing"))
    json_path = stored(project)[1]
    metadata = json.loads(json_path.read_text())
    assert metadata["format"] == 2 and len(metadata["data_hash"]) == 16
    json_path.write_text(json.dumps({**metadata, "data_hash": "c72cdc9bbbe40d24"}))  # another data hash
    with pytest.raises(SpecRuntimeError, match=r"refused: data_hash: baseline has 'c72cdc9bbbe40d24'"):
        run(path)
    json_path.write_text(json.dumps({**metadata, "format": 1, "data_hash": "c72cdc9bbbe40d24"}))  # an older snapshot
    note = (
        "baseline 'production.drift.grad' has format 1, whose data hash this version cannot check: compared "
        f"without checking the data; rewrite it with: pytest --saliency-update-baselines {path}"
    )
    with pytest.warns(SnapshotEnvironmentWarning) as caught:
        outcome = run(path)
    assert [str(item.message) for item in caught] == [note]
    assert outcome.passed and outcome.details[-1] == f"note: {note}"
    assert run(path, baselines=BaselineSettings(mode="changed")).extra["baseline"]["action"] == "updated"
    assert json.loads(json_path.read_text())["format"] == 2
