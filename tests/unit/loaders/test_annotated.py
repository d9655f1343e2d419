"""Image files with ground truth as data sets ship it: boxes CSVs, Pascal VOC XML, COCO JSON,
and the folder, imagefolder and coco sources read through them (docs/spec.md, "data")."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pytest_saliency.errors import SpecRuntimeError
from pytest_saliency.loaders.annotations import AnnotationError, coco_box, read_boxes_csv, read_coco_json, read_voc_xml
from pytest_saliency.loaders.data import open_source
from pytest_saliency.spec.schema import CocoSpec, DataSpec, FolderSpec, ImageFolderSpec, TransformSpec

# --- parsing ---------------------------------------------------------------------------------


def test_boxes_csv_unites_rows_of_one_file(tmp_path: Path) -> None:
    (tmp_path / "boxes.csv").write_text(
        "file,top,left,bottom,right\na.png,0,0,2,2\n# a comment\n\na.png,3,3,5,6\nb.png,-2,1,4,9\n"
    )
    assert read_boxes_csv(tmp_path / "boxes.csv", "boxes.csv") == {
        "a.png": [(0, 0, 2, 2), (3, 3, 5, 6)],
        "b.png": [(-2, 1, 4, 9)],
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a.png,0,0,2\n", "boxes.csv row 1 ['a.png', '0', '0', '2']: expected file,top,left,bottom,right"),
        ("a.png,0,0,2,x\n", "boxes.csv row 1 * must be whole pixels"),
        ("file,top,left,bottom,right\na.png,4,0,4,3\n", "boxes.csv row 2: box (4, 0, 4, 3) is empty: *"),
    ],
)
def test_boxes_csv_errors_name_the_row(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "boxes.csv").write_text(text)
    with pytest.raises(AnnotationError) as raised:
        read_boxes_csv(tmp_path / "boxes.csv", "boxes.csv")
    pytest.LineMatcher([str(raised.value)]).fnmatch_lines([message])


VOC = """<annotation><filename>x</filename><size><width>10</width><height>8</height></size>
<object><name>n01</name><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>4</xmax><ymax>8</ymax></bndbox></object>
<object><name>n02</name><bndbox><xmin>6.4</xmin><ymin>1</ymin><xmax>10</xmax><ymax>3</ymax></bndbox></object>
</annotation>"""


def test_voc_boxes_are_one_based_inclusive(tmp_path: Path) -> None:
    """xmin=1..xmax=4 covers the first four columns: 0-based left 0, end-exclusive right 4."""
    (tmp_path / "x.xml").write_text(VOC)
    assert read_voc_xml(tmp_path / "x.xml", "x.xml", "n01") == [(1, 0, 8, 4)]
    assert read_voc_xml(tmp_path / "x.xml", "x.xml", "n02") == [(0, 5, 3, 10)]
    # no object of that name: all of them
    assert read_voc_xml(tmp_path / "x.xml", "x.xml", "cat") == [(1, 0, 8, 4), (0, 5, 3, 10)]


def test_voc_errors_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "x.xml").write_text("<annotation><object><name>a</name></object></annotation>")
    with pytest.raises(AnnotationError, match=r"^x.xml: object 1 has no <bndbox>$"):
        read_voc_xml(tmp_path / "x.xml", "x.xml")
    (tmp_path / "y.xml").write_text("<annotation>")
    with pytest.raises(AnnotationError, match=r"^cannot read y.xml: no element found"):
        read_voc_xml(tmp_path / "y.xml", "y.xml")


def test_coco_box_covers_the_pixels_it_touches() -> None:
    assert coco_box([1.5, 2.0, 3.0, 2.5]) == (2, 1, 5, 5)


def test_coco_json_structure_is_checked(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(
        json.dumps({"images": [{"id": 1, "file_name": "a.png", "height": 2}], "annotations": [], "categories": []})
    )
    with pytest.raises(AnnotationError, match=r"^a.json: images\[0\] lacks width$"):
        read_coco_json(tmp_path / "a.json", "a.json")
    (tmp_path / "b.json").write_text(
        json.dumps(
            {
                "images": [],
                "annotations": [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]}],
                "categories": [{"id": 1, "name": "cat"}],
            }
        )
    )
    with pytest.raises(AnnotationError, match=r"annotations\[0\] has image_id 1, no image's id"):
        read_coco_json(tmp_path / "b.json", "b.json")


# --- sources -----------------------------------------------------------------------------------


def save(path: Path, pixels: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, mode).save(path) if mode else Image.fromarray(pixels).save(path)


def test_folder_reads_any_mode_as_rgb_in_0_1(tmp_path: Path) -> None:
    """RGB, grey (L), RGBA and 16-bit grey images of one size: (3, H, W) float in [0, 1]."""
    rgb = np.zeros((5, 4, 3), np.uint8)
    rgb[..., 0] = 255
    save(tmp_path / "images/rgb.png", rgb)
    save(tmp_path / "images/grey.png", np.full((5, 4), 51, np.uint8))
    save(tmp_path / "images/rgba.png", np.dstack([rgb, np.zeros((5, 4), np.uint8)]))
    save(tmp_path / "images/deep.png", np.full((5, 4), 65535, np.uint16))
    for index, name in enumerate(["rgb", "grey", "rgba", "deep"]):
        mask = np.zeros((5, 4), np.uint8)
        mask[: index + 1, :2] = 255
        save(tmp_path / f"masks/{name}.png", mask)
    (tmp_path / "labels.csv").write_text(
        "file,label,site\nrgb.png,square,a\ngrey.png,circle,b\nrgba.png,1,a\ndeep.png,0,b\n"
    )
    spec = DataSpec(
        folder=FolderSpec(images="images", masks="masks", labels="labels.csv"), classes=["circle", "square"]
    )
    source = open_source(spec, tmp_path, [])
    batch = source.read(range(len(source)))
    assert batch.images.shape == (4, 3, 5, 4) and batch.images.dtype == torch.float32
    assert batch.images[0, :, 0, 0].tolist() == [1.0, 0.0, 0.0]
    assert batch.images[1, :, 0, 0].tolist() == pytest.approx([0.2] * 3)
    assert batch.images[2, :, 0, 0].tolist() == [1.0, 0.0, 0.0]  # alpha dropped
    assert batch.images[3].eq(1.0).all()
    assert batch.labels.tolist() == [1, 0, 1, 0]
    assert batch.masks.flatten(1).sum(1).tolist() == [2, 4, 6, 8]
    assert batch.fields["site"].tolist() == ["a", "b", "a", "b"]


def test_folder_label_that_is_no_class(tmp_path: Path) -> None:
    save(tmp_path / "images/a.png", np.zeros((2, 2, 3), np.uint8))
    save(tmp_path / "masks/a.png", np.zeros((2, 2), np.uint8))
    (tmp_path / "labels.csv").write_text("a.png,squar\n")
    spec = DataSpec(folder=FolderSpec(images="images", masks="masks", labels="labels.csv"), classes=["square"])
    with pytest.raises(
        SpecRuntimeError, match=r"label 'squar' is neither an index nor one of data.classes \(did you mean 'square'\?\)"
    ):
        open_source(spec, tmp_path, [])


def test_folder_boxes_are_clipped_united_and_transformed(tmp_path: Path) -> None:
    """Two sizes resized to one; a box crossing the border is clipped; a file without rows has
    an empty ground truth; the extra boxes CSV gives a named region."""
    save(tmp_path / "images/wide.png", np.zeros((20, 40, 3), np.uint8))
    save(tmp_path / "images/small.png", np.zeros((10, 20), np.uint8))
    save(tmp_path / "images/none.png", np.zeros((10, 20), np.uint8))
    (tmp_path / "labels.csv").write_text("wide.png,0\nsmall.png,1\nnone.png,1\n")
    (tmp_path / "boxes.csv").write_text(
        "file,top,left,bottom,right\nwide.png,0,0,10,10\nwide.png,10,30,30,50\nsmall.png,-4,-4,5,10\n"
    )
    (tmp_path / "decoys.csv").write_text("small.png,0,10,10,20\n")
    spec = DataSpec(
        folder=FolderSpec(images="images", boxes="boxes.csv", labels="labels.csv", extra={"decoy": "decoys.csv"}),
        transform=TransformSpec(resize=[10, 20]),
    )
    batch = open_source(spec, tmp_path, []).read([0, 1, 2])
    assert batch.images.shape == (3, 3, 10, 20)
    # both boxes halved; the second is clipped first, to rows 10..20 and columns 30..40
    assert batch.masks[0].sum() == 5 * 5 + 5 * 5
    assert batch.masks[1].sum() == 5 * 10 and batch.masks[1, :5, :10].all()
    assert not batch.masks[2].any()
    assert batch.regions["decoy"].flatten(1).sum(1).tolist() == [0, 100, 0]


def test_imagefolder_classes_from_folders_and_voc_boxes(tmp_path: Path) -> None:
    save(tmp_path / "train/dog/d1.png", np.zeros((8, 10, 3), np.uint8))
    save(tmp_path / "train/cat/c1.jpg", np.zeros((8, 10, 3), np.uint8))
    save(tmp_path / "train/cat/c2.png", np.zeros((8, 10, 3), np.uint8))
    (tmp_path / "boxes/dog").mkdir(parents=True)
    (tmp_path / "boxes/c1.xml").write_text(VOC.replace("n01", "cat"))
    (tmp_path / "boxes/dog/d1.xml").write_text(VOC)
    spec = DataSpec(imagefolder=ImageFolderSpec(root="train", boxes="boxes"))
    source = open_source(spec, tmp_path, [])
    batch = source.read(range(len(source)))
    assert batch.labels.tolist() == [0, 0, 1]  # cat, cat, dog: sorted folder names
    assert batch.masks.flatten(1).sum(1).tolist() == [7 * 4, 0, 7 * 4 + 3 * 5]  # cat's box; none; both boxes
    named = DataSpec(imagefolder=ImageFolderSpec(root="train", boxes="boxes"), classes=["dog", "bird", "cat"])
    assert open_source(named, tmp_path, []).read([0, 1, 2]).labels.tolist() == [2, 2, 0]
    unknown = DataSpec(imagefolder=ImageFolderSpec(root="train", boxes="boxes"), classes=["dog", "cats"])
    with pytest.raises(
        SpecRuntimeError, match=r"class folder 'cat' of train is not one of data.classes \(did you mean 'cats'\?\)"
    ):
        open_source(unknown, tmp_path, [])


def coco_files(directory: Path) -> None:
    """Three images: a polygon cat and a smaller dog (label cat); an RLE dog; no instance."""
    from pycocotools import mask as coco_mask

    for name in ("a.png", "b.png", "c.png"):
        save(directory / "images" / name, np.zeros((6, 8, 3), np.uint8))
    square = np.zeros((6, 8), np.uint8, order="F")
    square[1:3, 5:8] = 1
    rle = coco_mask.encode(np.asfortranarray(square))
    rle["counts"] = rle["counts"].decode("ascii")
    content = {
        "images": [
            {"id": i, "file_name": n, "height": 6, "width": 8} for i, n in enumerate(["a.png", "b.png", "c.png"], 1)
        ],
        "categories": [{"id": 18, "name": "dog"}, {"id": 17, "name": "cat"}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 17,
                "segmentation": [[0, 0, 4, 0, 4, 4, 0, 4]],
                "area": 16,
                "bbox": [0, 0, 4, 4],
                "iscrowd": 0,
            },
            {"id": 2, "image_id": 1, "category_id": 18, "bbox": [6, 0, 2, 2], "area": 4, "iscrowd": 0},
            {
                "id": 3,
                "image_id": 2,
                "category_id": 18,
                "segmentation": rle,
                "area": 6,
                "bbox": [5, 1, 3, 2],
                "iscrowd": 1,
            },
        ],
    }
    (directory / "instances.json").write_text(json.dumps(content))


def test_coco_label_is_the_largest_instance_and_truth_its_category(tmp_path: Path) -> None:
    pytest.importorskip("pycocotools")
    coco_files(tmp_path)
    source = open_source(DataSpec(coco=CocoSpec(images="images", annotations="instances.json")), tmp_path, [])
    assert len(source) == 2  # c.png has no instance: no label, not a sample
    batch = source.read([0, 1])
    assert batch.labels.tolist() == [0, 1]  # categories by id: cat (17) 0, dog (18) 1
    assert batch.masks[0, :4, :4].all() and batch.masks[0].sum() == 16  # the dog's box is no ground truth
    assert batch.masks[1, 1:3, 5:8].all() and batch.masks[1].sum() == 6
    named = DataSpec(coco=CocoSpec(images="images", annotations="instances.json"), classes=["dog"])
    only_dogs = open_source(named, tmp_path, [])
    assert len(only_dogs) == 2 and only_dogs.read([0]).masks[0].sum() == 4  # a's dog box (6..8, 0..2)


def test_an_all_skipped_shard_is_an_empty_batch(tmp_path: Path) -> None:
    save(tmp_path / "images/a.png", np.zeros((4, 4, 3), np.uint8))
    (tmp_path / "images/b.png").write_bytes(b"broken")
    (tmp_path / "labels.csv").write_text("a.png,0\nb.png,0\n")
    (tmp_path / "boxes.csv").write_text("a.png,0,0,2,2\n")
    spec = DataSpec(folder=FolderSpec(images="images", boxes="boxes.csv", labels="labels.csv"), on_bad_sample="skip")
    source = open_source(spec, tmp_path, [])
    batch = source.read([1])
    assert len(batch) == 0 and batch.images.shape[:2] == (0, 3)
    assert len(batch.skipped) == 1 and batch.skipped[0].startswith("images/b.png (sample 1): cannot read the image: ")
    both = source.read([0, 1])
    assert both.indices.tolist() == [0] and len(both.skipped) == 1


def test_stream_never_yields_an_empty_batch(tmp_path: Path) -> None:
    """A shard of bad samples only gives its lines to the batch before it (or after it); a data
    set of bad samples only is one error."""
    for name in ("a", "c"):
        save(tmp_path / f"images/{name}.png", np.zeros((4, 4, 3), np.uint8))
    for name in ("b", "d"):
        (tmp_path / f"images/{name}.png").write_bytes(b"broken")
    (tmp_path / "labels.csv").write_text("b.png,0\na.png,0\nd.png,0\nc.png,0\n")
    (tmp_path / "boxes.csv").write_text("a.png,0,0,2,2\n")
    folder = FolderSpec(images="images", boxes="boxes.csv", labels="labels.csv")
    source = open_source(DataSpec(folder=folder, on_bad_sample="skip"), tmp_path, [])
    batches = list(source.stream([range(0, 1), range(1, 2), range(2, 3), range(3, 4)]))
    assert [batch.indices.tolist() for batch in batches] == [[1], [3]]
    assert [[line.split(" (")[0] for line in batch.skipped] for batch in batches] == [
        ["images/b.png", "images/d.png"],
        [],
    ]
    (tmp_path / "labels.csv").write_text("b.png,0\nd.png,0\n")
    source = open_source(DataSpec(folder=folder, on_bad_sample="skip"), tmp_path, [])
    with pytest.raises(
        SpecRuntimeError, match=r"^every sample is bad \(2 skipped; the first: images/b.png \(sample 0\)"
    ):
        list(source.stream([range(0, 1), range(1, 2)]))


def test_values_beyond_one_name_data_scale(tmp_path: Path) -> None:
    """A 32-bit image above 65535, or a data.scale too small for the pixels, is a bad sample."""
    from pytest_saliency.loaders.annotated import BadSample, read_image

    Image.fromarray(np.full((3, 3), 70000, np.int32)).save(tmp_path / "deep.tif")
    with pytest.raises(BadSample, match=r"^int32 pixels divided by 65535 leave it in \[0, 1.068\]$"):
        read_image(tmp_path / "deep.tif", "deep.tif", ("data", "folder", "images"))
    Image.fromarray(np.full((3, 3), 200, np.uint8)).save(tmp_path / "grey.png")
    with pytest.raises(BadSample, match=r"^data.scale: 100 leaves it in \[0, 2\]$") as raised:
        read_image(tmp_path / "grey.png", "grey.png", ("data", "folder", "images"), scale=100.0)
    assert raised.value.location == ("data", "scale")
    assert read_image(tmp_path / "grey.png", "grey.png", ("x",), scale=400.0).max() == 0.5
