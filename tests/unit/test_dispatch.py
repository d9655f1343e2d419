"""What each shard is sent (pytest_saliency.dispatch), the same for the in-process and the Ray
runner: a need that raised on one shard is not sent with the later ones."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

import pytest
import torch

from pytest_saliency import cluster, engine
from pytest_saliency.dispatch import Dispatch
from pytest_saliency.errors import SpecRuntimeError
from pytest_saliency.streaming import Need, Plan, ShardResult, merge

COV, LOC = Need(0, "grad"), Need(1, "grad")
RANGES = [range(0, 2), range(2, 4), range(4, 6)]


class Batch(list[int]):
    skipped: list[str] = []

    @property
    def indices(self) -> torch.Tensor:
        return torch.tensor(self, dtype=torch.long)


class Worker:
    """What a runner reads of a :class:`~pytest_saliency.streaming.ShardWorker`: its source
    (which yields no batch for a shard whose every sample it skipped, here those of ``skipped``),
    with no result cache."""

    def __init__(self, skipped: tuple[range, ...] = ()) -> None:
        self.source = SimpleNamespace(stream=lambda shards: (Batch(r) for r in shards if r not in skipped))
        self.loaded = SimpleNamespace()
        self.search_paths = ()
        self.result_cache = None


def shard(samples: list[int], plan: Plan) -> ShardResult:
    """The result of ``plan`` on ``samples``: ``COV`` is each sample's index, ``LOC`` raises."""
    index = torch.tensor(samples)
    base = {"index": index, "label": index, "prediction": index, "target": index}
    errors = {LOC: SpecRuntimeError(("checks", 1), f"broken at {samples[0]}")} if LOC in plan.needs else {}
    return ShardResult(base, {}, {COV: {"iou": index.float()}}, errors, [], classes=6)


def computed(asked: list[tuple[Need, ...]], plan: Plan, samples: list[int]) -> ShardResult:
    """:func:`shard`, noting what it was sent."""
    asked.append(plan.needs)
    return shard(samples, plan)


def run_locally(monkeypatch: pytest.MonkeyPatch, asked: list[tuple[Need, ...]]) -> list[ShardResult]:
    monkeypatch.setattr(engine, "compute_shard", lambda worker, plan, batch: computed(asked, plan, batch))
    return engine.LocalRunner()(Worker(), Dispatch(Plan((COV, LOC))), RANGES, lambda done: None)  # type: ignore[arg-type]


def run_on_ray(monkeypatch: pytest.MonkeyPatch, asked: list[tuple[Need, ...]]) -> list[ShardResult]:
    """One actor of a stand-in Ray: each shard is submitted when the one before it came back."""

    class Reference:
        def __init__(self, value: ShardResult) -> None:
            self.value = value

    def remote(key: str, loaded: object, directory: str, paths: object, plan: Plan, indices: range) -> Reference:
        return Reference(computed(asked, plan, list(indices)))

    fake = SimpleNamespace(
        put=lambda value: value,
        wait=lambda references, num_returns: (references[:num_returns], references[num_returns:]),
        get=lambda reference: reference.value,
        exceptions=SimpleNamespace(RayTaskError=type("TaskError", (Exception,), {}), RayError=RuntimeError),
    )
    monkeypatch.setattr(cluster, "_ray", lambda: fake)
    runner = cluster.RayRunner()
    runner._actors = [SimpleNamespace(run_range=SimpleNamespace(remote=remote))]
    return runner(Worker(), Dispatch(Plan((COV, LOC))), RANGES, lambda done: None)  # type: ignore[arg-type]


@pytest.mark.parametrize("run", [run_locally, run_on_ray], ids=["local", "ray"])
def test_each_runner_sends_a_need_that_raised_with_no_later_shard(
    monkeypatch: pytest.MonkeyPatch, run: Callable[[pytest.MonkeyPatch, list[tuple[Need, ...]]], list[ShardResult]]
) -> None:
    asked: list[tuple[Need, ...]] = []
    parts = run(monkeypatch, asked)
    assert asked == [(COV, LOC), (COV,), (COV,)]
    result = merge(parts, Plan((COV, LOC)))
    assert result.of(COV)["iou"].tolist() == [0, 1, 2, 3, 4, 5]
    with pytest.raises(SpecRuntimeError, match="broken at 0"):
        result.of(LOC)


def test_the_local_runner_goes_on_when_a_shard_yields_no_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[tuple[Need, ...]] = []
    monkeypatch.setattr(engine, "compute_shard", lambda worker, plan, batch: computed(asked, plan, batch))
    worker = Worker(skipped=(RANGES[0],))
    parts = engine.LocalRunner()(worker, Dispatch(Plan((COV, LOC))), RANGES, lambda done: None)  # type: ignore[arg-type]
    assert asked == [(COV, LOC), (COV,)]
    assert merge(parts, Plan((COV, LOC))).of(COV)["iou"].tolist() == [2, 3, 4, 5]


def test_the_dispatch_keeps_the_first_error_of_a_need() -> None:
    plan = Plan((COV, LOC))
    dispatch = Dispatch(plan)
    assert dispatch.plan_for(range(0, 2)) == plan
    dispatch.received(shard([2, 3], plan))  # shards may come back in any order
    dispatch.received(shard([0, 1], plan))
    assert dispatch.plan_for(range(4, 6)).needs == (COV,)
    assert str(dispatch.failed[LOC]).endswith("broken at 2")
