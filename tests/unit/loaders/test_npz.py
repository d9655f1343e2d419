"""``data.npz`` read by shards: stored members at their offsets, compressed ones sequentially,
CRC-32 checked, the same samples whatever the shards."""

from __future__ import annotations

import re
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_saliency.errors import SpecRuntimeError
from pytest_saliency.loaders.data import open_source
from pytest_saliency.loaders.source import SampleBatch
from pytest_saliency.spec.schema import DataSpec

Save = Callable[..., None]
SAVES = {"stored": np.savez, "compressed": np.savez_compressed}


def arrays(count: int = 10, size: int = 6) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "images": rng.random((count, 3, size, size)).astype(np.float32),
        "masks": rng.random((count, size, size)) > 0.5,
        "labels": np.arange(count) % 3,
        "decoy": rng.random((count, size, size)) > 0.8,
        "site": np.array([f"site{index % 2}" for index in range(count)]),
    }


def assert_same(batch: SampleBatch, expected: dict[str, np.ndarray], indices: list[int]) -> None:
    assert batch.indices.tolist() == indices
    assert np.array_equal(batch.images.numpy(), expected["images"][indices])
    assert np.array_equal(batch.masks.numpy(), expected["masks"][indices])
    assert batch.labels.tolist() == expected["labels"][indices].tolist()
    assert np.array_equal(batch.regions["decoy"].numpy(), expected["decoy"][indices])
    assert batch.fields["site"].tolist() == expected["site"][indices].tolist()


@pytest.mark.parametrize("save", SAVES.values(), ids=SAVES.keys())
def test_shards_equal_one_read(tmp_path: Path, save: Save) -> None:
    expected = arrays()
    save(tmp_path / "data.npz", **expected)
    source = open_source(DataSpec(npz="data.npz"), tmp_path, [])
    assert len(source) == 10
    assert_same(source.read(range(10)), expected, list(range(10)))
    shards = list(source.stream([range(0, 4), range(4, 8), range(8, 10)]))
    for shard, indices in zip(shards, ([0, 1, 2, 3], [4, 5, 6, 7], [8, 9]), strict=True):
        assert_same(shard, expected, indices)


@pytest.fixture(scope="module")
def both_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    """A folder with ``stored.npz`` and ``compressed.npz`` of the same 23 samples."""
    folder = tmp_path_factory.mktemp("npz")
    expected = arrays(count=23, size=4)
    for name, save in SAVES.items():
        save(folder / f"{name}.npz", **expected)
    return folder, expected


@settings(max_examples=25, deadline=None)
@given(cuts=st.sets(st.integers(1, 22), max_size=8), name=st.sampled_from(sorted(SAVES)))
def test_any_shards_give_the_samples_of_one_read(
    both_files: tuple[Path, dict[str, np.ndarray]], cuts: set[int], name: str
) -> None:
    folder, expected = both_files
    bounds = [0, *sorted(cuts), 23]
    source = open_source(DataSpec(npz=f"{name}.npz"), folder, [])
    shards = [range(start, stop) for start, stop in zip(bounds, bounds[1:], strict=False)]
    read = list(source.stream(shards))
    assert len(read) == len(shards)
    for batch, shard in zip(read, shards, strict=True):
        assert_same(batch, expected, list(shard))


@pytest.mark.parametrize("save", SAVES.values(), ids=SAVES.keys())
def test_scattered_and_backward_reads(tmp_path: Path, save: Save) -> None:
    """A report re-reads a few samples in any order: a compressed member then starts again."""
    expected = arrays()
    save(tmp_path / "data.npz", **expected)
    source = open_source(DataSpec(npz="data.npz"), tmp_path, [])
    assert_same(source.read([1, 2, 7, 9]), expected, [1, 2, 7, 9])
    assert_same(source.read([0]), expected, [0])
    assert_same(source.read([]), expected, [])


@pytest.mark.parametrize("save", SAVES.values(), ids=SAVES.keys())
def test_a_pass_stopped_early_closes_cleanly(tmp_path: Path, save: Save) -> None:
    """The next shard is being read in a thread when the consumer stops: closing waits for it."""
    expected = arrays()
    save(tmp_path / "data.npz", **expected)
    source = open_source(DataSpec(npz="data.npz"), tmp_path, [])
    stream = source.stream([range(0, 4), range(4, 8), range(8, 10)])
    assert_same(next(stream), expected, [0, 1, 2, 3])
    stream.close()
    assert list(source.stream([])) == []
    assert_same(source.read(range(4, 8)), expected, [4, 5, 6, 7])


def test_limit_is_the_length_from_the_headers(tmp_path: Path) -> None:
    np.savez(tmp_path / "data.npz", **arrays(count=10))
    source = open_source(DataSpec(npz="data.npz", limit=4), tmp_path, [])
    assert len(source) == 4
    assert source.read(range(4)).fields["site"].tolist() == ["site0", "site1", "site0", "site1"]
    with pytest.raises(IndexError):
        source.read([4])


