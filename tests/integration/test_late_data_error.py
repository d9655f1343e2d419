"""A data error found late in a pass (the checksum of a stored member, known only after its last
shard) stops the pass once: every item of the spec fails with that line, and the data is read
once, not once per item."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest

WriteSpec = Callable[..., Path]

COUNT_PASSES = """\
from pathlib import Path

import pytest

from pytest_saliency.loaders.npz import NpzSource

PATCHES = pytest.MonkeyPatch()


def pytest_configure(config):
    \"\"\"Count the passes over the data in passes.txt (one line a pass).\"\"\"
    stream = NpzSource.stream

    def counted(self, shards):
        with open("passes.txt", "a") as counter:
            counter.write("pass\\n")
        return stream(self, shards)

    PATCHES.setattr(NpzSource, "stream", counted)


def pytest_unconfigure(config):
    PATCHES.undo()
"""


def test_a_checksum_that_fails_after_the_last_shard_stops_the_pass_once(
    write_spec: WriteSpec, project: pytest.Pytester, helpers: SimpleNamespace
) -> None:
    arrays = helpers.make_arrays()
    data = bytearray(helpers.npz_bytes(arrays))
    last = data.index(arrays["images"][-1].tobytes())  # the last image's pixels, stored as they are
    pixel = last + 4 * 16 * 16  # channel 1 (the decoy), pixel (0, 0): 0.0, made a tiny other number
    data[pixel : pixel + 4] = struct.pack("<f", 1e-30)
    (project.path / "late.npz").write_bytes(bytes(data))
    project.makeconftest(COUNT_PASSES)
    write_spec(
        data="npz: ../late.npz\nclasses: [circle, square, triangle]\nshard_size: 2",
        attributions="grad: {method: Saliency, params: {abs: true}}\nixg: {method: InputXGradient}",
        checks='- id: cov\n  shared_interest:\n    iou: {mean: ">= 0.9"}\n    per_class: true',
    )
    result = project.runpytest_inprocess()
    items = result.parseoutcomes()["failed"]
    assert items >= 6  # two methods, each per class and over all
    assert result.stdout.str().count("cannot read ../late.npz: Bad CRC-32 for file 'images.npy'") >= items
    assert (project.path / "passes.txt").read_text().splitlines() == ["pass"]
