"""The engine behind a spec: model and data loaded once, attributions computed once per method.

Everything is lazy and cached on the engine: the clean forward pass, each method's attributions
(batched, on the chosen device), saliency maps and regions, Shared Interest scores. Check
evaluators ask the engine for what they need; the session keeps a small LRU of engines
(:class:`EngineCache`, below) so that a shuffled test order does not recompute.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch
from torch import Tensor

from .attribution import Attributor
from .errors import Location, SpecRuntimeError, model_stage
from .loaders.data import SaliencyData, load_data
from .loaders.models import ModelUnderTest, load_model
from .memory import run_with_half_batch_retry
from .metrics import shared_interest
from .metrics.saliency import binarize, normalize_maps, reduce_channels
from .spec.schema import AgainstSpec
from .spec.validate import LoadedSpec

Progress = Callable[[str, int, int], None]


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


@dataclass(frozen=True)
class SharedInterestScores:
    """Per-sample ``(N,)`` scores; NaN marks an undefined sample (empty region, constant map)."""

    iou: Tensor
    gtc: Tensor
    sc: Tensor
    sc_continuous: Tensor

    def as_dict(self) -> dict[str, Tensor]:
        return {"iou": self.iou, "gtc": self.gtc, "sc": self.sc, "sc_continuous": self.sc_continuous}


class SpecEngine:
    """Computes what the checks of one spec need, once."""

    def __init__(
        self,
        loaded: LoadedSpec,
        device: torch.device,
        search_paths: tuple[Path, ...] = (),
        progress: Progress | None = None,
    ) -> None:
        self.loaded = loaded
        self.spec = loaded.spec
        self.device = device
        self.search_paths = (*search_paths, loaded.directory)
        self.batch_size = self.spec.data.batch_size
        self.progress = progress
        self._attributions: dict[str, Tensor] = {}
        self._shared_interest: dict[str, SharedInterestScores] = {}
        self._references: dict[str, ModelUnderTest] = {}
        self._reference_attributions: dict[tuple[str, str], Tensor] = {}

    # --- inputs ----------------------------------------------------------------------------

    @cached_property
    def model(self) -> ModelUnderTest:
        # Loaded outside inference mode whoever asks first: tensors created inside it could
        # never take part in the gradient computations of attributions later.
        with torch.inference_mode(False):
            return load_model(self.spec.model, self.loaded.directory, self.search_paths, self.device)

    @cached_property
    def data(self) -> SaliencyData:
        with torch.inference_mode(False):  # see model
            return load_data(self.spec.data, self.loaded.directory, self.search_paths)

    def batches(self, count: int | None = None, batch_size: int | None = None) -> Iterator[slice]:
        """Consecutive slices of ``batch_size`` (default: ``data.batch_size``) over the first
        ``count`` samples (default: all)."""
        total = len(self.data) if count is None else count
        size = batch_size or self.batch_size
        for start in range(0, total, size):
            yield slice(start, min(start + size, total))

    @cached_property
    def logits(self) -> Tensor:
        """``(N, classes)`` logits of the clean images, on the CPU, checked: finite, as wide as
        the labels and ``data.classes`` need. Every check item asks for them first, so a model
        or data set that does not fit fails here, at its place in the spec."""
        shape = tuple(self.data.images.shape[1:])

        def forward(batch_size: int) -> Tensor:
            with torch.inference_mode():
                parts = [
                    self.model(self.data.images[part].to(self.device)) for part in self.batches(batch_size=batch_size)
                ]
                return torch.cat([part.float().cpu() for part in parts])

        with model_stage(("model",), f"the model failed on images of shape {shape}"):
            logits = run_with_half_batch_retry(forward, self.batch_size, ("data", "batch_size"), "data.batch_size")
        self._check_logits(logits)
        return logits

    def _check_logits(self, logits: Tensor) -> None:
        finite = torch.isfinite(logits).all(dim=1)
        if not bool(finite.all()):
            first = int((~finite).nonzero()[0])
            raise SpecRuntimeError(
                ("model",),
                f"the model's logits are NaN or inf for {int((~finite).sum())} of {len(finite)} images "
                f"(first: sample {first}): check the weights and the model's numerics",
            )
        width = logits.shape[1]
        labels = self.data.labels
        if labels.numel() and int(labels.max()) >= width:
            index = int(labels.argmax())
            raise SpecRuntimeError(
                self.data.location,
                f"label {int(labels[index])} (sample {index}) is outside the model's {width} classes "
                f"(its logits are (N, {width})): labels are class indices 0..{width - 1}",
            )
        classes = self.spec.data.classes
        if classes is not None and len(classes) != width:
            raise SpecRuntimeError(
                ("data", "classes"), f"data.classes names {len(classes)} classes but the model gives {width} logits"
            )

    @cached_property
    def predictions(self) -> Tensor:
        return self.logits.argmax(dim=1)

    @cached_property
    def correct(self) -> Tensor:
        """``(N,) bool``: the prediction equals the label."""
        return self.predictions == self.data.labels

    @cached_property
    def targets(self) -> Tensor:
        """``(N,)`` the class each attribution explains (``target: label | predicted``)."""
        return self.data.labels if self.spec.target == "label" else self.predictions

    # --- attributions and saliency -----------------------------------------------------------

    def attributions(self, method: str) -> Tensor:
        """``(N, C, H, W)`` attributions of the named method, on the CPU."""
        if method not in self._attributions:
            self._attributions[method] = self._attribute(self.model, method, f"{self.loaded.name}: {method}")
        return self._attributions[method]

    def attributions_of(self, model: ModelUnderTest, method: str, label: str, targets: Tensor | None = None) -> Tensor:
        """``(N, C, H, W)`` attributions of another ``model`` (a randomised copy, say) by the spec's
        method ``method``, on the CPU, not cached; ``targets`` ``(N,)`` default to :attr:`targets`."""
        return self._attribute(model, method, label, targets)

    def _attribute(self, model: ModelUnderTest, method: str, label: str, targets: Tensor | None = None) -> Tensor:
        """Attributions of ``model`` for the spec's method ``method``, for ``targets`` (default
        :attr:`targets`), batched and seeded the same way whatever the model; out of memory,
        retried once at half the batch."""
        self.logits  # noqa: B018  (the model and data are checked before any attribution)
        location = ("attributions", method)
        chosen = self.targets if targets is None else targets

        def attribute(batch_size: int) -> Tensor:
            attributor = Attributor(self.spec.attributions[method], model, batch_size, location)
            torch.manual_seed(self.spec.seed)
            generator = torch.Generator().manual_seed(self.spec.seed)
            parts = []
            for part in self.batches(batch_size=batch_size):
                images = self.data.images[part].to(self.device)
                parts.append(attributor(images, chosen[part].to(self.device), generator).cpu())
                if self.progress:
                    self.progress(label, part.stop, len(self.data))
            return torch.cat(parts)

        return run_with_half_batch_retry(attribute, self.batch_size, location, "data.batch_size")

    def saliency_maps(self, method: str) -> Tensor:
        """``(N, H, W)`` maps after the spec's channel reduction."""
        return reduce_channels(self.attributions(method), self.spec.saliency.channels)

    def saliency_regions(self, method: str) -> tuple[Tensor, Tensor]:
        """``((N, H, W) bool regions, (N,) bool defined)``: normalised and binarised maps;
        ``defined`` is False for constant maps, which have no region."""
        normalised, defined = normalize_maps(self.saliency_maps(method))
        regions = binarize(normalised, **self.spec.saliency.binarize.rule())
        return regions & defined.view(-1, 1, 1), defined

    def shared_interest(self, method: str) -> SharedInterestScores:
        """Per-sample IoU, GTC, SC (binary and continuous) against the ground-truth masks."""
        if method not in self._shared_interest:
            regions, defined = self.saliency_regions(method)
            masks = self.data.masks
            undefined = torch.where(defined, 0.0, torch.nan)  # NaN propagates to every score
            self._shared_interest[method] = SharedInterestScores(
                iou=shared_interest.iou(regions, masks) + undefined,
                gtc=shared_interest.ground_truth_coverage(regions, masks) + undefined,
                sc=shared_interest.saliency_coverage(regions, masks) + undefined,
                sc_continuous=shared_interest.saliency_coverage(self.saliency_maps(method), masks) + undefined,
            )
        return self._shared_interest[method]

    # --- other model versions and hashes (drift) ----------------------------------------------

    def reference_model(self, against: AgainstSpec, location: Location) -> ModelUnderTest:
        """The model version a drift check's ``against: {weights | model}`` names, loaded once.

        ``weights``: the spec's own factory, kwargs and normalize with other weights; ``model``: a
        whole model block. ``location`` is where the ``against`` block is in the spec (errors)."""
        if against.stored is not None:
            raise ValueError("a stored snapshot has no model; load it with the snapshot store")
        key = against.model_dump_json()
        if key not in self._references:
            self.model  # noqa: B018  (the spec's own model loads first: its errors point at model:)
            if against.model is not None:
                spec, where = against.model, location + ("model",)
            elif self.spec.model.factory is None:
                raise SpecRuntimeError(
                    location + ("weights",),
                    "against.weights replaces the weights of the spec's factory, but the model is TorchScript: "
                    "give against.model instead",
                )
            else:
                spec, where = self.spec.model.model_copy(update={"weights": against.weights}), location
            with torch.inference_mode(False):  # see model
                self._references[key] = load_model(spec, self.loaded.directory, self.search_paths, self.device, where)
        return self._references[key]

    def reference_attributions(self, against: AgainstSpec, method: str, location: Location) -> Tensor:
        """``(N, C, H, W)`` attributions of :meth:`reference_model` for the named method, on the CPU,
        for the same images and :attr:`targets` as the spec's own model (computed once)."""
        key = (against.model_dump_json(), method)
        if key not in self._reference_attributions:
            model = self.reference_model(against, location)
            label = f"{self.loaded.name}: {method} (reference version)"
            self._reference_attributions[key] = self._attribute(model, method, label)
        return self._reference_attributions[key]

    @cached_property
    def data_hash(self) -> str:
        """A short hash of the images and labels (what a drift snapshot must have been made from)."""
        from .baselines.store import content_hash

        return content_hash({"images": self.data.images, "labels": self.data.labels})

    @cached_property
    def weights_file(self) -> dict[str, str] | None:
        """The file the spec's model comes from (its ``weights``, or its ``torchscript`` file):
        ``{"path": ..., "sha256": ...}``, the path relative to the working directory when it lies
        below it; None for a factory without weights. Every report names it."""
        from .report.format import shown_path

        name = self.spec.model.weights or self.spec.model.torchscript
        if name is None:
            return None
        path = self.loaded.resolve(name)
        digest = hashlib.sha256()
        with open(path, "rb") as stream:
            for chunk in iter(lambda: stream.read(1 << 20), b""):
                digest.update(chunk)
        return {"path": shown_path(str(path)), "sha256": digest.hexdigest()}

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
