"""Shards on a Ray cluster (``--saliency-ray``): the engine's :class:`~pytest_saliency.engine.Runner`
that spreads a pass over Ray actors, one per GPU (or per ``--saliency-workers``).

::

    driver (pytest)                          actors (one per worker, kept for the run)
    engine: plan, shards --RayRunner-->      ShardActor: a ShardWorker per spec (model loaded once)
            merge <-- ShardResult ---------  run_range(plan, shard): read, compute, statistics

Each actor holds a :class:`~pytest_saliency.streaming.ShardWorker` per spec (the two last, as the
engine cache does) on its device (CUDA when it has a GPU), built from the pickled
:class:`~pytest_saliency.spec.validate.LoadedSpec` at its first shard. The merged result is the
same as in-process: a shard's statistics do not depend on where it ran (every draw is seeded per
sample), and the engine merges the shards in sample order.

Failures: an actor whose process dies is restarted once and its shard retried once
(``max_restarts=1, max_task_retries=1``); a second death is one line at the spec's ``model:``
naming the shard and Ray's error, and every later item of that spec fails with the same line. An
error raised in an actor (a :class:`~pytest_saliency.errors.SpecRuntimeError` at its place in the
spec, a check's exception) reaches the driver as itself.

Assumptions: every node sees the spec, its data, weights and factory module at the same absolute
paths as the driver (a shared filesystem, or the same checkout at the same path in every
container), and has the same Python environment (pytest-saliency, torch, the model's packages).
A local cluster (``--saliency-ray`` without an address) always meets them.

Ray is imported only when ``--saliency-ray`` is given.
"""

from __future__ import annotations

import importlib
import logging
import os
import pickle
import socket
import sys
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Protocol
from weakref import WeakKeyDictionary

from .errors import ClusterUnavailable, SaliencyError, SpecRuntimeError, describe_exception, first_line

if TYPE_CHECKING:
    from .cache import Lookup
    from .dispatch import Dispatch
    from .spec.validate import LoadedSpec
    from .streaming import Plan, ShardResult, ShardWorker

INSTALL_HINT = '--saliency-ray needs Ray: pip install "pytest-saliency[ray]"'
START_TIMEOUT_S = 300.0
"""How long the actors may take to start (the cluster placing them) before the run gives up."""
LOCAL = "local"
"""The address of ``--saliency-ray`` without a value: start a local cluster in this process."""


def _ray() -> ModuleType:
    """The ``ray`` module, untyped here (mypy runs with Ray installed or not)."""
    return importlib.import_module("ray")


class _RemoteMethod(Protocol):
    """A method of a Ray actor: ``method.remote(...)`` runs it there and gives a reference to its result."""

    def remote(self, *args: object) -> object: ...


class _Actor(Protocol):
    """A Ray actor running a :class:`ShardActor`, as the driver sees it."""

    ready: _RemoteMethod
    run_range: _RemoteMethod


class ShardActor:
    """What runs in each Ray actor: shards of any spec, on this actor's device."""

    def __init__(self, device: str) -> None:
        import torch

        self.device = torch.device(device)
        self.workers: OrderedDict[str, ShardWorker] = OrderedDict()

    def ready(self) -> str:
        """``host device``: answered once the actor runs (the driver waits for it)."""
        return f"{socket.gethostname()} {self.device}"

    def run_range(
        self, key: str, loaded: LoadedSpec, directory: str, search_paths: tuple[Path, ...], plan: Plan, indices: range
    ) -> ShardResult:
        """:func:`~pytest_saliency.dispatch.compute_range` of the spec ``key`` (its worker built at its first shard),
        in the driver's working ``directory``: the spec's paths are relative to it, and so the
        messages that name them read as on the driver."""
        if os.getcwd() != directory:
            os.chdir(directory)
        from .dispatch import compute_range

        result = compute_range(self._worker(key, loaded, search_paths), plan, indices)
        result.errors = {need: _picklable(error) for need, error in result.errors.items()}
        return result

    def _worker(self, key: str, loaded: LoadedSpec, search_paths: tuple[Path, ...]) -> ShardWorker:
        from .streaming import ShardWorker

        if key not in self.workers:
            for path in (*search_paths, loaded.directory.resolve()):  # the spec's modules, as on the driver
                if str(path) not in sys.path:
                    sys.path.insert(0, str(path))
            self.workers[key] = ShardWorker(loaded, self.device, search_paths)
            while len(self.workers) > 2:
                self.workers.popitem(last=False)
        self.workers.move_to_end(key)
        return self.workers[key]


