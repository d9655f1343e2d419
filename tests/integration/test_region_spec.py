"""``region`` checks from YAML through pytest, on models whose decomposition is known exactly.

The generated project (``project`` fixture, ``tests/integration/conftest.py``) holds ``data.npz``:
six 16x16 images whose channel 0 is the object mask, channel 1 the ``decoy`` mask (3x3 at
(12, 12)) and channel 2 the class code, with a ``decoy`` extra mask. ``regionmodel.Reader``
is a plain ``nn.Sequential`` that contextual decomposition walks: a 1x1 convolution that reads
one channel, average pooling and a linear head (weights 1, 2, 4, no biases: every centred logit
is non-zero). Reading the decoy channel, every logit comes from the decoy patch: the region's
share is exactly 1; reading the object channel, the patch holds nothing: the share is exactly 0.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

import pytest_saliency.checks.region  # noqa: F401  (imported once here, not in every in-process run)

READER = """\
import torch
from torch import nn

CHANNEL = {"object": 0, "decoy": 1}


def build(num_classes=3, reads="object"):
    conv = nn.Conv2d(3, 1, kernel_size=1, bias=False)
    head = nn.Linear(1, num_classes, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, CHANNEL[reads]] = 1.0
        head.weight.copy_((2.0 ** torch.arange(num_classes)).view(-1, 1))
    return nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), head)
"""

DECOY_UNUSED = """\
- id: decoy-unused
  region:
    mask: decoy
    method: {method}
    share: {{mean: "<= 0.05"}}
"""


def reader(reads: str) -> str:
    return f"factory: regionmodel:build\nkwargs: {{reads: {reads}}}"


@pytest.fixture
def project_with_reader(project: pytest.Pytester) -> pytest.Pytester:
    project.makepyfile(regionmodel=READER)
    return project


@pytest.mark.parametrize("method", ["contextual_decomposition", "occlusion"])
def test_model_that_reads_the_decoy_fails(
    project_with_reader: pytest.Pytester, write_spec, helpers: SimpleNamespace, method: str
) -> None:
    path = write_spec(model=reader("decoy"), checks=DECOY_UNUSED.format(method=method))
    result = project_with_reader.runpytest_inprocess()
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(failed=1)
    location = f"specs/x.saliency.yaml:{helpers.position(path.read_text(), '- id: decoy-unused').split(':')[0]}"
    result.stdout.fnmatch_lines(
        [
            f"{location}: check 'decoy-unused' failed: share.mean = 1 (want <= 0.05)",
            "  measured    value            threshold  status",
            "  share.mean  1.0000 ± 0.0000  <= 0.05    FAIL",
            "  samples: 6",
            f"  region mask 'decoy', {method.replace('_', ' ')}; samples with the largest share (of 6; 0 undefined, 0 with an empty region):",
            "  sample     label  predicted  share  signed",
            "       0    circle   triangle  1.000  -1.000",
        ],
        consecutive=True,
    )
    rows = helpers.summary_rows(result.stdout.str())
    assert [(row["check"], row["method"], row["measured"], row["value"], row["status"]) for row in rows] == [
        ("decoy-unused", "", "share.mean", "1.0000", "failed")
    ]
    helpers.assert_no_traceback(result.stdout.str())


@pytest.mark.parametrize("method", ["contextual_decomposition", "occlusion"])
def test_model_that_reads_the_object_passes(
    project_with_reader: pytest.Pytester, write_spec, helpers: SimpleNamespace, method: str
) -> None:
    write_spec(model=reader("object"), checks=DECOY_UNUSED.format(method=method))
    result = project_with_reader.runpytest_inprocess()
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=1)
    (row,) = helpers.summary_rows(result.stdout.str())
    assert (row["check"], row["measured"], row["status"]) == ("decoy-unused", "share.mean", "passed")
    # CD: exactly 0. Occlusion: the fill (the object channel's mean outside the patch) adds a
    # little object inside the patch (0.58 on top of 16), so the logits move: about 0.035.
    assert 0.0 <= float(row["value"]) <= 0.05


def test_share_and_interaction_with_a_box_run_once(
    project_with_reader: pytest.Pytester, write_spec, helpers: SimpleNamespace
) -> None:
    """One item per check (no attribution method in the id); a box over the decoy corner."""
    checks = """\
- id: corner
  region:
    box: [12, 12, 15, 15]
    share: {max: "<= 0.05"}
    interaction: {mean: ">= -0.01", min: "<= 0.01"}
"""
    write_spec(model=reader("object"), checks=checks)
    result = project_with_reader.runpytest_inprocess("-v")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*specs/x.saliency.yaml::corner PASSED*"])
    rows = helpers.summary_rows(result.stdout.str())
    assert [(row["measured"], row["value"]) for row in rows] == [
        ("share.max", "0.0000"),
        ("interaction.mean", "0.0000"),
        ("interaction.min", "0.0000"),
    ]


def test_model_cd_cannot_walk_is_a_one_line_error_pointing_at_method(
    project: pytest.Pytester, write_spec, helpers: SimpleNamespace
) -> None:
    """``tinymodel.Focus`` computes in its own forward: CD refuses it; occlusion works."""
    checks = '- id: decoy-unused\n  region:\n    mask: decoy\n    method: contextual_decomposition\n    share: {mean: "<= 0.05"}\n'
    path = write_spec(looks_at="decoy", checks=checks)
    result = project.runpytest_inprocess()
    result.assert_outcomes(failed=1)
    where = helpers.position(path.read_text(), "contextual_decomposition")
    result.stdout.fnmatch_lines(
        [
            f"specs/x.saliency.yaml:{where}: *contextual decomposition cannot walk the model (tinymodel.Focus): "
            "it has no CD rule for operator.pow (register one with *register_rule), or use method: occlusion"
        ]
    )
    helpers.assert_no_traceback(result.stdout.str())

    path.write_text(path.read_text().replace("contextual_decomposition", "occlusion"))
    result = project.runpytest_inprocess()
    result.assert_outcomes(failed=1)  # Focus reads the decoy: occluding it removes every logit
    result.stdout.fnmatch_lines(["*check 'decoy-unused' failed: share.mean = 1 (want <= 0.05)"])


def test_unknown_mask_is_refused_before_anything_runs(
    project_with_reader: pytest.Pytester, write_spec, helpers: SimpleNamespace
) -> None:
    path = write_spec(
        model=reader("object"), checks=DECOY_UNUSED.format(method="occlusion").replace("mask: decoy", "mask: decoi")
    )
    result = project_with_reader.runpytest_inprocess()
    assert result.ret != pytest.ExitCode.OK
    result.stdout.fnmatch_lines([f"*specs/x.saliency.yaml:{helpers.position(path.read_text(), 'decoi')}: *decoi*"])
