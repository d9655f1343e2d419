"""Run-time mistakes, the catalogue of ``docs/errors.md``: each one fails every item it touches
with one line ``spec:line:col: where: what (fix)`` at the spec key that named the culprit, with
no traceback, and a non-zero exit; nothing in it passes silently. ``--saliency-debug`` (or
``-vv``) adds the original traceback.

Each :data:`CATALOGUE` entry runs a Shared Interest check and a fidelity check (the two code
paths that met broken inputs differently before), and :func:`test_the_docs_list_every_entry`
keeps ``docs/errors.md`` in step with the messages asserted here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

WriteSpec = Callable[..., Path]
ROOT = Path(__file__).resolve().parents[2]

# Models around the tiny model (tests/integration/conftest.py) that return what real networks
# return: tuples, dicts, one logit, maps, NaN; that raise; that run out of memory.
VARIANTS = '''\
import torch
from torch import nn

import tinymodel


class Variant(nn.Module):
    def __init__(self, kind, num_classes=3, limit=0):
        super().__init__()
        self.inner = tinymodel.build(num_classes)
        self.kind = kind
        self.limit = limit

    def forward(self, x):
        hungry = self.kind == "hungry" or self.kind == "hungry_for_gradients" and torch.is_grad_enabled()
        if hungry and x.shape[0] > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        z = self.inner(x)
        if self.kind == "tuple":
            return z, z.sum(1)
        if self.kind == "dict":
            return {"aux": z.sum(1), "logits": z}
        if self.kind == "binary":
            return z[:, 1] - z[:, 0]
        if self.kind == "map":
            return z[:, :, None, None].expand(-1, -1, 4, 4)
        if self.kind == "nan":
            return z * float("nan")
        if self.kind == "raises":
            raise ZeroDivisionError("float division by zero")
        return z


def build(kind, num_classes=3, limit=0):
    return Variant(kind, num_classes, limit)


class Pairs(torch.utils.data.Dataset):
    """Samples of two shapes: sample 3's image is 8x8."""

    def __len__(self):
        return 6

    def __getitem__(self, index):
        size = 8 if index == 3 else 16
        return torch.zeros(3, size, size), torch.zeros(size, size, dtype=torch.bool), 0


def pairs():
    return Pairs()
