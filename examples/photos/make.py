"""Write the photos example's data from scikit-image's bundled photographs (nothing downloads).

    python -m examples.photos.make            # into examples/photos/data/ (git-ignored)
    python -m examples.photos.make --out DIR

Seven photographs at their native sizes and in several modes (RGB, grey, RGBA, 16-bit grey),
with boxes drawn by hand, written the ways data sets ship them:

- ``imagenet/val/<class>/<name>.png`` with ``imagenet/boxes/<name>.xml``: class folders and
  Pascal VOC XML, as ImageNet LOC (``data.imagefolder``);
- ``coco/images/<name>.png`` with ``coco/instances.json``: a COCO instances file whose
  segmentations are the boxes as polygons (``data.coco``);
- ``folder/images``, ``folder/labels.csv`` and ``folder/boxes.csv`` (``data.folder``).

``coins`` has no box: an image without annotation (its GTC is undefined, and counted).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("animal", "person", "thing")
DATA_DIR = Path(__file__).resolve().parent / "data"

# name -> (class, mode written, boxes as (top, left, bottom, right): 0-based pixels of the native
# image, end exclusive). Drawn by eye on a 50-pixel grid; chelsea's box runs past the bottom
# edge on purpose (boxes crossing the border are clipped).
PHOTOS: dict[str, tuple[str, str, list[tuple[int, int, int, int]]]] = {
    "astronaut": ("person", "RGB", [(15, 20, 512, 365)]),
    "camera": ("person", "L", [(60, 0, 512, 330)]),
    "chelsea": ("animal", "RGB", [(30, 100, 320, 400)]),
    "logo": ("animal", "RGBA", [(93, 42, 410, 480)]),
    "coffee": ("thing", "RGB", [(15, 165, 300, 430), (70, 75, 390, 480)]),  # the cup and its saucer
    "rocket": ("thing", "RGB", [(120, 290, 427, 345)]),
    "coins": ("thing", "I;16", []),
}


def photo(name: str, mode: str) -> Image.Image:
    """scikit-image's photograph ``name`` as a PIL image in ``mode`` (16-bit: grey times 257)."""
    import skimage.data

    pixels = getattr(skimage.data, name)()
    if mode == "I;16":
        return Image.fromarray(pixels.astype(np.uint16) * 257)
    return Image.fromarray(pixels)


def voc_xml(name: str, label: str, size: tuple[int, int], boxes: list[tuple[int, int, int, int]]) -> str:
    """A Pascal VOC annotation: ``xmin ymin xmax ymax`` are 1-based and inclusive."""
    objects = "".join(
        f"<object><name>{label}</name><bndbox><xmin>{left + 1}</xmin><ymin>{top + 1}</ymin>"
        f"<xmax>{right}</xmax><ymax>{bottom}</ymax></bndbox></object>"
        for top, left, bottom, right in boxes
    )
    width, height = size
    return (
        f"<annotation><filename>{name}.png</filename><size><width>{width}</width><height>{height}</height>"
        f"<depth>3</depth></size>{objects}</annotation>\n"
    )


def write(out: Path) -> None:
    """Every file of the example under ``out``."""
    for folder in ("imagenet/boxes", "coco/images", "folder/images"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    labels, box_rows = ["file,label"], ["file,top,left,bottom,right"]
    images: list[dict[str, object]] = []
    annotations: list[dict[str, object]] = []
    for number, (name, (label, mode, boxes)) in enumerate(PHOTOS.items(), start=1):
        image = photo(name, mode)
        (out / "imagenet/val" / label).mkdir(parents=True, exist_ok=True)
        for path in (out / "imagenet/val" / label, out / "coco/images", out / "folder/images"):
            image.save(path / f"{name}.png")
        width, height = image.size
        if boxes:
            (out / "imagenet/boxes" / f"{name}.xml").write_text(voc_xml(name, label, (width, height), boxes))
        labels.append(f"{name}.png,{label}")
        box_rows += [f"{name}.png,{top},{left},{bottom},{right}" for top, left, bottom, right in boxes]
        images.append({"id": number, "file_name": f"{name}.png", "width": width, "height": height})
        for top, left, bottom, right in boxes:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": number,
                    "category_id": CLASSES.index(label) + 1,
                    "segmentation": [[left, top, right, top, right, bottom, left, bottom]],
                    "area": (bottom - top) * (right - left),
                    "bbox": [left, top, right - left, bottom - top],
                    "iscrowd": 0,
                }
            )
    categories = [{"id": index + 1, "name": name} for index, name in enumerate(CLASSES)]
    content = {"images": images, "annotations": annotations, "categories": categories}
    (out / "coco/instances.json").write_text(json.dumps(content, indent=1) + "\n")
    (out / "folder/labels.csv").write_text("\n".join(labels) + "\n")
    (out / "folder/boxes.csv").write_text("\n".join(box_rows) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DATA_DIR, help=f"where to write (default: {DATA_DIR})")
    write(parser.parse_args().out)


if __name__ == "__main__":
    main()
