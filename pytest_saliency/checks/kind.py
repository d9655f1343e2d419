"""The interface every check kind implements.

A kind is one :class:`CheckKind` value over its own config type (the block under its key in a
spec, a :class:`~pytest_saliency.spec.schema.CheckConfig`):

- ``statistics(shard, config, method) -> {name: (B, ...) tensor}``: the per-sample statistics of
  one shard (:class:`~pytest_saliency.streaming.Shard`), pure tensor code on the shard's device;
- ``decide(request) -> Outcome``: the item's outcome from the merged statistics of every shard
  (``request.statistics``, ``(N, ...)``), for the item's class or slice (``request.selection``).

:mod:`.registry` lists the kinds; the runners and the plugin reach a kind only through it, and a
kind receives its config already narrowed to its own type (docs/checks.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic

from torch import Tensor

from ..spec.schema import CheckSpec
from ..streaming import PassResult, Shard
from .outcome import Outcome
from .request import CheckRequest, ConfigT

if TYPE_CHECKING:
    from ..baselines import BaselineSettings
    from ..engine import SpecEngine


@dataclass(frozen=True)
class CheckKind(Generic[ConfigT]):
    """One kind of check: its key in a spec, its config type and its two functions."""

    name: str
    config_type: type[ConfigT]
    statistics: Callable[[Shard, ConfigT, str | None], dict[str, Tensor]]
    decide: Callable[[CheckRequest[ConfigT]], Outcome]

    def config_of(self, check: CheckSpec) -> ConfigT:
        """``check``'s block as this kind's config type."""
        config = check.config
        if not isinstance(config, self.config_type):
            raise TypeError(f"check {check.id!r} is a {check.kind} check, not a {self.name} check")
        return config

    def shard_statistics(self, shard: Shard, check: CheckSpec, method: str | None) -> dict[str, Tensor]:
        """:attr:`statistics` of ``check`` on one shard."""
        return self.statistics(shard, self.config_of(check), method)

    def outcome(
        self,
        engine: SpecEngine,
        check: CheckSpec,
        item: ItemScope,
        result: PassResult,
        baselines: BaselineSettings,
    ) -> Outcome:
        """:attr:`decide` of one item of ``check`` over the pass's merged statistics."""
        request = CheckRequest(
            engine, check, self.config_of(check), item.method, item.class_index, result, baselines, item.slice_value
        )
        return self.decide(request)


@dataclass(frozen=True)
class ItemScope:
    """What one item of a check looks at: an attribution method (None for kinds without one), a
    class (with ``per_class``) or a slice value (with ``slices``)."""

    method: str | None
    class_index: int | None = None
    slice_value: str | None = None
