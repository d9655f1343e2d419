"""``data.factory`` read by shards through a DataLoader: the sample forms (tuples, torchvision
``(image, target)``), workers, and errors raised in a worker coming back as one line."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from pytest_saliency.errors import SpecRuntimeError
from pytest_saliency.loaders.data import open_source
from pytest_saliency.loaders.dataset import DatasetSource, boxes_mask
from pytest_saliency.loaders.source import SampleBatch, SampleSource
from pytest_saliency.spec.schema import DataSpec

DATASETS = """\
import torch
from torchvision import tv_tensors

SIZE = 5
READ = []


class Samples(torch.utils.data.Dataset):
    '''Sample i: grey i / 10, rows 0..i of the mask (i + 1 rows), label i mod 3, a decoy pixel,
    a site field; in the sample form ``form``.'''

    def __init__(self, count=7, form="tuple", broken=None):
        self.count, self.form, self.broken = count, form, broken

    def __len__(self):
        return self.count

    def __getitem__(self, index):
        READ.append(index)
        if index == self.broken:
            raise ValueError(f"sample {index} is broken\\nsecond line")
        image = torch.full((3, SIZE, SIZE), index / 10)
        mask = torch.zeros(SIZE, SIZE, dtype=torch.bool)
        mask[: index + 1] = True
        decoy = torch.zeros(SIZE, SIZE, dtype=torch.bool)
        decoy[-1, -1] = True
        label = index % 3
        if self.form == "tuple":
            return image, mask, label
        if self.form == "tuple-dict":
            return image, mask, label, {"decoy": decoy, "site": f"site{index % 2}"}
        if self.form == "masks":  # two instances, united: the first covers rows 0..i, the second row 0
            instances = torch.zeros(2, SIZE, SIZE, dtype=torch.uint8)
            instances[0, : index + 1] = 1
            instances[1, 0] = 1
            return image, {
                "labels": torch.tensor([label, label]),
                "masks": tv_tensors.Mask(instances),
                "area": torch.tensor([5.0, 1.0]),
                "decoy": decoy,
                "site": f"site{index % 2}",
            }
        if self.form == "boxes":  # rows 0..i as a box (x0, y0, x1, y1), and as XYWH
            if index % 2:
                boxes = tv_tensors.BoundingBoxes([[0, 0, SIZE, index + 1]], format="XYXY", canvas_size=(SIZE, SIZE))
            else:
                boxes = tv_tensors.BoundingBoxes([[0, 0, SIZE, index + 1]], format="XYWH", canvas_size=(SIZE, SIZE))
            return tv_tensors.Image(image), {"label": torch.tensor(label), "boxes": boxes, "site": f"site{index % 2}"}
        return image, {"labels": torch.tensor([0, 1]), "masks": mask}


def samples(**kwargs):
    return Samples(**kwargs)
"""


@pytest.fixture
def module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The name of an importable module of Datasets (a fresh copy per test)."""
    name = f"saliency_datasets_{abs(hash(tmp_path)) % 10**8}"
    (tmp_path / f"{name}.py").write_text(DATASETS)
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def source(module: str, directory: Path, **kwargs: object) -> SampleSource:
    settings = {key: kwargs.pop(key) for key in ("num_workers", "pin_memory", "limit") if key in kwargs}
    return open_source(DataSpec(factory=f"{module}:samples", kwargs=kwargs, **settings), directory, [])  # type: ignore[arg-type]


def assert_equal(left: SampleBatch, right: SampleBatch) -> None:
    assert left.indices.tolist() == right.indices.tolist()
    assert torch.equal(left.images, right.images) and torch.equal(left.masks, right.masks)
    assert torch.equal(left.labels, right.labels)
    assert left.regions.keys() == right.regions.keys()
    assert all(torch.equal(left.regions[key], right.regions[key]) for key in left.regions)
    assert left.fields.keys() == right.fields.keys()
    assert all(left.fields[key].tolist() == right.fields[key].tolist() for key in left.fields)


def concatenated(batches: list[SampleBatch]) -> SampleBatch:
    return SampleBatch(
        torch.cat([batch.indices for batch in batches]),
        torch.cat([batch.images for batch in batches]),
        torch.cat([batch.masks for batch in batches]),
        torch.cat([batch.labels for batch in batches]),
        {key: torch.cat([batch.regions[key] for batch in batches]) for key in batches[0].regions},
        {key: np.concatenate([batch.fields[key] for batch in batches]) for key in batches[0].fields},
    )


FORMS = ("tuple", "tuple-dict", "masks", "boxes")


@pytest.mark.parametrize("form", FORMS)
def test_every_sample_form_gives_the_same_samples(module: str, tmp_path: Path, form: str) -> None:
    batch = source(module, tmp_path, form=form).read(range(7))
    assert batch.indices.tolist() == list(range(7))
    torch.testing.assert_close(batch.images[:, 0, 0, 0], torch.arange(7) / 10)
    assert batch.masks.dtype == torch.bool
    assert batch.masks.flatten(1).sum(1).tolist() == [5 * min(index + 1, 5) for index in range(7)]
    assert batch.labels.tolist() == [index % 3 for index in range(7)]
    if form != "tuple":
        assert batch.fields["site"].tolist() == [f"site{index % 2}" for index in range(7)]
    if form in ("tuple-dict", "masks"):
        assert set(batch.regions) == {"decoy"}  # the per-instance area is not used
        assert batch.regions["decoy"].flatten(1).sum(1).tolist() == [1] * 7


