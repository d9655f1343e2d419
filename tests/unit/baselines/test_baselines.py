"""The drift snapshot store: round trips, atomic writes, compatibility checks, hashes."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pytest_saliency import _io
from pytest_saliency.baselines.store import (
    SnapshotStore,
    check_compatible,
    content_hash,
    data_hash,
    environment_warnings,
    make_metadata,
    sample_digests,
)
from pytest_saliency.errors import BaselineError, MissingSnapshotError, SaliencyError, SnapshotCorruptError

SPEC = "specs/shapes.saliency.yaml"


def sample(version: float):
    tensors = {
        "centres": torch.full((4, 7), version),
        "scores_a": torch.arange(12, dtype=torch.float64).reshape(3, 4) * version,
        "ids": torch.tensor([1, 2, 3]),
    }
    metadata = make_metadata(
        spec_hash="abc123",
        settings={"segments": {"patch": 8}, "clusters": 4, "keep": 8, "embedding": "colour_texture"},
        weights_hash=f"w{version}",
        data_hash="d0",
        device="cpu",
        seed=0,
    )
    return tensors, metadata


def files(directory):
    return sorted(path.name for path in directory.iterdir())


def test_round_trip(tmp_path, monkeypatch):
    store = SnapshotStore(tmp_path / "baselines")
    tensors, metadata = sample(1.0)
    path = store.save("production", tensors, metadata)
    assert path == tmp_path / "baselines" / "production.pt" and path.is_file()
    assert files(tmp_path / "baselines") == [".gitignore", "production.json", "production.pt"]

    calls = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(k) or real_load(*a, **k))
    loaded, meta = store.load("production")
    assert calls and all(call.get("weights_only") is True for call in calls)
    assert loaded.keys() == tensors.keys()
    for key in tensors:
        assert loaded[key].dtype == tensors[key].dtype and torch.equal(loaded[key], tensors[key])
    for key in (
        "spec_hash",
        "settings",
        "weights_hash",
        "data_hash",
        "library_version",
        "torch_version",
        "device",
        "seed",
        "created",
        "tensors_sha256",
        "format",
    ):
        assert key in meta
    assert meta["settings"]["segments"] == {"patch": 8} and meta["torch_version"] == torch.__version__
    assert json.loads((tmp_path / "baselines" / "production.json").read_text()) == meta
    assert store.exists("production") and store.names() == ["production"]


def test_save_replaces_the_previous_version(tmp_path):
    store = SnapshotStore(tmp_path)
    store.save("b", *sample(1.0))
    store.save("b", *sample(2.0))
    loaded, meta = store.load("b")
    assert torch.equal(loaded["centres"], torch.full((4, 7), 2.0)) and meta["weights_hash"] == "w2.0"
    assert files(tmp_path) == [".gitignore", "b.json", "b.pt"]


def half_then_fail(fail_on_call: int):
    """A ``write_all`` that writes half the bytes and raises on the given call."""
    real = _io.write_all
    count = {"n": 0}

    def write(handle, data):
        count["n"] += 1
        if count["n"] == fail_on_call:
            handle.write(data[: len(data) // 2])
            raise OSError("disk full")
        real(handle, data)

    return write


@pytest.mark.parametrize("fail_on_call", [1, 2], ids=["tensor-file", "metadata-file"])
def test_interrupted_write_leaves_the_previous_baseline_intact(tmp_path, monkeypatch, fail_on_call):
    store = SnapshotStore(tmp_path)
    store.save("production", *sample(1.0))
    before = {name: (tmp_path / name).read_bytes() for name in files(tmp_path)}
    monkeypatch.setattr(_io, "write_all", half_then_fail(fail_on_call))
    with pytest.raises(OSError, match="disk full"):
        store.save("production", *sample(2.0))
    assert {name: (tmp_path / name).read_bytes() for name in files(tmp_path)} == before  # no temp files left
    loaded, meta = store.load("production")
    assert torch.equal(loaded["centres"], torch.full((4, 7), 1.0)) and meta["weights_hash"] == "w1.0"


def test_failed_second_replace_rolls_back_the_first(tmp_path, monkeypatch):
    store = SnapshotStore(tmp_path)
    store.save("production", *sample(1.0))
    before = {name: (tmp_path / name).read_bytes() for name in files(tmp_path)}
    real_replace = os.replace

    def replace(src, dst):
        if str(dst).endswith(".json"):
            raise OSError("replace failed")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="replace failed"):
        store.save("production", *sample(2.0))
    with pytest.raises(OSError):
        store.save("fresh", *sample(2.0))
    monkeypatch.undo()
    assert {name: (tmp_path / name).read_bytes() for name in files(tmp_path)} == before
    assert torch.equal(store.load("production")[0]["centres"], torch.full((4, 7), 1.0))


def test_a_tensor_file_that_does_not_match_its_metadata_is_refused(tmp_path):
    store = SnapshotStore(tmp_path)
    store.save("a", *sample(1.0))
    store.save("b", *sample(2.0))
    (tmp_path / "a.pt").write_bytes((tmp_path / "b.pt").read_bytes())  # as after a crash mid-update
    with pytest.raises(SnapshotCorruptError, match=r"pytest --saliency-update-baselines specs/shapes\.saliency\.yaml"):
        store.load("a", spec_path=SPEC)


def test_missing_baseline_names_the_command_that_creates_it(tmp_path):
    store = SnapshotStore(tmp_path / "nowhere")
    with pytest.raises(MissingSnapshotError) as caught:
        store.load("production", spec_path=SPEC)
    message = str(caught.value)
    assert "production" in message and "pytest --saliency-update-baselines specs/shapes.saliency.yaml" in message
    assert isinstance(caught.value, FileNotFoundError)
    assert isinstance(caught.value, BaselineError) and isinstance(caught.value, SaliencyError)
    assert store.names() == []

    store = SnapshotStore(tmp_path)
    store.save("half", *sample(1.0))
    (tmp_path / "half.json").unlink()
    with pytest.raises(
        SnapshotCorruptError,
        match=r"half\.json is missing \(only half\.pt is there\); repair it with: .*'my specs/x.saliency.yaml'",
    ):
        store.load("half", spec_path="my specs/x.saliency.yaml")


def test_bad_names_and_metadata_are_refused_before_writing(tmp_path):
    store = SnapshotStore(tmp_path)
    for name in ("", "../escape", "a/b", ".hidden", "x..y"):
        with pytest.raises(ValueError):
            store.save(name, *sample(1.0))
    store.save("ok", *sample(1.0))
    before = {name: (tmp_path / name).read_bytes() for name in files(tmp_path)}
    tensors, metadata = sample(2.0)
    with pytest.raises(ValueError):
        store.save("ok", tensors, {**metadata, "score": float("nan")})
    with pytest.raises(TypeError):
        store.save("ok", {"centres": [1, 2]}, metadata)
    assert {name: (tmp_path / name).read_bytes() for name in files(tmp_path)} == before


def test_check_compatible_lists_every_mismatch(tmp_path):
    _, metadata = sample(1.0)
    same = {"data_hash": "d0", "segments": {"patch": 8}, "clusters": 4, "keep": 8}
    assert check_compatible(metadata, same) == []
    assert check_compatible(metadata, {"segments": {"patch": 8}, "weights_hash": "w1.0"}) == []
    problems = check_compatible(
        metadata, {"data_hash": "d1", "segments": {"patch": 4}, "clusters": 4, "layer": "features.2"}
    )
    assert problems == [
        "data_hash: baseline has 'd0', this run has 'd1'",
        "segments: baseline has {'patch': 8}, this run has {'patch': 4}",
        "layer: not recorded in the baseline (this run has 'features.2')",
    ]
    tupled = {**metadata, "settings": {**metadata["settings"], "size": [32, 32]}}
    assert check_compatible(tupled, {"size": (32, 32)}) == []


def test_environment_warnings():
    _, metadata = sample(1.0)
    assert environment_warnings(metadata, device="cpu") == []
    old = {**metadata, "torch_version": "1.0.0", "device": "cuda:0"}
    notes = environment_warnings(old, device="cpu")
    assert any("torch_version" in note for note in notes) and any("device" in note for note in notes)


def test_content_hash(tmp_path):
    t = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    h = content_hash(t)
    assert len(h) == 16 and all(c in "0123456789abcdef" for c in h)
    assert content_hash(t.T.contiguous().T) == h  # memory layout does not matter
    assert content_hash(t.double()) != h and content_hash(t.reshape(4, 3)) != h and content_hash(t + 1) != h
    assert content_hash(torch.tensor([True, False])) != content_hash(torch.tensor([1, 0], dtype=torch.uint8))
    assert content_hash(torch.zeros(0)) != content_hash(torch.zeros(0, 2))
    assert len(content_hash(t, length=64)) == 64

    state = {"w": t, "b": torch.zeros(3)}
    assert content_hash(state) == content_hash({"b": torch.zeros(3), "w": t.clone()})
    assert content_hash(state) != content_hash({"w": t, "b": torch.ones(3)})

    buffer = io.BytesIO()
    torch.save(state, buffer)
    path = tmp_path / "weights.pt"
    path.write_bytes(buffer.getvalue())
    assert content_hash(path) == content_hash(buffer.getvalue()) == content_hash(str(path))
    with pytest.raises(TypeError):
        content_hash(3.5)  # type: ignore[arg-type]  (a float on purpose: the refusal is what is tested)


def test_drift_baseline_round_trip(tmp_path):
    from pytest_saliency.metrics.drift import attribution_drift, drift_from_scores, patch_segments

    g = torch.Generator().manual_seed(0)
    images = torch.rand(6, 3, 16, 16, generator=g)
    attr_a, attr_b = torch.rand(6, 16, 16, generator=g), torch.rand(6, 16, 16, generator=g)
    first = attribution_drift(attr_a, attr_b, images, patch=4, keep=3, clusters=3)
    store = SnapshotStore(tmp_path)
    store.save("production", first.baseline_tensors(), make_metadata(settings=first.settings, seed=0))
    tensors, meta = store.load("production")
    assert check_compatible(meta, first.settings) == []
    again = drift_from_scores(
        tensors["scores_a"], first.scores_b, images, patch_segments(16, 16, 4), keep=3, centres=tensors["centres"]
    )
    assert torch.equal(again.shift.shift, first.shift.shift)


def test_the_data_hash_is_of_per_sample_digests_in_sample_order():
    images, labels = torch.rand(5, 3, 4, 4), torch.tensor([0, 1, 2, 0, 1])
    digests = sample_digests(images, labels)
    assert digests.shape == (5, 32) and digests.dtype == torch.uint8
    assert torch.equal(
        torch.cat([sample_digests(images[:2], labels[:2]), sample_digests(images[2:], labels[2:])]), digests
    )
    first = hashlib.sha256(images[0].numpy().tobytes() + (0).to_bytes(8, "little")).digest()
    assert bytes(digests[0].tolist()) == first
    assert data_hash(digests) == content_hash(digests.numpy().tobytes())
    assert data_hash(digests.flip(0)) != data_hash(digests)
    assert not torch.equal(sample_digests(images, labels.flip(0))[0], digests[0])  # the label counts


def test_the_package_and_its_settings_import_without_torch():
    """The plugin loads ``pytest_saliency.baselines`` (settings, summary) in every pytest run."""
    probe = "import sys, pytest_saliency.baselines; print('torch' in sys.modules)"
    root = Path(__file__).resolve().parents[3]
    completed = subprocess.run([sys.executable, "-c", probe], cwd=root, capture_output=True, text=True, check=True)
    assert completed.stdout.strip() == "False"
