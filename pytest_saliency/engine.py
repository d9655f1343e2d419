"""The engine behind a spec: one streaming pass over its data for what the selected items need.

The engine is the driver: it plans nothing itself (the session hands it the plan of the items
selected in the run), splits the samples into shards, has a runner compute each shard's
statistics (:mod:`pytest_saliency.streaming`; in-process, or on Ray) and keeps the merged result.
The session keeps a small LRU of engines (:class:`EngineCache`, below) so that a shuffled test
order does not recompute.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import torch
from torch import Tensor

from ._io import file_digest
from .cache import ResultCache, lookup, report_maps
from .dispatch import Dispatch, compute_shard
from .errors import SaliencyError, SpecRuntimeError
from .loaders.model_sources import huggingface_weights
from .loaders.models import ModelUnderTest
from .loaders.preprocessing import resolve_preprocessing
from .loaders.source import SampleBatch, SampleSource
from .spec.validate import LoadedSpec
from .streaming import Need, PassResult, Plan, Progress, Shard, ShardResult, ShardWorker, merge, shard_ranges

if TYPE_CHECKING:
    from .report.boxes import DrawnBoxes


def resolve_device(choice: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available (under xdist, worker ``gwN`` takes GPU ``N mod count``),
    else CPU; any other value is passed to ``torch.device``."""
    if choice != "auto":
        device = torch.device(choice)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"--saliency-device {choice}: CUDA is not available on this machine; use cpu or auto")
        return device
    if not torch.cuda.is_available():
        return torch.device("cpu")
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    return torch.device("cuda", index % torch.cuda.device_count())


class Runner(Protocol):
    """Runs a plan over shards of a spec's samples and gives each shard's result: in-process
    (:class:`LocalRunner`) or on a Ray cluster (:mod:`pytest_saliency.cluster`)."""

    def __call__(
        self, worker: ShardWorker, dispatch: Dispatch, shards: list[range], progress: Callable[[int], None]
    ) -> list[ShardResult]: ...


class LocalRunner:
    """Every shard in this process, on the engine's device, one after another, each sent what
    the pass's :class:`~pytest_saliency.dispatch.Dispatch` says."""

    def __call__(
        self, worker: ShardWorker, dispatch: Dispatch, shards: list[range], progress: Callable[[int], None]
    ) -> list[ShardResult]:
        results = []
        for batch in worker.source.stream(shards):  # a shard whose every sample was skipped may yield none
            found = lookup(worker, dispatch.plan_for(batch.indices.tolist()), batch)  # the result cache's part
            result = found.result or found.complete(compute_shard(worker, found.todo, batch))
            dispatch.received(result)
            results.append(result)
            progress(len(batch) + len(batch.skipped))
        return results