@pytest.mark.parametrize("form", FORMS)
def test_shards_equal_one_read(module: str, tmp_path: Path, form: str) -> None:
    data = source(module, tmp_path, form=form)
    shards = list(data.stream([range(0, 3), range(3, 7)]))
    assert [len(shard) for shard in shards] == [3, 4]
    assert_equal(concatenated(shards), data.read(range(7)))


def test_two_workers_give_the_samples_of_none(module: str, tmp_path: Path) -> None:
    shards = [range(0, 2), range(2, 4), range(4, 6), range(6, 7)]
    in_process = list(source(module, tmp_path, form="tuple-dict").stream(shards))
    workers = list(source(module, tmp_path, form="tuple-dict", num_workers=2).stream(shards))
    assert [shard.indices.tolist() for shard in workers] == [list(shard) for shard in shards]
    for left, right in zip(in_process, workers, strict=True):
        assert_equal(left, right)


def test_pin_memory_pins_the_shards_where_there_is_cuda(module: str, tmp_path: Path) -> None:
    shards = list(source(module, tmp_path, num_workers=2, pin_memory=True).stream([range(0, 3), range(3, 7)]))
    pinned = torch.cuda.is_available()  # without CUDA the setting is ignored
    assert [(shard.images.is_pinned(), shard.masks.is_pinned()) for shard in shards] == [(pinned, pinned)] * 2
    assert shards[1].to(torch.device("cuda" if pinned else "cpu")).labels.tolist() == [0, 1, 2, 0]


def test_length_is_len_of_the_dataset_with_the_limit(module: str, tmp_path: Path) -> None:
    import importlib

    data = source(module, tmp_path, count=1000, limit=10)
    assert len(data) == 10
    assert importlib.import_module(module).READ == []  # no sample read to know it
    assert len(list(data.stream([range(0, 10)]))[0]) == 10


@pytest.mark.parametrize("workers", [0, 2])
def test_a_sample_that_raises_is_one_line_in_any_process(module: str, tmp_path: Path, workers: int) -> None:
    data = source(module, tmp_path, broken=4, num_workers=workers)
    with pytest.raises(SpecRuntimeError) as raised:
        list(data.stream([range(0, 3), range(3, 7)]))
    assert raised.value.location == ("data", "factory")
    assert raised.value.message == "reading sample 4 of the Dataset failed: ValueError: sample 4 is broken"


@pytest.mark.parametrize("workers", [0, 2])
def test_odd_values_in_a_worker_name_the_sample(module: str, tmp_path: Path, workers: int) -> None:
    data = source(module, tmp_path, form="several-classes", num_workers=workers)
    message = "sample 0's target labels hold 2 classes [0, 1]: one class per image (give target['label'])"
    with pytest.raises(SpecRuntimeError, match=re.escape(message)):
        list(data.stream([range(0, 3)]))


class Unsized:
    def __getitem__(self, index: int) -> int:
        return index


class Unindexed:
    def __len__(self) -> int:
        return 3


@pytest.mark.parametrize("returned", [Unsized(), Unindexed(), iter([1, 2])], ids=["no-len", "no-getitem", "iterator"])
def test_the_factory_must_return_a_dataset_with_len_and_getitem(returned: object) -> None:
    with pytest.raises(SpecRuntimeError) as raised:
        DatasetSource(returned, DataSpec(factory="module:samples"))
    assert raised.value.location == ("data", "factory")
    assert raised.value.message == "the data factory must return a Dataset with __len__ and __getitem__"


def test_shapes_must_agree_across_shards(module: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    monkeypatch.setattr(importlib.import_module(module), "SIZE", 5)
    data = source(module, tmp_path)
    list(data.stream([range(0, 2)]))
    monkeypatch.setattr(importlib.import_module(module), "SIZE", 6)
    message = "sample 2's images is (3, 6, 6) but sample 0's is (3, 5, 5): every sample must have the same shape"
    with pytest.raises(SpecRuntimeError, match=re.escape(message)):
        data.read(range(2, 4))


def test_boxes_cover_the_pixels_whose_centre_they_hold() -> None:
    boxes = torch.tensor([[1.0, 0.0, 3.0, 2.0], [3.5, 2.5, 5.0, 4.0], [0.6, 3.6, 1.4, 4.0]])  # x0, y0, x1, y1
    expected = np.zeros((4, 5), bool)
    expected[0:2, 1:3] = True  # columns 1, 2 of rows 0, 1
    expected[2:4, 3:5] = True  # centres 3.5 and 4.5 of columns 3, 4; 2.5 and 3.5 of rows 2, 3
    # the third box holds no pixel centre (column centres 0.5 and 1.5 lie outside [0.6, 1.4))
    assert np.array_equal(boxes_mask(boxes, 4, 5), expected)
    assert not boxes_mask(torch.zeros(0, 4), 4, 5).any()