def _picklable(error: BaseException) -> BaseException:
    """``error`` when it survives pickling (to the driver), else a RuntimeError with its line."""
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:  # noqa: BLE001  (any failure to pickle: send the line instead)
        return RuntimeError(describe_exception(error))
    return error


class RayRunner:
    """Runs a pass's shards on Ray actors; the engine merges them as in-process.

    ``address``: :data:`LOCAL` starts a local cluster, else what ``ray.init(address=...)`` takes
    (``auto``, ``ray://head:10001``); ``workers``: the number of actors (default one per GPU of
    the cluster, else 2); ``device``: ``--saliency-device`` (``cpu`` keeps the actors off GPUs).
    The plugin connects when the run starts (a wrong address is a usage error, before any test),
    except under ``--collect-only``."""

    def __init__(self, address: str = LOCAL, workers: int | None = None, device: str = "auto") -> None:
        self.address = address
        self.workers = workers
        self.device = device
        self.started = False  # True when this runner called ray.init (and so shuts Ray down)
        self.gpus_per_actor = 0.0
        self._actors: list[_Actor] = []
        self._keys: WeakKeyDictionary[ShardWorker, str] = WeakKeyDictionary()
        self._failed: WeakKeyDictionary[ShardWorker, SaliencyError] = WeakKeyDictionary()

    @property
    def connected(self) -> bool:
        return "ray" in sys.modules and bool(_ray().is_initialized())

    def connect(self) -> None:
        """``ray.init`` once (nothing when Ray is already initialised, e.g. by a conftest);
        :class:`ClusterUnavailable` (one line) when it fails."""
        ray = _ray()

        if ray.is_initialized():
            return
        # Workers' output would cut through pytest's; it stays in Ray's log folder.
        options: dict[str, object] = {"log_to_driver": False, "logging_level": logging.WARNING}
        try:
            if self.address == LOCAL:
                ray.init(include_dashboard=False, **options)
            else:
                ray.init(address=self.address, **options)
        except Exception as error:  # noqa: BLE001  (no cluster there, a version mismatch, ...)
            option = "--saliency-ray" if self.address == LOCAL else f"--saliency-ray={self.address}"
            raise ClusterUnavailable(f"{option}: Ray did not start: {describe_exception(error)}") from error
        self.started = True

    def resources(self) -> tuple[int, int]:
        """``(CPUs, GPUs)`` of the cluster (connecting first)."""
        ray = _ray()

        self.connect()
        total = ray.cluster_resources()
        return int(total.get("CPU", 0)), int(total.get("GPU", 0))

    def describe(self) -> str:
        """``ray local cluster (2 CPUs, 0 GPUs), 2 workers on cpu``: for the report header."""
        cpus, gpus = self.resources()
        where = "local cluster" if self.address == LOCAL else self.address
        count, per_gpu = self._layout(gpus)
        device = "cpu" if not per_gpu else "cuda" if per_gpu >= 1 else f"cuda, {per_gpu:g} GPU each"
        return f"ray {where} ({cpus} CPUs, {gpus} GPUs), {count} worker{'s' if count != 1 else ''} on {device}"

    def _layout(self, gpus: int) -> tuple[int, float]:
        """``(actors, GPUs per actor)``: one actor per GPU by default; more actors than GPUs
        share them (a fraction each), so that none waits forever for a GPU of its own."""
        use_gpus = gpus if self.device != "cpu" else 0
        count = self.workers or use_gpus or 2
        return count, min(1.0, use_gpus / count) if use_gpus else 0.0

    def actors(self) -> list[_Actor]:
        """The run's actors, started at the first call; raises :class:`ClusterUnavailable` when
        the cluster does not start them within :data:`START_TIMEOUT_S`."""
        if self._actors:
            return self._actors
        ray = _ray()

        _, gpus = self.resources()
        count, self.gpus_per_actor = self._layout(gpus)
        remote = ray.remote(ShardActor).options(num_gpus=self.gpus_per_actor, max_restarts=1, max_task_retries=1)
        device = "cuda:0" if self.gpus_per_actor else "cpu"  # Ray shows each actor its own GPU as 0
        actors = [remote.remote(device) for _ in range(count)]
        try:
            ray.get([actor.ready.remote() for actor in actors], timeout=START_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            for actor in actors:
                ray.kill(actor)
            asked = f"{count} workers" + (f" with {self.gpus_per_actor:g} GPU each" if self.gpus_per_actor else "")
            raise ClusterUnavailable(
                f"--saliency-ray: the cluster started no worker within {START_TIMEOUT_S:g} s (asked for {asked}): "
                "free its resources or give fewer --saliency-workers"
            ) from None
        self._actors = actors
        return actors

    def __call__(
        self, worker: ShardWorker, dispatch: Dispatch, shards: list[range], progress: Callable[[int], None]
    ) -> list[ShardResult]:
        """Each shard on the next free actor (one shard in flight per actor), sent what the pass's
        :class:`~pytest_saliency.dispatch.Dispatch` says when it is submitted."""
        if worker in self._failed:
            raise self._failed[worker]
        from .cache import lookup_range

        ray = _ray()

        actors = self.actors()
        key = self._keys.setdefault(worker, uuid.uuid4().hex)
        loaded = ray.put(worker.loaded)
        directory = os.getcwd()
        todo: Iterator[range] = iter(shards)
        pending: dict[object, tuple[_Actor, range, Lookup]] = {}  # by the reference to the shard's result
        results: list[ShardResult] = []

        def submit(actor: _Actor) -> None:
            for indices in todo:
                found = lookup_range(worker, dispatch.plan_for(indices), indices)  # looked up before it is sent
                if found.result is not None:
                    results.append(found.result)
                    progress(len(found.result.base["index"]) + len(found.result.skipped))
                    continue
                reference = actor.run_range.remote(key, loaded, directory, worker.search_paths, found.todo, indices)
                pending[reference] = (actor, indices, found)
                return

        for actor in actors:
            submit(actor)
        while pending:
            (reference,), _ = ray.wait(list(pending), num_returns=1)
            actor, indices, found = pending.pop(reference)
            try:
                part: ShardResult = found.complete(ray.get(reference))
            except ray.exceptions.RayTaskError as error:  # raised by our code or the user's, in the actor
                cause = error.cause if isinstance(error.cause, BaseException) else error
                raise cause from error
            except ray.exceptions.RayError as error:  # the actor died twice, or Ray lost the shard
                died = isinstance(error, ray.exceptions.RayActorError)
                self._failed[worker] = self._lost(indices, error, died)
                if died:
                    self._drop(actor)
                raise self._failed[worker] from error
            dispatch.received(part)
            results.append(part)
            progress(len(part.base["index"]) + len(part.skipped))
            submit(actor)
        return results

    @staticmethod
    def _lost(indices: range, error: BaseException, died: bool) -> SpecRuntimeError:
        """The one line of a shard Ray could not compute, at the spec's ``model:``."""
        samples = f"samples {indices.start}-{indices.stop - 1}" if len(indices) > 1 else f"sample {indices.start}"
        how = "died again after a restart and a retry" if died else "failed"
        return SpecRuntimeError(
            ("model",), f"the Ray worker computing {samples} {how}: {type(error).__name__}: {first_line(error)}"
        )

    def _drop(self, actor: _Actor) -> None:
        """Forget a dead actor; the next pass starts a fresh set if none is left."""
        self._actors = [other for other in self._actors if other is not actor]

    def close(self) -> None:
        """End the run's actors, and Ray itself when this runner started it."""
        if "ray" not in sys.modules:
            return
        ray = _ray()

        if ray.is_initialized():
            for actor in self._actors:
                ray.kill(actor)
        self._actors = []
        if self.started:
            ray.shutdown()
            self.started = False
