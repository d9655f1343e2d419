"""One pass over a spec's data in shards: what the selected items need, computed shard by shard.

::

    plan  --shards-->  per shard: read -> forward once -> attribute once per method
                       -> every planned check's per-sample statistics -> keep those, free the shard
          --merge-->   per-sample statistics of all shards, in sample order

A shard's work (:func:`pytest_saliency.dispatch.compute_shard`) is a pure function of the spec, the plan, the samples
and the device: the same code runs in-process, or in Ray actors (:mod:`pytest_saliency.cluster`).
Every random draw is seeded by the spec's seed and the sample's index
(:mod:`pytest_saliency.metrics.seeding`), so the merged statistics do not depend on the batch size,
the shard size or the number of workers. Check kinds (:mod:`pytest_saliency.checks`) compute their
per-sample statistics from a :class:`Shard`; their ``decide`` reads the merged :class:`PassResult`.
What each shard is sent is decided in :mod:`pytest_saliency.dispatch`.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import numpy as np
import torch
from torch import Tensor

from .attribution import Attributor
from .errors import Location, SpecRuntimeError, model_stage
from .loaders.data import open_source
from .loaders.models import ModelUnderTest, load_model
from .loaders.source import SampleBatch, SampleSource
from .memory import run_with_half_batch_retry
from .metrics import shared_interest
from .metrics.saliency import binarize, normalize_maps, reduce_channels
from .spec.schema import WEIGHT_SOURCES, AgainstSpec, Spec
from .spec.validate import LoadedSpec
from .speed import prepare
from .targets import MatchedDetection, RegionLogitSum, ScoreModel, Target, segmentation_logits

if TYPE_CHECKING:
    from .cache import ResultCache

T = TypeVar("T")

Progress = Callable[[str, int, int], None]
"""``progress(label, done, total)``: samples done of all, after each shard."""


class Need(NamedTuple):
    """What one check needs for one attribution method (``None`` for checks without one): every
    item of the check for that method (each class, each slice) reads the same statistics."""

    check_index: int
    method: str | None


@dataclass(frozen=True)
class Plan:
    """The needs of the items selected in a run, in spec order."""

    needs: tuple[Need, ...]

    def __add__(self, other: Plan) -> Plan:
        return Plan(tuple(dict.fromkeys(self.needs + other.needs)))

    def without(self, done: Sequence[Need]) -> Plan:
        return Plan(tuple(need for need in self.needs if need not in done))


@dataclass
class ShardResult:
    """One shard's per-sample statistics, on the CPU: the base columns (``index``, ``label``,
    ``prediction``, ``target``; ``(B,)`` each), the data's per-sample ``fields``, each need's
    ``{name: (B, ...) tensor}`` (or the error it raised), the samples the source skipped, and the
    objects or class regions the model missed (``task: detection | segmentation``)."""

    base: dict[str, Tensor]
    fields: dict[str, np.ndarray]
    statistics: dict[Need, dict[str, Tensor]]
    errors: dict[Need, BaseException]
    skipped: list[str]
    classes: int
    notes: dict[str, str] = field(default_factory=dict)
    """``{method: note}`` of the methods that have one (:attr:`Attributor.note`)."""
    missed: list[str] = field(default_factory=list)


@dataclass
class PassResult:
    """Every shard's :class:`ShardResult` merged in sample order."""

    indices: Tensor
    """``(N,)`` long: the data set positions of the samples (skipped samples absent)."""
    labels: Tensor
    predictions: Tensor
    targets: Tensor
    fields: dict[str, np.ndarray]
    classes: int
    """The width of the model's logits."""
    statistics: dict[Need, dict[str, Tensor]] = field(default_factory=dict)
    errors: dict[Need, BaseException] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)
    """``{method: note}`` of the methods that have one (:attr:`Attributor.note`)."""
    missed: list[str] = field(default_factory=list)
    """One line per object or class region the model missed (no scores; :func:`missed_rate`)."""

    @property
    def correct(self) -> Tensor:
        """``(N,) bool``: the prediction equals the label."""
        return self.predictions == self.labels

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def of(self, need: Need) -> dict[str, Tensor]:
        """The merged statistics of ``need``; the error it raised on any shard, raised again."""
        if need in self.errors:
            raise self.errors[need]
        return self.statistics[need]

    def including(self, other: PassResult) -> PassResult:
        """This result with ``other``'s statistics (a later pass over the same samples) added."""
        return PassResult(
            self.indices,
            self.labels,
            self.predictions,
            self.targets,
            self.fields,
            self.classes,
            {**self.statistics, **other.statistics},
            {**self.errors, **other.errors},
            self.skipped,
            {**self.notes, **other.notes},
            self.missed,
        )


