"""The streaming pass: the same numbers whatever the shard and batch sizes, and only what the
selected items need is computed."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

WriteSpec = Callable[..., Path]

METHODS = """\
grad: {method: Saliency, params: {abs: true}}
noise: {method: random}
smooth: {method: Saliency, noise_tunnel: {nt_type: smoothgrad, nt_samples: 3, stdevs: 0.2}}
"""
CHECKS = """\
- id: cov
  shared_interest:
    iou: {mean: ">= 0.0"}
    gtc: {median: ">= 0.0"}
- id: pat
  patterns: {max_fraction: {distractor: 1.0}}
- id: loc
  localisation:
    pointing_game: {mean: ">= 0.0"}
    auc: {mean: ">= 0.0"}
- id: cx
  complexity:
    sparseness: {mean: ">= 0.0"}
"""


def measured(path: Path) -> dict[str, Any]:
    """Each item's measurements and per-sample scores from a ``--saliency-json`` file."""
    results = json.loads(path.read_text())["results"]
    return {
        result["nodeid"]: (result["measurements"], result.get("per_sample"), result.get("pattern_counts"))
        for result in results
    }


@pytest.mark.parametrize("setting", ["data.shard_size=1", "data.shard_size=4", "data.batch_size=1"])
def test_every_number_is_the_same_whatever_the_shard_and_batch_sizes(
    project: pytest.Pytester, write_spec: WriteSpec, setting: str
) -> None:
    """Six samples in one shard (the default) against shards of 1 and 4 and batches of 1,
    random and noise-tunnel methods included: their draws are seeded per sample."""
    write_spec(looks_at="both", attributions=METHODS, checks=CHECKS)
    whole = project.runpytest_inprocess("--saliency-json", "whole.json")
    whole.assert_outcomes(passed=12)
    sharded = project.runpytest_inprocess("--saliency-json", "sharded.json", "--saliency-set", setting)
    sharded.assert_outcomes(passed=12)
    assert measured(project.path / "sharded.json") == measured(project.path / "whole.json")


BROKEN = """\
- id: cov
  shared_interest:
    iou: {mean: ">= 0.0"}
- id: topk
  localisation:
    top_k_intersection: {mean: ">= 0.5"}
    k: 1000000
"""


def test_a_check_that_fails_on_a_shard_fails_only_its_own_items(
    project: pytest.Pytester, write_spec: WriteSpec, helpers: Any
) -> None:
    write_spec(checks=BROKEN)
    result = project.runpytest_inprocess()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*k = 1000000 is more than the 256 pixels of an image: give k <= 256"])
    helpers.assert_no_traceback(result.stdout.str())


def test_items_left_out_with_k_cost_nothing(project: pytest.Pytester, write_spec: WriteSpec) -> None:
    """The deselected check is never computed: its error never shows."""
    write_spec(checks=BROKEN)
    result = project.runpytest_inprocess("-k", "cov")
    result.assert_outcomes(passed=1, deselected=1)
    assert "1000000" not in result.stdout.str()


def test_the_saliency_engine_fixture_gives_a_shard_to_tests_written_in_python(
    project: pytest.Pytester, write_spec: WriteSpec
) -> None:
    """The tiny model's gradient map is the object itself: IoU 1 on every sample."""
    write_spec(checks=BROKEN)
    project.makepyfile(
        test_python="""
        import torch

        def test_scores(saliency_engine):
            shard = saliency_engine("specs/x.saliency.yaml").shard(range(4))
            assert shard.attributions("grad").shape == (4, 3, 16, 16)
            assert shard.shared_interest("grad").iou.tolist() == [1.0] * 4
            assert shard.correct.all() and shard.indices.tolist() == [0, 1, 2, 3]
        """
    )
    result = project.runpytest_inprocess("test_python.py")
    result.assert_outcomes(passed=1)