class SpecEngine:
    """Runs what the selected checks of one spec need in one streaming pass, and keeps only the
    merged per-sample statistics (:class:`~pytest_saliency.streaming.PassResult`)."""

    def __init__(
        self,
        loaded: LoadedSpec,
        device: torch.device,
        search_paths: tuple[Path, ...] = (),
        progress: Progress | None = None,
        runner: Runner | None = None,
        result_cache: ResultCache | None = None,
    ) -> None:
        self.loaded, self.preprocessing = resolve_preprocessing(loaded)  # transform: auto, the source's classes
        self.spec = self.loaded.spec
        self.device = device
        self.worker = ShardWorker(self.loaded, device, search_paths)
        self.worker.result_cache = result_cache
        self.batch_size = self.spec.data.batch_size
        self.progress = progress
        self.runner: Runner = runner or LocalRunner()
        self._result: PassResult | None = None
        self._done: tuple[Need, ...] = ()
        self._failed: SaliencyError | None = None

    @property
    def model(self) -> ModelUnderTest:
        """The spec's model, loaded in this process (on the engine's device)."""
        return self.worker.model

    @property
    def source(self) -> SampleSource:
        return self.worker.source

    def shards(self) -> list[range]:
        """The shards of ``data.shard_size`` samples a pass goes over."""
        return shard_ranges(len(self.source), self.spec.data.shard_size)

    def result(self, plan: Plan) -> PassResult:
        """The merged statistics of ``plan``'s needs: one pass over the data for the needs not
        computed yet (usually all of them, at the first item of the spec). A pass that failed as
        a whole (the data cannot be read, its checksum fails after the last shard) is not run
        again: every later item of the spec fails with the same error."""
        if self._failed is not None:
            raise self._failed
        missing = plan.without(self._done)
        if self._result is None or missing.needs:
            try:
                fresh = self._run(missing)
            except SaliencyError as error:
                self._failed = error
                raise
            self._result = fresh if self._result is None else self._result.including(fresh)
            self._done += missing.needs
        return self._result

    def _run(self, plan: Plan) -> PassResult:
        shards = self.shards()
        total = len(self.source)
        label = f"{self.loaded.name}: {len(plan.needs)} check{'s' if len(plan.needs) != 1 else ''}"
        done = 0

        def progress(samples: int) -> None:
            nonlocal done
            done += samples
            if self.progress:
                self.progress(label, done, total)

        result = merge(self.runner(self.worker, Dispatch(plan), shards, progress), plan)
        if not len(result) and result.missed:
            raise SpecRuntimeError(
                ("model",),
                f"the model missed all {len(result.missed)} samples (first: {result.missed[0]}): nothing to explain",
            )
        if not len(result):
            skipped = f" ({len(result.skipped)} skipped as bad samples)" if result.skipped else ""
            raise SpecRuntimeError(self.source.location, f"the data set has no samples{skipped}")
        return result

    def shard(self, indices: Sequence[int] | None = None) -> Shard:
        """The samples at ``indices`` (default: all of them, in memory at once) as a
        :class:`~pytest_saliency.streaming.Shard` on the engine's device, for tests written in
        Python: ``shard.attributions("grad")``, ``shard.shared_interest("grad").gtc``,
        ``shard.correct``."""
        chosen = range(len(self.source)) if indices is None else sorted(indices)
        return Shard(self.worker, self.source.read(chosen).to(self.device))

    def report_samples(
        self, indices: list[int], method: str | None
    ) -> tuple[SampleBatch, Tensor | None, Tensor | None]:
        """A few samples read again (the worst examples a report shows), on the CPU, with the
        method's ``(K, H, W)`` saliency maps and regions (None without a method): the same maps as
        in the pass, since every draw is seeded per sample."""
        batch = self.source.read(sorted(indices))
        if method is None or not len(batch):
            return batch, None, None

        def compute() -> tuple[Tensor, Tensor]:
            shard = Shard(self.worker, batch.to(self.device))
            regions, _ = shard.saliency_regions(method)
            return shard.saliency_maps(method).cpu(), regions.cpu()

        maps, regions = report_maps(self.worker, method, batch, compute)  # the persistent cache's, if any
        if self.spec.task == "detection":
            batch.drawn_boxes = self._drawn_boxes(batch)
        return batch, maps, regions

    def _drawn_boxes(self, batch: SampleBatch) -> list[DrawnBoxes]:
        """Each detection sample's box, the detections on its clean image and the one matched to
        it (what the report's thumbnails draw)."""
        from .report.boxes import DrawnBoxes
        from .targets import MatchedDetection, detections

        assert batch.boxes is not None and batch.images_of is not None
        with torch.no_grad():
            found = detections(self.model.raw(batch.images.to(self.device)), len(batch))
        target = MatchedDetection(batch.boxes, batch.labels, batch.images_of, self.spec.detection.match_iou)
        drawn: list[DrawnBoxes] = []
        for sample, item in enumerate(found):
            boxes, scores = item["boxes"].detach().float().cpu(), item["scores"].detach().float().cpu()
            matches = target.matches(boxes, item["labels"].cpu())[:, sample]
            matched = int(torch.where(matches, scores, -1.0).argmax()) if bool(matches.any()) else None
            drawn.append(DrawnBoxes(batch.boxes[sample], boxes, matched))
        return drawn

    @cached_property
    def weights_file(self) -> dict[str, str] | None:
        """The file the spec's model comes from (its ``weights``, its ``torchscript`` or ``export``
        file, a Hugging Face folder's weights):
        ``{"path": ..., "sha256": ...}``, the path relative to the working directory when it lies
        below it; None for a factory without weights. Every report names it."""
        from .report.format import shown_path

        model = self.spec.model
        name = model.weights or model.torchscript or model.export
        if model.huggingface is not None:
            path = huggingface_weights(self.loaded.resolve(model.huggingface))
            if path is None:
                return None
        elif name is None:
            return None
        else:
            path = self.loaded.resolve(name)
        return {"path": shown_path(str(path)), "sha256": file_digest(path)}

    @property
    def model_source(self) -> dict[str, object]:
        """The normalisation, transform and classes the run uses with their origins, and notes
        (the spec against its source; how the weights were read, once the model is loaded in
        this process: always without Ray), as every report shows them."""
        record = self.preprocessing.as_dict()
        if "model" in self.worker.__dict__:  # loaded (a cached_property): its notes are known
            record["notes"] = [*self.preprocessing.notes, *self.worker.model.notes]
        return record

    @cached_property
    def weights_hash(self) -> str:
        """A short hash of the spec's own model's parameters and buffers."""
        from .baselines.store import content_hash

        return content_hash(self.model.state_dict())


class EngineCache:
    """A small LRU of engines keyed by spec path, content and device."""

    def __init__(self, size: int = 2) -> None:
        self.size = size
        self._engines: OrderedDict[tuple[str, int, str], SpecEngine] = OrderedDict()

    def get(self, key: tuple[str, int, str], build: Callable[[], SpecEngine]) -> SpecEngine:
        if key in self._engines:
            self._engines.move_to_end(key)
            return self._engines[key]
        engine = build()
        self._engines[key] = engine
        while len(self._engines) > self.size:
            self._engines.popitem(last=False)
        return engine

    def clear(self) -> None:
        self._engines.clear()
