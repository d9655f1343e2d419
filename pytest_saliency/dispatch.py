"""What each shard of a pass is sent and how it is computed, decided once for every runner.

A runner (:class:`~pytest_saliency.engine.LocalRunner` in this process,
:class:`~pytest_saliency.cluster.RayRunner` on a cluster) only moves shards and results: it asks
its pass's :class:`Dispatch` which needs a shard is sent (:meth:`Dispatch.plan_for`), takes what
the result cache holds of them (:mod:`pytest_saliency.cache`), has the rest computed by
:func:`compute_shard` (here or in a Ray actor), and hands each result back
(:meth:`Dispatch.received`). A need that raised on one shard is not sent with the shards after
it: its items fail with that first error, and the pass does not pay for it again.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .checks.registry import kind_of
from .loaders.source import SampleBatch
from .streaming import Need, Plan, Shard, ShardResult, ShardWorker


class Dispatch:
    """The needs sent with each shard of one pass over ``plan``."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.failed: dict[Need, BaseException] = {}
        """The needs that raised, with the first error of each."""

    def plan_for(self, samples: Sequence[int]) -> Plan:
        """The needs to compute for the shard of the data set positions ``samples``: the pass's
        plan less the needs that raised on an earlier shard. The runners then ask the result cache
        (:func:`~pytest_saliency.cache.lookup`) which of them it already holds."""
        return self.plan.without(list(self.failed))

    def received(self, result: ShardResult) -> None:
        """Take note of one shard's result: the needs that raised there are dropped from now on."""
        for need, error in result.errors.items():
            self.failed.setdefault(need, error)


def compute_range(worker: ShardWorker, plan: Plan, indices: range) -> ShardResult:
    """Read the samples ``indices`` and :func:`compute_shard` them (what a Ray actor does)."""
    return compute_shard(worker, plan, worker.source.read(indices))


def compute_shard(worker: ShardWorker, plan: Plan, batch: SampleBatch) -> ShardResult:
    """The per-sample statistics of ``batch`` for every need of ``plan``, on the CPU. A need
    whose check raises keeps its error (its items fail with it); the others go on. A batch
    whose every sample the source skipped gives only its skipped lines; the objects or class
    regions a detector or segmenter missed are left out of the shard and listed (``missed``)."""
    missed: list[str] = []
    shard = Shard(worker, batch.to(worker.device))
    if len(batch) and worker.spec.task != "classification":
        found = shard.found
        missed = [shard.missed_line(position) for position in (~found).nonzero().view(-1).tolist()]
        if missed:
            shard = Shard(worker, shard.batch.select(found))
    if not len(shard):
        empty = torch.empty(0, dtype=torch.long)
        base = {name: empty for name in ("index", "label", "prediction", "target")}
        return ShardResult(base, batch.fields, {}, {}, batch.skipped, 0, missed=missed)
    shard.logits  # noqa: B018  (the model and labels are checked before any check)
    statistics: dict[Need, dict[str, Tensor]] = {}
    errors: dict[Need, BaseException] = {}
    for need in plan.needs:
        check = worker.spec.checks[need.check_index]
        try:
            values = kind_of(check).shard_statistics(shard, check, need.method)
        except Exception as error:  # noqa: BLE001  (raised again by every item of this need)
            errors[need] = error
            continue
        statistics[need] = {name: value.detach().cpu() for name, value in values.items()}
    base = {
        "index": shard.batch.indices.cpu(),
        "label": shard.batch.labels.cpu(),
        "prediction": shard.predictions.cpu(),
        "target": (shard.targets if shard.target is None else shard.batch.labels).cpu(),
    }
    return ShardResult(base, shard.batch.fields, statistics, errors, batch.skipped, shard.classes, shard.notes, missed)
