"""Detection annotations as data sets ship them (boxes CSV, Pascal VOC XML) and boxes moved by
``data.transform`` as the image is."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_saliency.loaders.annotations import AnnotationError
from pytest_saliency.loaders.object_annotations import fitted_box, read_detection_csv, read_voc_objects
from pytest_saliency.loaders.objects import box_masks
from pytest_saliency.loaders.transform import apply, apply_boxes
from pytest_saliency.spec.schema import TransformSpec


def test_a_boxes_csv_gives_each_images_objects_in_row_order(tmp_path: Path) -> None:
    path = tmp_path / "b.csv"
    path.write_text(
        "\ufeffimage,x1,y1,x2,y2,label\n# a comment\na.png,0,0,8,8,cat\n\nb.png,1.5,2,3,4.25,1\na.png,2,2,4,4,dog\n",
        encoding="utf-8",
    )
    objects = read_detection_csv(path, "b.csv")
    assert [(item.label, item.box, item.written) for item in objects["a.png"]] == [
        ("cat", (0.0, 0.0, 8.0, 8.0), "b.csv row 3"),  # rows as the file numbers its lines
        ("dog", (2.0, 2.0, 4.0, 4.0), "b.csv row 6"),
    ]
    assert objects["b.png"][0].box == (1.5, 2.0, 3.0, 4.25)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("a.png,0,0,8,nan,cat", "b.csv row 1: x1, y1, x2, y2 must be finite numbers"),
        ("a.png,0,0,8,x,cat", "b.csv row 1: could not convert string to float: 'x'"),
        ("a.png,4,0,4,8,cat", "b.csv row 1: box \\[4, 0, 4, 8\\] is empty"),
    ],
)
def test_a_bad_csv_row_is_named(tmp_path: Path, row: str, message: str) -> None:
    (tmp_path / "b.csv").write_text(row + "\n", encoding="utf-8")
    with pytest.raises(AnnotationError, match=message):
        read_detection_csv(tmp_path / "b.csv", "b.csv")


def test_voc_boxes_are_one_based_inclusive_and_difficult_objects_are_left_out(tmp_path: Path) -> None:
    (tmp_path / "a.xml").write_text(
        "<annotation><filename>a.jpg</filename><size><width>20</width><height>10</height><depth>3</depth></size>"
        "<object><name>cat</name><difficult>0</difficult><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>8</xmax>"
        "<ymax>9</ymax></bndbox></object>"
        "<object><name>dog</name><difficult>1</difficult><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>2</xmax>"
        "<ymax>2</ymax></bndbox></object>"
        "<object><name> dog </name><bndbox><xmin>10.5</xmin><ymin>1</ymin><xmax>20</xmax><ymax>10</ymax></bndbox>"
        "</object></annotation>",
        encoding="utf-8",
    )
    voc = read_voc_objects(tmp_path / "a.xml", "a.xml")
    assert (voc.filename, voc.size, voc.difficult) == ("a.jpg", (10, 20), 1)
    assert [(item.label, item.box) for item in voc.objects] == [
        ("cat", (0.0, 1.0, 8.0, 9.0)),  # pixels 1..8 of VOC are 0..7: x1 = xmin - 1, x2 = xmax
        ("dog", (9.5, 0.0, 20.0, 10.0)),
    ]
    assert [item.written for item in voc.objects] == ["a.xml object 1", "a.xml object 3"]


def test_a_box_may_pass_the_border_by_a_pixel_and_is_then_clipped() -> None:
    assert fitted_box((-0.5, 0.0, 16.8, 8.0), (10, 16)) == (0.0, 0.0, 16.0, 8.0)
    assert fitted_box((0.0, 0.0, 18.0, 8.0), (10, 16)) is None


def test_boxes_move_with_resize_crop_and_pad_by_hand() -> None:
    boxes = torch.tensor([[0.0, 0.0, 8.0, 8.0], [10.0, 2.0, 16.0, 9.0]])
    # resize [32, 40] of 16 x 20: x * 2, y * 2
    assert apply_boxes(TransformSpec(resize=[32, 40]), boxes, (16, 20)).tolist() == [
        [0.0, 0.0, 16.0, 16.0],
        [20.0, 4.0, 32.0, 18.0],
    ]
    # center_crop 10 x 10: top = round(6 / 2) = 3, left = round(10 / 2) = 5, then clipped to [0, 10]
    assert apply_boxes(TransformSpec(center_crop=[10, 10]), boxes, (16, 20)).tolist() == [
        [0.0, 0.0, 3.0, 5.0],
        [5.0, 0.0, 10.0, 6.0],
    ]
    # pad_to 20 x 24: 2 rows above, 2 columns left
    assert apply_boxes(TransformSpec(pad_to=[20, 24]), boxes, (16, 20)).tolist() == [
        [2.0, 2.0, 10.0, 10.0],
        [12.0, 4.0, 18.0, 11.0],
    ]
    assert apply_boxes(None, boxes, (16, 20)) is boxes


@settings(max_examples=40, deadline=None)
@given(
    x1=st.integers(0, 7), y1=st.integers(0, 7), width=st.integers(1, 8), height=st.integers(1, 8),
    factor=st.integers(1, 3), crop=st.integers(4, 16),
)  # fmt: skip
def test_a_moved_boxs_pixels_are_its_moved_masks(
    x1: int, y1: int, width: int, height: int, factor: int, crop: int
) -> None:
    """With whole-pixel boxes and whole resize factors the box moved by ``apply_boxes`` covers
    exactly the pixels that ``apply`` moves the box's mask to (nearest)."""
    spec = TransformSpec(resize=[16 * factor, 16 * factor], center_crop=crop)
    box = torch.tensor([[x1, y1, x1 + width, y1 + height]], dtype=torch.float32)
    mask = torch.from_numpy(box_masks(box.numpy(), 16, 16)[0])
    _, moved = apply(spec, torch.zeros(1, 16, 16), {"box": mask})
    moved_box = apply_boxes(spec, box, (16, 16))
    assert torch.equal(torch.from_numpy(box_masks(moved_box.numpy(), crop, crop)[0]), moved["box"])
