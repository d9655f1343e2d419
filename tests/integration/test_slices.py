"""``slices:``: one test per value of a per-sample field (an npz array, a labels-CSV column, a
Dataset item's dict entry), like ``per_class``.

The data: the conftest's six samples with a ``camera`` field, ``north`` for samples 0, 2, 4 and
``south`` for 1, 3, 5; the north images have no decoy. A model looking at object and decoy then
scores IoU 1 on north (its saliency is the object) and 16/25 = 0.64 on south.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

WriteSpec = Callable[..., Path]
CAMERA = np.array(["north", "south"] * 3)
SLICED = """\
- id: cov
  shared_interest:
    iou: {mean: ">= 0.9"}
    slices: {by: camera}
"""


@pytest.fixture
def cameras(project: pytest.Pytester, helpers: SimpleNamespace) -> None:
    """``data.npz`` with the ``camera`` field and no decoy on the north images."""
    arrays = helpers.make_arrays()
    north = CAMERA == "north"
    arrays["images"][north, 1] = 0
    arrays["decoy"][north] = False
    arrays["camera"] = CAMERA
    (project.path / "data.npz").write_bytes(helpers.npz_bytes(arrays))


def test_slices_expand_into_items_that_measure_their_own_samples(
    project: pytest.Pytester, write_spec: WriteSpec, cameras: None, helpers: SimpleNamespace
) -> None:
    write_spec(looks_at="both", checks=SLICED)
    result = project.runpytest_inprocess("-v", "--saliency-json", "out.json")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "specs/x.saliency.yaml::cov[[]grad-camera=north] PASSED*",
            "specs/x.saliency.yaml::cov[[]grad-camera=south] FAILED*",
        ]
    )
    result.stdout.fnmatch_lines(["*check 'cov' [[]grad-camera=south] failed: iou.mean = 0.64 (want >= 0.9)"])
    rows = helpers.summary_rows(result.stdout.str())
    assert [(row["method"], row["value"], row["status"]) for row in rows] == [
        ("grad-camera=north", "1.0000", "passed"),
        ("grad-camera=south", "0.6400", "failed"),
    ]
    assert (
        "worst slice of cov[grad] (2 slices): camera=south iou.mean 0.6400 (want >= 0.9) failed"
        in helpers.summary_lines(result.stdout.str())
    )
    document = json.loads((project.path / "out.json").read_text())
    by_slice = {r["slice"]["value"]: r for r in document["results"]}
    assert {name: r["slice"]["by"] for name, r in by_slice.items()} == {"north": "camera", "south": "camera"}
    assert by_slice["north"]["per_sample"]["index"] == [0, 2, 4]
    assert by_slice["south"]["measurements"][0]["value"] == pytest.approx(0.64)
    assert by_slice["south"]["samples"] == 3


def test_dash_k_selects_slices(project: pytest.Pytester, write_spec: WriteSpec, cameras: None) -> None:
    write_spec(looks_at="both", checks=SLICED)
    result = project.runpytest_inprocess("-v", "-k", "south")
    result.assert_outcomes(failed=1, deselected=1)
    result.stdout.fnmatch_lines(["specs/x.saliency.yaml::cov[[]grad-camera=south] FAILED*"])


def test_listed_values_and_region_and_patterns_checks_slice_too(
    project: pytest.Pytester, write_spec: WriteSpec, cameras: None
) -> None:
    checks = """\
- id: decoy
  region:
    mask: decoy
    method: occlusion
    share: {mean: "<= 0.5"}
    slices: {by: camera, values: [south]}
- id: pat
  patterns:
    min_fraction: {human_aligned: 0.9}
    slices: {by: camera}