def test_stored_images_are_never_loaded_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the ``(N,)`` arrays go through numpy's readers; the rows of the images are read by
    offset, so reading shard 0 of a large file allocates about one shard, not the array."""
    expected = arrays(count=512, size=32)  # images: 6 MB
    np.savez(tmp_path / "data.npz", **expected)
    whole_reads: list[tuple[int, ...]] = []
    read_array = np.lib.format.read_array

    def spy(stream: object, **kwargs: object) -> np.ndarray:
        array: np.ndarray = read_array(stream, **kwargs)
        whole_reads.append(array.shape)
        return array

    monkeypatch.setattr(np.lib.format, "read_array", spy)
    monkeypatch.setattr(np, "load", lambda *args, **kwargs: pytest.fail("np.load reads members whole"))
    tracemalloc.start()
    try:
        source = open_source(DataSpec(npz="data.npz"), tmp_path, [])
        batch = source.read(range(16))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sorted(whole_reads) == [(512,), (512,)]  # labels and site
    assert_same(batch, expected, list(range(16)))
    assert peak < expected["images"].nbytes / 8, peak  # one shard of 16 images is 1/32 of them


def test_a_damaged_stored_member_is_a_bad_crc(tmp_path: Path) -> None:
    """Damaged bytes are found when a pass reads the member to its end, and when a shard's
    values fail a check before that: both say Bad CRC-32, not odd pixels."""
    np.savez(tmp_path / "data.npz", **arrays())
    data = bytearray((tmp_path / "data.npz").read_bytes())
    start = data.index(b"images.npy") + 200  # past the local and .npy headers, in sample 0
    data[start : start + 8] = b"\x00\x00\x80\x3f" * 2  # 1.0: still a valid pixel value
    (tmp_path / "data.npz").write_bytes(bytes(data))
    source = open_source(DataSpec(npz="data.npz"), tmp_path, [])
    source.read(range(2))  # valid values, the member not read to its end: nothing to tell yet
    message = "cannot read data.npz: Bad CRC-32 for file 'images.npy' (write the file again)"
    with pytest.raises(SpecRuntimeError, match=re.escape(message)) as raised:
        list(source.stream([range(0, 5), range(5, 10)]))
    assert raised.value.location == ("data", "npz")
    data[start : start + 8] = b"\xff" * 8  # NaN
    (tmp_path / "data.npz").write_bytes(bytes(data))
    with pytest.raises(SpecRuntimeError, match=re.escape(message)):
        open_source(DataSpec(npz="data.npz"), tmp_path, []).read(range(2))


def test_a_damaged_compressed_member_cannot_be_read(tmp_path: Path) -> None:
    np.savez_compressed(tmp_path / "data.npz", **arrays())
    with zipfile.ZipFile(tmp_path / "data.npz") as archive:
        info = archive.getinfo("images.npy")
    data = bytearray((tmp_path / "data.npz").read_bytes())
    middle = info.header_offset + 30 + len("images.npy") + info.compress_size // 2
    data[middle : middle + 16] = bytes(16)
    (tmp_path / "data.npz").write_bytes(bytes(data))
    source = open_source(DataSpec(npz="data.npz"), tmp_path, [])
    with pytest.raises(SpecRuntimeError, match=r"^cannot read data.npz: .* \(write the file again\)$"):
        source.read(range(10))


def test_values_are_checked_per_shard_with_the_sample_index(tmp_path: Path) -> None:
    expected = arrays()
    expected["images"][5, 0, 0, 0] = np.nan
    np.savez(tmp_path / "data.npz", **expected)
    source = open_source(DataSpec(npz="data.npz"), tmp_path, [])
    source.read(range(4))
    with pytest.raises(SpecRuntimeError, match=re.escape("images hold NaN or inf in 1 of 4 samples (first: sample 5)")):
        source.read(range(4, 8))


def test_shapes_and_labels_are_checked_when_it_opens(tmp_path: Path) -> None:
    expected = arrays()
    expected["labels"] = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0.5])
    np.savez(tmp_path / "data.npz", **expected)
    with pytest.raises(SpecRuntimeError, match=re.escape("got 0.5 (sample 9)")):
        open_source(DataSpec(npz="data.npz"), tmp_path, [])
    expected = arrays()
    expected["decoy"] = expected["decoy"][:, :3]
    np.savez(tmp_path / "data.npz", **expected)
    with pytest.raises(SpecRuntimeError, match=re.escape("region mask 'decoy' is (10, 3, 6), expected (10, 6, 6)")):
        open_source(DataSpec(npz="data.npz"), tmp_path, [])


def test_a_missing_array_is_named(tmp_path: Path) -> None:
    expected = arrays()
    del expected["masks"]
    np.savez(tmp_path / "data.npz", **expected)
    with pytest.raises(
        SpecRuntimeError, match=r"data.npz has no array 'masks' \(it has: images, labels, decoy, site\)"
    ):
        open_source(DataSpec(npz="data.npz"), tmp_path, [])


def test_fortran_ordered_images_are_refused_with_the_fix(tmp_path: Path) -> None:
    expected = arrays()
    expected["images"] = np.asfortranarray(expected["images"])
    np.savez(tmp_path / "data.npz", **expected)
    with pytest.raises(SpecRuntimeError, match=r"images.npy is stored in Fortran order.*np.ascontiguousarray"):
        open_source(DataSpec(npz="data.npz"), tmp_path, [])


def test_uint8_shards_are_scaled(tmp_path: Path) -> None:
    expected = arrays()
    pixels = (expected["images"] * 255).astype(np.uint8)
    np.savez(tmp_path / "data.npz", **{**expected, "images": pixels})
    batch = open_source(DataSpec(npz="data.npz"), tmp_path, []).read(range(3, 6))
    torch.testing.assert_close(batch.images, torch.from_numpy(pixels[3:6].astype(np.float32) / 255))
