"""One item's question to its check kind (:class:`CheckRequest`), and where a check's block is."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Generic, TypeVar

import numpy as np
import torch
from torch import Tensor

from ..baselines.settings import BaselineSettings
from ..errors import Location, SpecRuntimeError, did_you_mean
from ..memory import run_with_half_batch_retry
from ..spec.schema import CheckConfig, CheckSpec, SlicesSpec
from ..spec.validate import format_location
from ..streaming import Need, PassResult, Shard

if TYPE_CHECKING:
    from ..engine import SpecEngine

T = TypeVar("T")
ConfigT = TypeVar("ConfigT", bound=CheckConfig)


@dataclass(frozen=True)
class CheckRequest(Generic[ConfigT]):
    """One item's question: this check (its block in the spec, ``config``, typed by its kind), for
    this method (if any) and class (if per class), with the merged per-sample statistics of the
    spec's pass (``result``)."""

    engine: SpecEngine
    check: CheckSpec
    config: ConfigT
    method: str | None
    class_index: int | None
    result: PassResult
    baselines: BaselineSettings = field(default_factory=BaselineSettings)
    """Where drift snapshots live and whether this run may write them."""
    slice_value: str | None = None
    """With ``slices``: the value of the per-sample field this item looks at."""

    @property
    def need(self) -> Need:
        return Need(self.engine.spec.checks.index(self.check), self.method)

    @property
    def statistics(self) -> dict[str, Tensor]:
        """This check's per-sample ``(N, ...)`` statistics for this method, all samples."""
        return self.result.of(self.need)

    @property
    def location(self) -> Location:
        """Where the check's block is in the spec: ``("checks", i, kind)``."""
        return ("checks", self.need.check_index, self.check.kind)

    @cached_property
    def selection(self) -> Tensor:
        """``(N,) bool``: the samples this item looks at (one class or one slice, or all)."""
        labels = self.result.labels
        chosen = torch.ones_like(labels, dtype=torch.bool) if self.class_index is None else labels == self.class_index
        if self.slice_value is not None:
            chosen &= torch.from_numpy(self._slice_field() == self.slice_value)
        return chosen

    @property
    def indices(self) -> Tensor:
        """``(M,)`` the data set positions of the selected samples."""
        return self.result.indices[self.selection]

    def no_samples(self) -> list[str]:
        """``["no samples of class 'cat'"]`` (or ``of slice site=A``) when the item's class or slice
        has no samples (its outcome then fails), else ``[]``: the first line of its details."""
        if bool(self.selection.any()):
            return []
        if self.slice_value is not None:
            return [f"no samples of slice {self._slices.by}={self.slice_value}"]
        classes = self.engine.spec.data.classes
        index = self.class_index
        named = classes[index] if classes and index is not None and index < len(classes) else index
        return [f"no samples of class {named!r}"]

    @property
    def _slices(self) -> SlicesSpec:
        slices = self.config.slicing
        if slices is None:
            raise ValueError(f"check {self.check.id!r} has no slices, and its item no slice value")
        return slices

    def _slice_field(self) -> np.ndarray:
        slices = self._slices
        fields = self.result.fields
        if slices.by not in fields:
            where = (*self.location, "slices", "by")
            named = ", ".join(fields) or "none"
            raise SpecRuntimeError(
                where,
                f"the data has no per-sample field {slices.by!r}{did_you_mean(slices.by, fields)}; its fields: {named}",
            )
        return fields[slices.by]


def config_location(shard: Shard, config: CheckConfig) -> Location:
    """``("checks", i, kind)``: where the check whose block is ``config`` is in the shard's spec."""
    index, check = next((i, check) for i, check in enumerate(shard.spec.checks) if check.config is config)
    return ("checks", index, check.kind)


def run_in_batches(shard: Shard, config: CheckConfig, own_batch_size: int | None, run: Callable[[int], T]) -> T:
    """``run(batch_size)`` at the check's own ``batch_size`` (else ``data.batch_size``), retried
    once at half the batch when it runs out of memory; out of memory again is one line at the
    check's block that names the setting to lower."""
    location = config_location(shard, config)
    setting = f"{format_location(location)}.batch_size" if own_batch_size else "data.batch_size"
    return run_with_half_batch_retry(run, own_batch_size or shard.worker.batch_size, location, setting)