def merge(parts: Sequence[ShardResult], plan: Plan) -> PassResult:
    """The shards' results concatenated in sample order (they may arrive in any order); a shard
    whose every sample was skipped adds only its skipped lines."""
    skipped = [line for part in sorted(parts, key=_first_index) for line in part.skipped]
    missed = [line for part in sorted(parts, key=_first_index) for line in part.missed]
    ordered = sorted((part for part in parts if len(part.base["index"])), key=_first_index)
    base = {
        name: torch.cat([part.base[name] for part in ordered]) if ordered else torch.empty(0, dtype=torch.long)
        for name in ("index", "label", "prediction", "target")
    }
    names = ordered[0].fields if ordered else {}
    fields = {name: np.concatenate([part.fields[name] for part in ordered]) for name in names}
    errors: dict[Need, BaseException] = {}
    for part in ordered:
        for need, error in part.errors.items():
            errors.setdefault(need, error)
    statistics = {}
    for need in plan.needs:
        if need in errors:
            continue
        columns = ordered[0].statistics[need] if ordered else {}
        statistics[need] = {name: torch.cat([part.statistics[need][name] for part in ordered]) for name in columns}
    return PassResult(
        base["index"],
        base["label"],
        base["prediction"],
        base["target"],
        fields,
        max((part.classes for part in ordered), default=0),
        statistics,
        errors,
        skipped,
        {method: note for part in ordered for method, note in part.notes.items()},
        missed,
    )


def _first_index(part: ShardResult) -> int:
    return int(part.base["index"][0]) if len(part.base["index"]) else -1


def shard_ranges(count: int, size: int) -> list[range]:
    """Consecutive ranges of ``size`` samples covering ``count``."""
    return [range(start, min(start + size, count)) for start in range(0, count, size)]


class ShardWorker:
    """Loads a spec's model once on ``device`` and computes the statistics of any shard; also
    what a check needs once per worker (:meth:`cached`: randomised copies, reference versions)."""

    def __init__(self, loaded: LoadedSpec, device: torch.device, search_paths: tuple[Path, ...] = ()) -> None:
        self.loaded = loaded
        self.spec = loaded.spec
        self.device = device
        self.search_paths = (*search_paths, loaded.directory)
        self.batch_size = self.spec.data.batch_size
        self._cache: dict[Hashable, Any] = {}
        self.result_cache: ResultCache | None = None  # the persistent cache, set by the engine

    @cached_property
    def model(self) -> ModelUnderTest:
        # Loaded outside inference mode: tensors created inside it could never take part in
        # the gradient computations of attributions later.
        with torch.inference_mode(False):
            model = load_model(self.spec.model, self.loaded.directory, self.search_paths, self.device)
            return prepare(model, self.spec.model, self.device)

    @cached_property
    def source(self) -> SampleSource:
        with torch.inference_mode(False):  # see model
            return open_source(
                self.spec.data, self.loaded.directory, self.search_paths, self.spec.task, self.spec.segmentation
            )

    def cached(self, key: Hashable, build: Callable[[], T]) -> T:
        """``build()`` once per worker for ``key``."""
        if key not in self._cache:
            self._cache[key] = build()
        value: T = self._cache[key]
        return value

    def reference_model(self, against: AgainstSpec, location: Location) -> ModelUnderTest:
        """The model version a drift check's ``against: {weights | model}`` names, loaded once:
        the spec's own factory, kwargs and normalize with other weights, or a whole model block.
        ``location`` is where the ``against`` block is in the spec (errors)."""
        if against.stored is not None:
            raise ValueError("a stored snapshot has no model; load it with the snapshot store")

        def build() -> ModelUnderTest:
            self.model  # noqa: B018  (the spec's own model loads first: its errors point at model:)
            if against.model is not None:
                spec, where = against.model, location + ("model",)
            elif self.spec.model.source not in WEIGHT_SOURCES:
                raise SpecRuntimeError(
                    location + ("weights",),
                    "against.weights replaces the weights of the spec's factory, but the model is "
                    f"{self.spec.model.source}: give against.model instead",
                )
            else:
                spec, where = self.spec.model.model_copy(update={"weights": against.weights}), location
            with torch.inference_mode(False):  # see model
                model = load_model(spec, self.loaded.directory, self.search_paths, self.device, where)
                return prepare(model, spec, self.device)

        return self.cached(("reference", against.model_dump_json()), build)


