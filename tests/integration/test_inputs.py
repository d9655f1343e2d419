"""Inputs that used to pass silently or be refused: fewer fidelity units than steps, a model that
returns probabilities, a labels CSV with a byte-order mark, mask files with upper-case suffixes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

WriteSpec = Callable[..., Path]
FOLDER = "folder: {images: ../images, masks: ../masks, labels: ../labels.csv}\nclasses: [circle, square, triangle]"
SOFTMAX = """\
from torch import nn

from tinymodel import build


class Probabilities(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = build()

    def forward(self, x):
        return self.inner(x).softmax(dim=1)


def probabilities():
    return Probabilities()
"""


def image_folder(directory: Path, helpers: SimpleNamespace, *, bom: bool = False, mask_suffix: str = ".png") -> None:
    """``images/``, ``masks/`` and ``labels.csv`` from the project's arrays."""
    from PIL import Image

    arrays = helpers.make_arrays()
    (directory / "images").mkdir()
    (directory / "masks").mkdir()
    rows = ["file,label"]
    for index, (image, mask, label) in enumerate(zip(arrays["images"], arrays["masks"], arrays["labels"], strict=True)):
        rows.append(f"s{index}.png,{label}")
        Image.fromarray((image.transpose(1, 2, 0) * 255).round().astype(np.uint8)).save(
            directory / "images" / f"s{index}.png"
        )
        Image.fromarray(mask.astype(np.uint8) * 255).save(directory / "masks" / f"s{index}{mask_suffix}", format="PNG")
    (directory / "labels.csv").write_text(("\ufeff" if bom else "") + "\n".join(rows) + "\n", encoding="utf-8")


def test_fewer_fidelity_units_than_steps_is_one_line_naming_unit_and_steps(
    write_spec: WriteSpec, project: pytest.Pytester
) -> None:
    write_spec(checks='- id: curves\n  fidelity:\n    unit: "patch:8"\n    steps: 10\n    gap: ">= -1"')
    result = project.runpytest_inprocess()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*specs/x.saliency.yaml:*: checks[[]0[]].fidelity.unit: unit patch:8 cuts the 16x16 images into 4 units, "
            "too few for the 10 steps: 6 of them would remove the same units as another (flat curves); "
            "use a smaller unit or fewer steps"
        ]
    )


def test_a_model_that_returns_probabilities_is_refused_with_the_setting_that_takes_them(
    write_spec: WriteSpec, project: pytest.Pytester
) -> None:
    project.makepyfile(softmax=SOFTMAX)
    write_spec(model="factory: softmax:probabilities")
    refused = project.runpytest_inprocess()
    refused.assert_outcomes(failed=1)
    refused.stdout.fnmatch_lines(
        [
            "specs/x.saliency.yaml:3:3: model: the model returns probabilities, not logits (every row of its (N, 3) "
            "outputs is >= 0 and sums to 1): set model.output_kind: probabilities (taken as log-probabilities), "
            "or return logits"
        ]
    )
    write_spec(model="factory: softmax:probabilities\noutput_kind: probabilities")
    taken = project.runpytest_inprocess()
    taken.assert_outcomes(passed=1)  # log-probabilities' gradient still lies on the object alone


@pytest.mark.parametrize(
    ("variant", "arguments"),
    [("byte-order-mark", {"bom": True}), ("upper-case-mask-suffix", {"mask_suffix": ".PNG"})],
)
def test_image_folders_read_as_documented(
    write_spec: WriteSpec,
    project: pytest.Pytester,
    helpers: SimpleNamespace,
    variant: str,
    arguments: dict[str, object],
) -> None:
    image_folder(project.path, helpers, **arguments)  # type: ignore[arg-type]
    write_spec(data=FOLDER)
    result = project.runpytest_inprocess()
    result.assert_outcomes(passed=1)