"""
    write_spec(looks_at="both", checks=checks)
    result = project.runpytest_inprocess("-v")
    result.stdout.fnmatch_lines(
        [
            "specs/x.saliency.yaml::decoy[[]camera=south] *",
            "specs/x.saliency.yaml::pat[[]grad-camera=north] PASSED*",
            "specs/x.saliency.yaml::pat[[]grad-camera=south] FAILED*",
        ]
    )
    assert "decoy[camera=north]" not in result.stdout.str()


def test_slices_from_a_folder_csv_column_and_a_dataset_field(
    project: pytest.Pytester, write_spec: WriteSpec, helpers: SimpleNamespace
) -> None:
    from PIL import Image

    arrays = helpers.make_arrays()
    for folder in ("images", "masks"):
        (project.path / folder).mkdir()
    lines = ["file,label,camera"]
    for index in range(len(CAMERA)):
        rgb = (arrays["images"][index].transpose(1, 2, 0) * 255).round().astype(np.uint8)
        Image.fromarray(rgb).save(project.path / "images" / f"{index}.png")
        Image.fromarray(arrays["masks"][index].astype(np.uint8) * 255).save(project.path / "masks" / f"{index}.png")
        lines.append(f"{index}.png,{arrays['labels'][index]},{CAMERA[index]}")
    (project.path / "labels.csv").write_text("\n".join(lines) + "\n")
    folder = "folder: {images: ../images, masks: ../masks, labels: ../labels.csv}\nclasses: [circle, square, triangle]"
    write_spec(data=folder, checks=SLICED)
    result = project.runpytest_inprocess("-v")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*cov[[]grad-camera=north] PASSED*", "*cov[[]grad-camera=south] PASSED*"])

    project.makepyfile(
        cameradata=f"""
import numpy as np
from tinydata import ARRAYS

class Cameras:
    def __len__(self):
        return 6
    def __getitem__(self, i):
        a = ARRAYS
        return a["images"][i], a["masks"][i], a["labels"][i], {{"camera": {list(CAMERA)!r}[i]}}

def build():
    return Cameras()
""",
        tinydata=f"import numpy as np\nARRAYS = dict(np.load({str(project.path / 'data.npz')!r}))\n",
    )
    write_spec(data="factory: cameradata:build", checks=SLICED.replace("{by: camera}", "{by: camera, values: [north]}"))
    result = project.runpytest_inprocess("-v")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*cov[[]grad-camera=north] PASSED*"])


def test_slice_errors_are_positioned(
    project: pytest.Pytester, write_spec: WriteSpec, cameras: None, helpers: SimpleNamespace
) -> None:
    path = write_spec(checks=SLICED.replace("by: camera", "by: camra"))
    result = project.runpytest_inprocess()
    where = helpers.position(path.read_text(), "camra")
    result.stdout.fnmatch_lines(
        [
            f"specs/x.saliency.yaml:{where}: checks[[]0].shared_interest.slices.by: the data has no per-sample field "
            "'camra' (did you mean 'camera'?); its fields ((N,) arrays of the npz): camera"
        ]
    )
    path = write_spec(checks=SLICED + "    per_class: true\n")
    result = project.runpytest_inprocess()
    result.stdout.fnmatch_lines(["*checks[[]0].shared_interest: per_class and slices do not combine: give one of them"])
    path = write_spec(data="factory: tinymodel:build", checks=SLICED)
    result = project.runpytest_inprocess()
    result.stdout.fnmatch_lines(
        [
            "*checks[[]0].shared_interest.slices: a Dataset's fields are known only when it runs: list the slices to test in slices.values"
        ]
    )


def test_listed_slice_values_must_be_values_of_the_field_and_differ(
    project: pytest.Pytester, write_spec: WriteSpec, cameras: None, helpers: SimpleNamespace
) -> None:
    path = write_spec(checks=SLICED.replace("{by: camera}", "{by: camera, values: [north, sout, north]}"))
    result = project.runpytest_inprocess()
    text = path.read_text()
    typo = helpers.position(text, "sout")
    twice = helpers.position(text, "north]")
    result.stdout.fnmatch_lines(
        [
            f"specs/x.saliency.yaml:{typo}: checks[[]0].shared_interest.slices.values[[]1]: "
            "'sout' is no value of camera (north, south) (did you mean 'south'?)",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            f"specs/x.saliency.yaml:{twice}: checks[[]0].shared_interest.slices.values[[]2]: "
            "'north' is listed twice: give each slice once",
        ]
    )
    assert "passed" not in result.stdout.str()
    helpers.assert_no_traceback(result.stdout.str())


def test_labels_are_no_per_sample_field_to_slice_by(
    project: pytest.Pytester, write_spec: WriteSpec, cameras: None, helpers: SimpleNamespace
) -> None:
    write_spec(checks=SLICED.replace("by: camera", "by: labels"))
    result = project.runpytest_inprocess()
    result.stdout.fnmatch_lines(
        [
            "*checks[[]0].shared_interest.slices.by: the data has no per-sample field 'labels'; "
            "its fields ((N,) arrays of the npz): camera"
        ]
    )
    result.assert_outcomes(failed=1)  # the spec's one item: its error
    helpers.assert_no_traceback(result.stdout.str())