@dataclass(frozen=True)
class SharedInterestScores:
    """Per-sample ``(B,)`` scores; NaN marks an undefined sample (empty region, constant map)."""

    iou: Tensor
    gtc: Tensor
    sc: Tensor
    sc_continuous: Tensor

    def as_dict(self) -> dict[str, Tensor]:
        return {"iou": self.iou, "gtc": self.gtc, "sc": self.sc, "sc_continuous": self.sc_continuous}


class Shard:
    """One shard's samples on the worker's device and what is computed from them once: logits,
    each method's attributions, saliency maps and regions, Shared Interest scores."""

    def __init__(self, worker: ShardWorker, batch: SampleBatch) -> None:
        self.worker = worker
        self.spec = worker.spec
        self.device = worker.device
        self.batch = batch
        self._attributions: dict[str, Tensor] = {}
        self.notes: dict[str, str] = {}
        """``{method: note}`` of the methods that have one (:attr:`Attributor.note`)."""
        self._shared_interest: dict[str, SharedInterestScores] = {}

    @property
    def model(self) -> ModelUnderTest:
        return self.worker.model

    @property
    def images(self) -> Tensor:
        """``(B, C, H, W)`` on the device."""
        return self.batch.images

    @property
    def masks(self) -> Tensor:
        """``(B, H, W) bool`` ground truth on the device."""
        return self.batch.masks

    @property
    def indices(self) -> Tensor:
        """``(B,)`` the samples' positions in the data set."""
        return self.batch.indices

    def __len__(self) -> int:
        return len(self.batch)

    def batches(self, batch_size: int | None = None) -> Iterator[slice]:
        """Consecutive slices of ``batch_size`` (default: ``data.batch_size``) over the shard."""
        size = batch_size or self.worker.batch_size
        total = len(self.batch)
        for start in range(0, total, size):
            yield slice(start, min(start + size, total))

    @cached_property
    def logits(self) -> Tensor:
        """``(B, classes)`` float logits of the clean images, checked: finite, as wide as the
        labels and ``data.classes`` need. Every shard computes them first, so a model or data set
        that does not fit fails here, at its place in the spec. For detection and segmentation,
        ``(B, B)``: every sample's score on each clean image (:mod:`pytest_saliency.targets`)."""
        shape = tuple(self.images.shape[1:])
        model = self.model if self.target is None else self.scored(self.model)

        def forward(batch_size: int) -> Tensor:
            with torch.inference_mode():
                parts = [model(self.images[part]).float() for part in self.batches(batch_size)]
            return torch.cat(parts).clone()  # a normal tensor: inference tensors cannot join autograd later

        with model_stage(("model",), f"the model failed on images of shape {shape}"):
            logits = run_with_half_batch_retry(
                forward, self.worker.batch_size, ("data", "batch_size"), "data.batch_size"
            )
        if self.target is None:
            self._check_logits(logits)
        return logits

    # --- detection and segmentation: the target as a score per sample -------------------------

    @cached_property
    def target(self) -> Target | None:
        """What each sample's attributions explain, bound to this shard's samples (``None`` for
        classification, whose target is a class's logit): the matched detection's score, or the
        class's logits summed over its region (fixed from the clean prediction by default)."""
        if self.spec.task == "detection":
            assert self.batch.boxes is not None and self.batch.images_of is not None
            boxes, labels, images = self.batch.boxes, self.batch.labels, self.batch.images_of
            return MatchedDetection(boxes, labels, images, self.spec.detection.match_iou)
        if self.spec.task == "segmentation":
            regions = self.masks if self.spec.segmentation.region == "ground_truth" else self.predicted_regions
            return RegionLogitSum(self.batch.labels, regions)
        return None

    @cached_property
    def predicted_regions(self) -> Tensor:
        """``(B, H, W) bool``: where the clean image is predicted as the sample's class (segmentation)."""
        size = tuple(self.images.shape[2:])
        with torch.inference_mode(), model_stage(("model",), f"the model failed on images of shape {size}"):
            parts = [
                segmentation_logits(self.model.raw(self.images[part]), size).argmax(dim=1) for part in self.batches()
            ]
        return (torch.cat(parts) == self.batch.labels.view(-1, 1, 1)).clone()

    def scored(self, model: ModelUnderTest, bounded: bool = False) -> ScoreModel:
        """``model`` (this spec's, another version, a randomised copy) as ``(B, C, H, W)`` ->
        ``(B, S)`` scores of this shard's ``S`` samples; column ``s`` is sample ``s``'s target."""
        assert self.target is not None
        return ScoreModel(model, self.target, bounded)

    @cached_property
    def found(self) -> Tensor:
        """``(B,) bool``: the model finds the sample on its clean image (detection: a detection
        matches the object; segmentation: its region is predicted somewhere, and is not empty)."""
        if self.spec.task == "segmentation":
            predicted = self.predicted_regions.flatten(1).any(dim=1)
            if self.spec.segmentation.region == "ground_truth":
                return predicted & self.masks.flatten(1).any(dim=1)
            return predicted
        return self.logits.diagonal() > 0

    def missed_line(self, position: int) -> str:
        """How the sample at ``position`` is named in the list of missed samples."""
        label = int(self.batch.labels[position])
        names = self.spec.data.classes
        shown = names[label] if names is not None and label < len(names) else str(label)
        image = int(self.batch.images_of[position]) if self.batch.images_of is not None else -1
        if self.spec.task == "detection":
            assert self.batch.boxes is not None
            box = ", ".join(f"{value:g}" for value in self.batch.boxes[position].tolist())
            iou = self.spec.detection.match_iou
            return f"sample {int(self.indices[position])} (image {image}, {shown} at [{box}]): no {shown} detected with IoU >= {iou:g}"
        return f"sample {int(self.indices[position])} (image {image}, {shown}): predicted nowhere"

    @property
    def classes(self) -> int:
        """The number of classes: the logits' width; for detection and segmentation,
        ``data.classes`` or the largest label + 1."""
        if self.target is None:
            return int(self.logits.shape[1])
        names = self.spec.data.classes
        return len(names) if names is not None else int(self.batch.labels.max()) + 1

    def _check_logits(self, logits: Tensor) -> None:
        finite = torch.isfinite(logits).all(dim=1)
        if not bool(finite.all()):
            first = int(self.indices[(~finite).nonzero()[0]])
            raise SpecRuntimeError(
                ("model",),
                f"the model's logits are NaN or inf for {int((~finite).sum())} of {len(finite)} images "
                f"(first: sample {first}): check the weights and the model's numerics",
            )
        width = logits.shape[1]
        sums = logits.sum(dim=1)
        if (
            self.model.output_kind == "logits"
            and width > 1
            and bool(((logits >= 0).all(dim=1) & ((sums - 1).abs() < 1e-4)).all())
        ):
            raise SpecRuntimeError(
                ("model",),
                f"the model returns probabilities, not logits (every row of its (N, {width}) outputs is >= 0 and "
                "sums to 1): set model.output_kind: probabilities (taken as log-probabilities), or return logits",
            )
        labels = self.batch.labels
        if labels.numel() and int(labels.max()) >= width:
            position = int(labels.argmax())
            raise SpecRuntimeError(
                self.worker.source.location,
                f"label {int(labels[position])} (sample {int(self.indices[position])}) is outside the model's "
                f"{width} classes (its logits are (N, {width})): labels are class indices 0..{width - 1}",
            )
        classes = self.spec.data.classes
        if classes is not None and len(classes) != width:
            raise SpecRuntimeError(
                ("data", "classes"), f"data.classes names {len(classes)} classes but the model gives {width} logits"
            )

    @cached_property
    def predictions(self) -> Tensor:
        """``(B,)`` the predicted classes (detection, segmentation: the found sample's own class)."""
        return self.logits.argmax(dim=1) if self.target is None else self.batch.labels

    @property
    def correct(self) -> Tensor:
        """``(B,) bool``: the prediction equals the label."""
        return self.predictions == self.batch.labels

    @cached_property
    def targets(self) -> Tensor:
        """``(B,)`` the class each attribution explains (``target: label | predicted``); for
        detection and segmentation, each sample's own column of the :meth:`scored` model."""
        if self.target is not None:
            return torch.arange(len(self), device=self.device)
        return self.batch.labels if self.spec.target == "label" else self.predictions

    # --- attributions and saliency -----------------------------------------------------------

    def attributions(self, method: str) -> Tensor:
        """``(B, C, H, W)`` attributions of the named method, on the device (once per shard)."""
        if method not in self._attributions:
            self._attributions[method] = self.attributions_of(self.model, method)
        return self._attributions[method]

    def attributions_of(self, model: ModelUnderTest, method: str, targets: Tensor | None = None) -> Tensor:
        """``(B, C, H, W)`` attributions of ``model`` (another version, a randomised copy) by the
        spec's method ``method`` for ``targets`` (default :attr:`targets`), on the device, not
        cached; seeded per sample; out of memory, retried once at half the batch."""
        location = ("attributions", method)
        chosen = self.targets if targets is None else targets
        explained = model if self.target is None else self.scored(model)

        def attribute(batch_size: int) -> Tensor:
            attributor = Attributor(self.spec.attributions[method], explained, batch_size, location)
            parts = [
                attributor(self.images[part], chosen[part], self.indices[part].tolist(), self.spec.seed)
                for part in self.batches(batch_size)
            ]
            if attributor.note:
                self.notes[method] = attributor.note
            return torch.cat(parts)

        return run_with_half_batch_retry(attribute, self.worker.batch_size, location, "data.batch_size")

    def saliency_maps(self, method: str) -> Tensor:
        """``(B, H, W)`` maps after the spec's channel reduction."""
        return reduce_channels(self.attributions(method), self.spec.saliency.channels)

    def saliency_regions(self, method: str) -> tuple[Tensor, Tensor]:
        """``((B, H, W) bool regions, (B,) bool defined)``: normalised and binarised maps;
        ``defined`` is False for constant maps, which have no region."""
        return saliency_regions(self.saliency_maps(method), self.spec)

    def shared_interest(self, method: str) -> SharedInterestScores:
        """Per-sample IoU, GTC, SC (binary and continuous) against the ground-truth masks."""
        if method not in self._shared_interest:
            regions, defined = self.saliency_regions(method)
            masks = self.masks
            undefined = torch.where(defined, 0.0, torch.nan)  # NaN propagates to every score
            self._shared_interest[method] = SharedInterestScores(
                iou=shared_interest.iou(regions, masks) + undefined,
                gtc=shared_interest.ground_truth_coverage(regions, masks) + undefined,
                sc=shared_interest.saliency_coverage(regions, masks) + undefined,
                sc_continuous=shared_interest.saliency_coverage(self.saliency_maps(method), masks) + undefined,
            )
        return self._shared_interest[method]


def saliency_regions(maps: Tensor, spec: Spec) -> tuple[Tensor, Tensor]:
    """``(N, H, W)`` maps -> ``((N, H, W) bool regions, (N,) bool defined)`` by the spec's
    ``saliency.binarize`` rule; constant maps are undefined and have no region."""
    normalised, defined = normalize_maps(maps)
    regions = binarize(normalised, **spec.saliency.binarize.rule())
    return regions & defined.view(-1, 1, 1), defined
