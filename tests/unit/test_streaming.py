"""Merging shard results and planning needs (pytest_saliency.streaming)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pytest_saliency.errors import SpecRuntimeError
from pytest_saliency.streaming import Need, Plan, ShardResult, merge, shard_ranges

COV, LOC = Need(0, "grad"), Need(1, "grad")


def shard(start: int, stop: int, *, failing: bool = False) -> ShardResult:
    """A shard of samples ``start..stop`` whose ``COV`` score is the sample index."""
    index = torch.arange(start, stop)
    base = {"index": index, "label": index % 2, "prediction": index % 3, "target": index % 2}
    errors = {LOC: SpecRuntimeError(("checks", 1), "broken")} if failing else {}
    statistics = {COV: {"iou": index.float()}, **({} if failing else {LOC: {"auc": -index.float()}})}
    fields = {"site": np.array([f"s{i}" for i in range(start, stop)])}
    return ShardResult(base, fields, statistics, errors, [], classes=3)


def test_shards_merge_in_sample_order_whatever_order_they_arrive_in() -> None:
    result = merge([shard(4, 6), shard(0, 2), shard(2, 4)], Plan((COV, LOC)))
    assert result.indices.tolist() == list(range(6))
    assert result.of(COV)["iou"].tolist() == [0, 1, 2, 3, 4, 5]
    assert result.of(LOC)["auc"].tolist() == [0, -1, -2, -3, -4, -5]
    assert result.fields["site"].tolist() == [f"s{i}" for i in range(6)]
    assert result.correct.tolist() == [True, True, False, False, False, False]


def test_a_need_that_failed_on_one_shard_raises_its_error_and_the_others_stand() -> None:
    result = merge([shard(0, 2), shard(2, 4, failing=True)], Plan((COV, LOC)))
    assert result.of(COV)["iou"].tolist() == [0, 1, 2, 3]
    with pytest.raises(SpecRuntimeError, match="broken"):
        result.of(LOC)


def test_plans_add_without_repeating_a_need_and_leave_out_what_is_done() -> None:
    plan = Plan((COV,)) + Plan((LOC, COV))
    assert plan.needs == (COV, LOC)
    assert plan.without([COV]).needs == (LOC,)


@pytest.mark.parametrize(("count", "size"), [(0, 4), (1, 4), (8, 4), (9, 4), (5, 1)])
def test_shard_ranges_cover_every_sample_once_in_order(count: int, size: int) -> None:
    ranges = shard_ranges(count, size)
    assert [i for part in ranges for i in part] == list(range(count))
    assert all(len(part) <= size for part in ranges)


def test_a_shard_whose_every_sample_was_skipped_adds_only_its_lines() -> None:
    empty = shard(2, 2)
    empty.statistics, empty.skipped = {}, ["b.png (sample 2): cannot read it"]
    result = merge([shard(0, 2), empty, shard(3, 4)], Plan((COV,)))
    assert result.indices.tolist() == [0, 1, 3] and result.of(COV)["iou"].tolist() == [0, 1, 3]
    assert result.skipped == ["b.png (sample 2): cannot read it"]
    assert len(merge([empty], Plan((COV,)))) == 0


def test_the_local_runner_leaves_a_need_that_failed_out_of_the_later_shards() -> None:
    from types import SimpleNamespace

    from pytest_saliency.engine import LocalRunner

    asked: list[tuple[Need, ...]] = []

    class Batch(list[int]):
        skipped: list[str] = []

    def run(plan: Plan, batch: Batch) -> ShardResult:
        asked.append(plan.needs)
        return shard(batch[0], batch[-1] + 1, failing=LOC in plan.needs)

    ranges = [range(0, 2), range(2, 4), range(4, 6)]
    source = SimpleNamespace(stream=lambda shards: (Batch(r) for r in shards))
    worker = SimpleNamespace(source=source, run=run, result_cache=None)
    done: list[int] = []
    parts = LocalRunner()(worker, Plan((COV, LOC)), ranges, done.append)  # type: ignore[arg-type]
    assert asked == [(COV, LOC), (COV,), (COV,)]
    result = merge(parts, Plan((COV, LOC)))
    assert result.of(COV)["iou"].tolist() == [0, 1, 2, 3, 4, 5]
    with pytest.raises(SpecRuntimeError, match="broken"):
        result.of(LOC)
