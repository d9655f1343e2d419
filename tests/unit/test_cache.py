"""The persistent result cache's keys, entries and bound (pytest_saliency.cache)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_saliency import cache
from pytest_saliency.cache import ResultCache, batch_digest, need_key, spec_key
from pytest_saliency.loaders.source import SampleBatch
from pytest_saliency.memo import deciding_with, remembered
from pytest_saliency.spec import load_spec
from pytest_saliency.spec.validate import LoadedSpec
from pytest_saliency.streaming import Need

CPU = torch.device("cpu")
COV, FID = Need(0, "ig"), Need(1, "ig")
SPEC = """\
version: 1
model:
  factory: cachemodel:build
  weights: weights.pt
data:
  npz: data.npz
attributions:
  ig: {method: IntegratedGradients, params: {n_steps: 8}}
checks:
  - id: cov
    severity: fail
    description: the object is covered
    shared_interest:
      gtc: {mean: ">= 0.5"}
      methods: [ig]
  - id: faithful
    fidelity:
      steps: 10
      gap: ">= 0.2"
"""


@pytest.fixture
def spec_dir(tmp_path: Path) -> Path:
    (tmp_path / "cachemodel.py").write_text("import torch\n\ndef build():\n    return torch.nn.Linear(2, 2)\n")
    torch.save({"weight": torch.ones(2, 2), "bias": torch.zeros(2)}, tmp_path / "weights.pt")
    images = np.zeros((2, 3, 4, 4), np.float32)
    np.savez(tmp_path / "data.npz", images=images, masks=np.ones((2, 4, 4), bool), labels=np.zeros(2, np.int64))
    return tmp_path


def loaded(directory: Path, text: str = SPEC) -> LoadedSpec:
    path = directory / "x.saliency.yaml"
    path.write_text(text, encoding="utf-8")
    return load_spec(path)


def keys(directory: Path, text: str = SPEC) -> tuple[str, str, str]:
    spec = loaded(directory, text)
    return spec_key(spec, CPU), need_key(spec, COV), need_key(spec, FID)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ('gtc: {mean: ">= 0.5"}', 'gtc: {mean: ">= 0.9"}'),  # a threshold
        ('gap: ">= 0.2"', 'gap: "> 0.1"'),
        ("severity: fail", "severity: warn"),
        ("    description: the object is covered\n", ""),
        ("  - id: cov\n", "  - id: coverage\n    decide: interval\n    marks: [smoke]\n"),
        ("version: 1\n", "version: 1\ndecide: interval\nname: renamed\n"),
        ("methods: [ig]", "methods: [ig, ig2]"),  # which methods run: each need has its own key
        ("version: 1\n", "version: 1\ndetection: {max_missed: 0.2}\nsegmentation: {max_missed: 0.1}\n"),
    ],
)
def test_keys_stay_when_only_decisions_or_report_settings_change(spec_dir: Path, old: str, new: str) -> None:
    assert old in SPEC
    text = SPEC.replace(old, new)
    if "ig2" in new:
        text = text.replace("attributions:\n", "attributions:\n  ig2: {method: Saliency}\n")
    assert keys(spec_dir, text) == keys(spec_dir)


@pytest.mark.parametrize(
    ("old", "new", "changed"),
    [
        # (spec key, coverage need key, fidelity need key); an entry is found by the spec key
        ("n_steps: 8", "n_steps: 16", (False, True, True)),  # a method setting: both needs use ig
        ("steps: 10", "steps: 12", (False, False, True)),  # a statistic setting of one check
        ("  npz: data.npz\n", "  npz: data.npz\n  batch_size: 4\n", (True, False, False)),
        ("  weights: weights.pt\n", "  weights: weights.pt\n  output: 1\n", (True, False, False)),
        ("version: 1\n", "version: 1\nseed: 3\n", (True, False, False)),
        ("version: 1\n", "version: 1\ntarget: predicted\n", (True, False, False)),
        ("version: 1\n", "version: 1\nsaliency: {channels: sum}\n", (True, False, False)),
        ("version: 1\n", "version: 1\ntask: detection\n", (True, False, False)),
        ("version: 1\n", "version: 1\ndetection: {match_iou: 0.7}\n", (True, False, False)),
        ("version: 1\n", "version: 1\nsegmentation: {background: 0}\n", (True, False, False)),
    ],
)
def test_keys_change_with_what_changes_a_number(
    spec_dir: Path, old: str, new: str, changed: tuple[bool, bool, bool]
) -> None:
    assert old in SPEC
    before, after = keys(spec_dir), keys(spec_dir, SPEC.replace(old, new))
    assert tuple(a != b for a, b in zip(before, after, strict=True)) == changed


def test_the_spec_key_changes_with_the_weights_and_the_factory_source(spec_dir: Path) -> None:
    before = keys(spec_dir)[0]
    torch.save({"weight": torch.eye(2), "bias": torch.zeros(2)}, spec_dir / "weights.pt")
    after_weights = keys(spec_dir)[0]
    (spec_dir / "cachemodel.py").write_text(
        "import torch\n\ndef build():\n    return torch.nn.Linear(2, 2, bias=True)\n"
    )
    after_source = keys(spec_dir)[0]
    assert len({before, after_weights, after_source}) == 3


def test_the_spec_key_changes_with_the_versions_the_device_and_the_package_source(
    spec_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = loaded(spec_dir)
    before = spec_key(spec, CPU)
    assert spec_key(spec, torch.device("meta")) != before
    monkeypatch.setattr(torch, "__version__", "0.0.1")
    cache.environment_digest.cache_clear()
    try:
        assert spec_key(spec, CPU) != before
    finally:
        monkeypatch.undo()
        cache.environment_digest.cache_clear()
    assert spec_key(spec, CPU) == before
    monkeypatch.setattr(cache, "package_digest", lambda: "another source")
    assert spec_key(spec, CPU) != before


def test_a_reference_weights_file_of_a_drift_check_is_part_of_its_key(spec_dir: Path) -> None:
    drift = SPEC + "  - id: drift\n    drift:\n      against: {weights: other.pt}\n      max_shift: 0.1\n"
    torch.save({"weight": torch.ones(2, 2), "bias": torch.zeros(2)}, spec_dir / "other.pt")
    need = Need(2, "ig")
    before = need_key(loaded(spec_dir, drift), need)
    assert need_key(loaded(spec_dir, drift.replace("max_shift: 0.1", "max_shift: 0.3")), need) == before
    torch.save({"weight": torch.zeros(2, 2), "bias": torch.zeros(2)}, spec_dir / "other.pt")
    assert need_key(loaded(spec_dir, drift), need) != before


def batch(count: int = 3) -> SampleBatch:
    generator = torch.Generator().manual_seed(0)
    return SampleBatch(
        torch.arange(count),
        torch.rand(count, 3, 4, 4, generator=generator),
        torch.zeros(count, 4, 4, dtype=torch.bool),
        torch.zeros(count, dtype=torch.long),
        {"decoy": torch.ones(count, 4, 4, dtype=torch.bool)},
        {"site": np.array(["a", "b", "c"][:count])},
        boxes=torch.tensor([[0.0, 0.0, 2.0, 2.0]]).repeat(count, 1),
        images_of=torch.arange(count) // 2,
    )


@settings(max_examples=25, deadline=None)
@given(
    part=st.sampled_from(["image", "mask", "label", "index", "region", "field", "skipped", "box", "image of"]),
    sample=st.integers(0, 2),
)
def test_the_batch_digest_changes_when_any_sample_changes(part: str, sample: int) -> None:
    original, changed = batch(), batch()
    if part == "image":
        changed.images[sample, 1, 2, 3] += 1e-6
    elif part == "mask":
        changed.masks[sample, 0, 0] = True
    elif part == "label":
        changed.labels[sample] = 1
    elif part == "index":
        changed.indices[sample] += 10
    elif part == "region":
        changed.regions["decoy"][sample, 1, 1] = False
    elif part == "box":
        assert changed.boxes is not None
        changed.boxes[sample, 2] += 0.5
    elif part == "image of":
        assert changed.images_of is not None
        changed.images_of[sample] += 1
    elif part == "field":
        changed.fields["site"][sample] = "z"
    else:
        changed.skipped.append(f"s{sample}.png: unreadable")
    assert batch_digest(changed) != batch_digest(original)
    assert batch_digest(batch()) == batch_digest(original)


def entry(key: str, size: int = 4) -> dict[str, object]:
    return {
        "format": cache.FORMAT,
        "key": key,
        "base": {"prediction": torch.zeros(size, dtype=torch.long), "target": torch.zeros(size, dtype=torch.long)},
        "found": torch.ones(size, dtype=torch.bool),
        "missed": [],
        "classes": 3,
        "needs": {"n": {"iou": torch.rand(size)}},
    }


def test_an_entry_round_trips_and_a_corrupt_or_foreign_one_reads_as_absent(tmp_path: Path) -> None:
    store = ResultCache(tmp_path)
    store.store("ab" * 32, entry("ab" * 32))
    assert store.load("ab" * 32) is not None
    assert store.load("cd" * 32) is None and store.counts.unreadable == 0  # absent: not unreadable
    store.path("ab" * 32).write_bytes(b"not a torch file")
    assert store.load("ab" * 32) is None
    store.store("ef" * 32, entry("another key"))  # a file under a key it does not hold
    assert store.load("ef" * 32) is None
    assert store.counts.unreadable == 2 and store.counts.first_unreadable == str(store.path("ab" * 32))
    assert not list(tmp_path.glob("*/.*.tmp"))


def test_the_least_recently_used_entries_go_first_past_the_bound(tmp_path: Path) -> None:
    names = [f"{index:02d}" * 32 for index in range(4)]
    store = ResultCache(tmp_path, max_bytes=1 << 30)
    for age, name in enumerate(names):
        store.store(name, entry(name, size=2000))
        os.utime(store.path(name), (1000 + age, 1000 + age))
    size = store.path(names[0]).stat().st_size
    assert store.load(names[0]) is not None  # used now: the most recent
    bounded = ResultCache(tmp_path, max_bytes=int(size * 3.5))
    bounded.store("99" * 32, entry("99" * 32, size=2000))
    left = sorted(path.stem for path in tmp_path.glob("*/*.pt"))
    assert left == sorted([names[0], names[3], "99" * 32])


def test_modes_read_and_write(tmp_path: Path) -> None:
    assert ResultCache(tmp_path, "read").reads and not ResultCache(tmp_path, "read").writes
    assert ResultCache(tmp_path, "write").writes and not ResultCache(tmp_path, "write").reads
    both = ResultCache(tmp_path, "readwrite")
    assert both.reads and both.writes


def test_statistic_settings_leave_out_every_threshold_of_every_check_kind() -> None:
    from pytest_saliency.spec import schema

    kinds = [
        getattr(schema.CheckSpec.model_fields[name].annotation, "__args__", (None,))[0]
        for name in schema.CheckSpec.CHOICES
    ]
    for kind in kinds:
        assert kind is not None
        kept = {
            name
            for name, info in kind.model_fields.items()
            if "Threshold" not in repr(info.annotation) and name not in cache.DECISION_ONLY
        }
        assert not any(name.startswith(("min_", "max_")) for name in kept), (kind.__name__, kept)


def test_remembered_is_computed_once_per_input_and_setting(tmp_path: Path) -> None:
    calls: list[float] = []

    def compute(values: torch.Tensor, q: float) -> list[torch.Tensor]:
        calls.append(q)
        return [values.quantile(q), values.sum()]

    values = torch.arange(10.0)
    assert remembered("q", [values], {"q": 0.5}, lambda: compute(values, 0.5))[0] == 4.5  # no cache
    store = ResultCache(tmp_path)
    with deciding_with(store.remember):
        first = remembered("q", [values], {"q": 0.5}, lambda: compute(values, 0.5))
        again = remembered("q", [values], {"q": 0.5}, lambda: compute(values, 0.5))
        assert len(calls) == 2 and [float(value) for value in again] == [float(value) for value in first]
        remembered("q", [values], {"q": 0.9}, lambda: compute(values, 0.9))  # another setting
        changed = values.clone()
        changed[3] += 1e-6
        remembered("q", [changed], {"q": 0.5}, lambda: compute(changed, 0.5))  # another input
        remembered("other", [values], {"q": 0.5}, lambda: compute(values, 0.5))  # another function
        assert len(calls) == 5 and len(list(tmp_path.glob("*/*.pt"))) == 4
        for path in tmp_path.glob("*/*.pt"):
            path.write_bytes(b"corrupt")
        assert float(remembered("q", [values], {"q": 0.5}, lambda: compute(values, 0.5))[0]) == 4.5
        assert len(calls) == 6 and store.counts.unreadable == 1
    remembered("q", [values], {"q": 0.5}, lambda: compute(values, 0.5))  # outside: computed
    assert len(calls) == 7