'''

CHECKS = """\
- id: cov
  shared_interest:
    iou: {mean: ">= 0.9"}
- id: faithful
  fidelity:
    steps: 2
    gap: ">= -1"
"""


def variant(kind: str, extra: str = "") -> str:
    return f"factory: variants:build\nkwargs: {{kind: {kind}}}{extra}"


def with_arrays(name: str, change: Callable[[dict[str, np.ndarray]], None]) -> Callable[[Path, SimpleNamespace], None]:
    """A file ``name`` holding the project's arrays after ``change``."""

    def write(directory: Path, helpers: SimpleNamespace) -> None:
        arrays = helpers.make_arrays()
        change(arrays)
        (directory / name).write_bytes(helpers.npz_bytes(arrays))

    return write


def _nan_in_sample_2(arrays: dict[str, np.ndarray]) -> None:
    arrays["images"][2, 0, 5, 5] = np.nan


def _times_255(arrays: dict[str, np.ndarray]) -> None:
    arrays["images"] *= 255


def _normalised(arrays: dict[str, np.ndarray]) -> None:
    arrays["images"] -= 0.5


def _fractional_labels(arrays: dict[str, np.ndarray]) -> None:
    arrays["labels"] = np.array([0.37, 1, 2, 0, 1, 2])


def _label_5(arrays: dict[str, np.ndarray]) -> None:
    arrays["labels"] = np.array([0, 1, 2, 5, 1, 2])


def _negative_label(arrays: dict[str, np.ndarray]) -> None:
    arrays["labels"] = np.array([0, 1, -1, 0, 1, 2])


def _corrupt_member(directory: Path, helpers: SimpleNamespace) -> None:
    """A valid zip directory and headers, but the images' bytes damaged (a bad CRC on read)."""
    data = bytearray(helpers.npz_bytes(helpers.make_arrays()))
    start = data.index(b"images.npy") + 200  # past its local header and .npy header, into the pixels
    data[start : start + 64] = b"\xff" * 64
    (directory / "corrupt.npz").write_bytes(bytes(data))


def _folder(directory: Path, helpers: SimpleNamespace, *, odd: str = "") -> None:
    """``images/``, ``masks/`` and ``labels.csv`` from the project's arrays; ``odd`` spoils
    sample 1: ``corrupt`` (not an image), ``size`` (20x20). (A listed image that does not
    exist is found by validation: tests/unit/spec/test_validate_image_data.py.)"""
    from PIL import Image

    arrays = helpers.make_arrays()
    (directory / "images").mkdir()
    (directory / "masks").mkdir()
    rows = ["file,label"]
    for index, (image, mask, label) in enumerate(zip(arrays["images"], arrays["masks"], arrays["labels"], strict=True)):
        name = f"s{index}.png"
        rows.append(f"{name},{label}")
        picture = Image.fromarray((image.transpose(1, 2, 0) * 255).astype(np.uint8))
        outline = Image.fromarray(mask.astype(np.uint8) * 255)
        if index == 1 and odd == "size":
            picture, outline = picture.resize((20, 20)), outline.resize((20, 20))
        picture.save(directory / "images" / name)
        outline.save(directory / "masks" / name)
        if index == 1 and odd == "corrupt":
            (directory / "images" / name).write_bytes(b"not a png at all")
    (directory / "labels.csv").write_text("\n".join(rows) + "\n")


FOLDER = "folder: {images: ../images, masks: ../masks, labels: ../labels.csv}\nclasses: [circle, square, triangle]"


@dataclass(frozen=True)
class Case:
    """A broken input: the spec (``spec_yaml`` arguments), files to write, the text in the spec
    the line points at, and the message after ``path:line:col: ``."""

    spec: dict[str, str]
    at: str
    message: str
    files: Callable[[Path, SimpleNamespace], None] | None = None
    options: tuple[str, ...] = ()
    checks: str = CHECKS
    failed: int = 2


def broken_npz(name: str, change: Callable[[dict[str, np.ndarray]], None], message: str) -> Case:
    """A spec reading ``name``: the project's arrays after ``change``; the line points at the path."""
    return Case({"data": f"npz: ../{name}"}, files=with_arrays(name, change), at=f"../{name}", message=message)


CATALOGUE: dict[str, Case] = {
    # --- data values ---------------------------------------------------------------------------
    "nan-in-images": broken_npz(
        "nan.npz",
        _nan_in_sample_2,
        "data.npz: images hold NaN or inf in 1 of 6 samples (first: sample 2): clean or drop those images",
    ),
    "images-in-0-255": broken_npz(
        "bright.npz",
        _times_255,
        "data.npz: float32 images range over [0, 255], outside [0, 1]: store them as uint8, "
        "or set data.scale: 255 to divide them",
    ),
    "images-already-normalised": broken_npz(
        "centred.npz",
        _normalised,
        "data.npz: images range over [-0.5, 0.5], outside [0, 1]: if they are already normalised, "
        "store them unnormalised in [0, 1] and give the normalisation as model.normalize",
    ),
    "fractional-labels": broken_npz(
        "fractional.npz",
        _fractional_labels,
        "data.npz: labels must be integer class indices, got 0.37 (sample 0): store class indices 0, 1, ...",
    ),
    "negative-label": broken_npz(
        "negative.npz",
        _negative_label,
        "data.npz: label -1 (sample 2) is negative: labels are class indices 0, 1, ...",
    ),
    "label-beyond-the-logits": broken_npz(
        "five.npz",
        _label_5,
        "data.npz: label 5 (sample 3) is outside the model's 3 classes (its logits are (N, 3)): "
        "labels are class indices 0..2",
    ),
    "classes-do-not-match-the-logits": Case(
        {"data": "npz: ../data.npz\nclasses: [circle, square, triangle, star]"},
        at="[circle, square, triangle, star]",
        message="data.classes: data.classes names 4 classes but the model gives 3 logits",
    ),
    # --- shapes ------------------------------------------------------------------------------
    "dataset-samples-of-two-shapes": Case(
        {"data": "factory: variants:pairs"},
        at="variants:pairs",
        message="data.factory: sample 3's images is (3, 8, 8) but sample 0's is (3, 16, 16): "
        "every sample must have the same shape",
    ),
    "folder-images-of-two-sizes": Case(
        {"data": FOLDER},
        files=lambda directory, helpers: _folder(directory, helpers, odd="size"),
        at="../images",
        message="data.folder.images: ../images/s1.png is 20x20 but ../images/s0.png is 16x16: "
        "to give images one size, add data.transform: {resize: [16, 16]}",
    ),
    "model-rejects-the-image-shape": Case(
        {"model": "factory: torch.nn:Linear\nkwargs: {in_features: 5, out_features: 3}"},
        at="factory: torch.nn:Linear",
        message="model: the model failed on images of shape (3, 16, 16): RuntimeError: "
        "mat1 and mat2 shapes cannot be multiplied *",
    ),
    # --- model outputs -------------------------------------------------------------------------
    "model-returns-a-tuple": Case(
        {"model": variant("tuple")},
        at="factory: variants",
        message="model: the model returns a tuple of 2 (tensor (6, 3), tensor (6,)): pick the logits with model.output: 0",
    ),
    "output-key-not-in-the-dict": Case(
        {"model": variant("dict", "\noutput: logit")},
        at="logit",
        message="model.output: the model's output has no key 'logit' (its keys: 'aux', 'logits')",
    ),
    "model-returns-maps": Case(
        {"model": variant("map")},
        at="factory: variants",
        message="model: the model's output is (N, 3, 4, 4) for 6 images; expected logits (N, classes): "
        "reduce it to one score per class in the factory",
    ),
    "model-returns-nan": Case(
        {"model": variant("nan")},
        at="factory: variants",
        message="model: the model's logits are NaN or inf for 6 of 6 images (first: sample 0): "
        "check the weights and the model's numerics",
    ),
    "model-raises": Case(
        {"model": variant("raises")},
        at="factory: variants",
        message="model: the model failed on images of shape (3, 16, 16): ZeroDivisionError: float division by zero",
    ),
    # --- files ---------------------------------------------------------------------------------
    "corrupt-image-file": Case(
        {"data": FOLDER},
        files=lambda directory, helpers: _folder(directory, helpers, odd="corrupt"),
        at="../images",
        message="data.folder.images: ../images/s1.png (sample 1): cannot read the image: cannot identify image file * "
        "(replace or remove the file, or set data.on_bad_sample: skip)",
    ),
    "corrupt-npz-member": Case(
        {"data": "npz: ../corrupt.npz"},
        files=_corrupt_member,
        at="../corrupt.npz",
        message="data.npz: cannot read ../corrupt.npz: Bad CRC-32 for file 'images.npy' (write the file again)",
    ),
    # --- devices -------------------------------------------------------------------------------
    # (--saliency-device naming a missing GPU: tests/integration/test_outcomes.py)
    # --- out of memory -------------------------------------------------------------------------
    "out-of-memory-in-attributions": Case(
        {
            "model": "factory: variants:build\nkwargs: {kind: hungry_for_gradients, limit: 0}",
            "data": "npz: ../data.npz\nbatch_size: 4",
        },
        at="{method",
        message="attributions.grad: out of memory at batch size 4 and again at 2: lower data.batch_size (e.g. 1)",
        checks=CHECKS.split("- id: faithful")[0],
        failed=1,
    ),
    "out-of-memory-in-curves": Case(
        {"model": "factory: variants:build\nkwargs: {kind: hungry, limit: 6}"},
        at="batch_size: 32",
        message="checks[0].fidelity: out of memory at batch size 32 and again at 16: "
        "lower checks[0].fidelity.batch_size (e.g. 4)",
        checks='- id: faithful\n  fidelity:\n    batch_size: 32\n    steps: 2\n    gap: ">= -1"\n',
        failed=1,
    ),
    "out-of-memory-in-robustness": Case(
        {
            "model": "factory: variants:build\nkwargs: {kind: hungry, limit: 2}",
            "data": "npz: ../data.npz\nbatch_size: 2",
        },
        at="batch_size: 32",
        message="checks[0].robustness: out of memory at batch size 32 and again at 16: "
        "lower checks[0].robustness.batch_size (e.g. 4)",
        checks='- id: stable\n  robustness:\n    batch_size: 32\n    infidelity: {mean: "<= 10"}\n',
        failed=1,
    ),
}


@pytest.fixture
def variants(project: pytest.Pytester) -> pytest.Pytester:
    project.makepyfile(variants=VARIANTS)
    return project


def failure_blocks(output: str) -> list[str]:
    """The text of each failure section, between its ``___ id ___`` header and the next."""
    section = output.split("= FAILURES =", 1)[1].split("saliency summary", 1)[0]
    return [block.strip().splitlines()[0] for block in re.split(r"_{3,} \S+ _{3,}\n", section)[1:]]


@pytest.mark.parametrize("case", CATALOGUE.values(), ids=CATALOGUE.keys())
def test_each_entry_is_one_positioned_line_in_every_item(
    case: Case, variants: pytest.Pytester, write_spec: WriteSpec, helpers: SimpleNamespace
) -> None:
    if case.files is not None:
        case.files(variants.path, helpers)
    text = write_spec(checks=case.checks, **case.spec).read_text()
    line = f"specs/x.saliency.yaml:{helpers.position(text, case.at)}: {case.message}"

    result = variants.runpytest_inprocess(*case.options)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(failed=case.failed)
    blocks = failure_blocks(result.stdout.str())
    assert len(blocks) == case.failed, result.stdout.str()
    pattern = "*".join(helpers.literal(part) for part in line.split("*"))  # "*" in a message: any text
    for block in blocks:
        pytest.LineMatcher([block]).fnmatch_lines([pattern])
    helpers.assert_no_traceback(result.stdout.str())


def test_the_fix_each_message_names_works(
    variants: pytest.Pytester, write_spec: WriteSpec, helpers: SimpleNamespace
) -> None:
    """``data.scale: 255``, ``model.output: 0`` and ``model.output: logits`` make the broken
    inputs above pass: the message's fix is the right one."""
    with_arrays("bright.npz", _times_255)(variants.path, helpers)
    write_spec("scaled", data="npz: ../bright.npz\nscale: 255")
    write_spec("tuple", model=variant("tuple", "\noutput: 0"))
    write_spec("dict", model=variant("dict", "\noutput: logits"))
    result = variants.runpytest_inprocess()
    result.assert_outcomes(passed=3)


def test_a_single_logit_is_a_binary_classifier(
    variants: pytest.Pytester, write_spec: WriteSpec, helpers: SimpleNamespace
) -> None:
    """``(N,)`` logits ``z`` become the classes ``(-z/2, z/2)``: predictions follow the sign and
    attributions of either class are those of ``z``."""

    def two_classes(arrays: dict[str, np.ndarray]) -> None:
        arrays["labels"] = arrays["labels"] % 2
        arrays["images"][:, 2] = arrays["labels"][:, None, None] / 2

    with_arrays("binary.npz", two_classes)(variants.path, helpers)
    checks = CHECKS + "- id: patterns\n  patterns:\n    max_fraction: {distractor: 0.0}\n"
    model = "factory: variants:build\nkwargs: {kind: binary, num_classes: 2}"
    write_spec(model=model, data="npz: ../binary.npz\nclasses: [negative, positive]", checks=checks)
    result = variants.runpytest_inprocess()
    result.assert_outcomes(passed=3)  # distractor = 0: every prediction is right
    rows = helpers.summary_rows(result.stdout.str())
    assert {row["measured"]: row["value"] for row in rows}["iou.mean"] == "1.0000"


def test_out_of_memory_once_is_retried_at_half_the_batch(
    variants: pytest.Pytester, write_spec: WriteSpec, helpers: SimpleNamespace
) -> None:
    write_spec(
        model="factory: variants:build\nkwargs: {kind: hungry, limit: 2}",
        data="npz: ../data.npz\nbatch_size: 4",
        checks=CHECKS.split("- id: faithful")[0],
    )
    result = variants.runpytest_inprocess("-W", "always::RuntimeWarning")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        ["*data.batch_size 4 ran out of memory; ran at 2 instead (set data.batch_size: 2 to skip the retry)*"]
    )


def test_any_other_exception_is_one_line_at_the_check(
    variants: pytest.Pytester, write_spec: WriteSpec, helpers: SimpleNamespace
) -> None:
    """An exception from inside a check (here a metric that breaks) names the check, the
    exception and how to see its traceback."""
    variants.makeconftest(
        """
        import dataclasses

        from pytest_saliency.checks import registry

        working = registry.KINDS["shared_interest"]

        def pytest_configure():
            registry.KINDS["shared_interest"] = dataclasses.replace(working, decide=lambda request: {}["iou"])

        def pytest_unconfigure():
            registry.KINDS["shared_interest"] = working
        """
    )
    text = write_spec().read_text()
    result = variants.runpytest_inprocess()
    result.assert_outcomes(failed=1)
    line = (
        f"specs/x.saliency.yaml:{helpers.position(text, 'id: cov')}: checks[0]: "
        "check 'cov' [grad] raised KeyError: 'iou' (--saliency-debug shows the traceback)"
    )
    assert failure_blocks(result.stdout.str()) == [line]
    helpers.assert_no_traceback(result.stdout.str())


@pytest.mark.parametrize("option", ["--saliency-debug", "-vv"])
def test_debug_shows_the_original_traceback_below_the_line(
    option: str, variants: pytest.Pytester, write_spec: WriteSpec, helpers: SimpleNamespace
) -> None:
    text = write_spec(model=variant("raises"), checks=CHECKS.split("- id: faithful")[0]).read_text()
    result = variants.runpytest_inprocess(option)
    result.assert_outcomes(failed=1)
    output = result.stdout.str()
    line = (
        f"specs/x.saliency.yaml:{helpers.position(text, 'factory: variants')}: model: "
        "the model failed on images of shape (3, 16, 16): ZeroDivisionError: float division by zero"
    )
    assert failure_blocks(output) == [line]
    assert "Traceback" in output or "variants.py" in output, output
    assert 'raise ZeroDivisionError("float division by zero")' in output


def test_the_docs_list_every_entry() -> None:
    """``docs/errors.md`` shows each catalogue entry's message (its fixed start, up to the first
    wildcard), under the entry's name."""
    docs = (ROOT / "docs" / "errors.md").read_text(encoding="utf-8")
    for name, case in CATALOGUE.items():
        assert f"`{name}`" in docs, name
        assert case.message.split("*")[0] in docs, name
