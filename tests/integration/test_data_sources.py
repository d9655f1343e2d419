"""Every data source gives the same measurements whatever the shards: an npz stored or
compressed, a Dataset of tuples or torchvision ``(image, target)`` samples read by DataLoader
workers (docs/spec.md § data, "Reading by shards")."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

WriteSpec = Callable[..., Path]

SAMPLES = '''\
"""The project's data.npz as a Dataset, in the sample form ``form``."""
from pathlib import Path

import numpy as np
import torch
from torchvision import tv_tensors


class Samples(torch.utils.data.Dataset):
    def __init__(self, form):
        with np.load(Path(__file__).parent / "data.npz") as arrays:
            self.arrays = {key: arrays[key] for key in arrays.files}
        self.form = form

    def __len__(self):
        return len(self.arrays["labels"])

    def __getitem__(self, index):
        image = torch.from_numpy(self.arrays["images"][index])
        mask = torch.from_numpy(self.arrays["masks"][index])
        label = int(self.arrays["labels"][index])
        decoy = torch.from_numpy(self.arrays["decoy"][index])
        if self.form == "tuple":
            return image, mask, label, {"decoy": decoy}
        rows, columns = mask.nonzero(as_tuple=True)
        if self.form == "boxes":  # the 4x4 object is its box
            box = [[columns.min(), rows.min(), columns.max() + 1, rows.max() + 1]]
            target = {"boxes": tv_tensors.BoundingBoxes(box, format="XYXY", canvas_size=mask.shape)}
        else:  # the object as two instance masks: its top half and its bottom half
            halves = torch.zeros(2, *mask.shape, dtype=torch.bool)
            halves[0, rows.min() : rows.min() + 2] = mask[rows.min() : rows.min() + 2]
            halves[1] = mask & ~halves[0]
            target = {"masks": tv_tensors.Mask(halves)}
        return tv_tensors.Image(image), {"labels": torch.tensor([label]), "decoy": decoy, **target}


def samples(form="tuple"):
    return Samples(form)
'''

SOURCES = {
    "npz-stored-shards-of-2": "npz: ../data.npz\nshard_size: 2",
    "npz-compressed-shards-of-4": "npz: ../compressed.npz\nshard_size: 4",
    "dataset-tuples-2-workers": "factory: samples:samples\nshard_size: 4\nnum_workers: 2",
    "dataset-instance-masks": "factory: samples:samples\nkwargs: {form: masks}\nshard_size: 5",
    "dataset-boxes-2-workers": "factory: samples:samples\nkwargs: {form: boxes}\nshard_size: 1\nnum_workers: 2",
}


@pytest.mark.parametrize("data", SOURCES.values(), ids=SOURCES.keys())
def test_every_source_and_shard_size_measures_the_same(
    project: pytest.Pytester, write_spec: WriteSpec, helpers: SimpleNamespace, data: str
) -> None:
    """``looks_at: both``: the saliency region is object + decoy, IoU = 16/25 on every sample
    (tests/integration/conftest.py), so one wrong pixel or sample shows in the mean."""
    project.makepyfile(samples=SAMPLES)
    np.savez_compressed(project.path / "compressed.npz", **helpers.make_arrays())
    checks = '- id: cov\n  shared_interest:\n    iou: {mean: ">= 0.6"}\n'
    write_spec(looks_at="both", data=data + "\nclasses: [circle, square, triangle]", checks=checks)
    result = project.runpytest_inprocess()
    result.assert_outcomes(passed=1)
    rows = {row["measured"]: row["value"] for row in helpers.summary_rows(result.stdout.str())}
    assert rows["iou.mean"] == "0.6400"
