"""The table of check kinds: the one place the runners and the plugin find a kind by its key."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from torch import Tensor

from ..baselines import BaselineSettings
from ..spec.schema import CheckSpec
from ..streaming import PassResult, Shard
from . import complexity, drift, fidelity, localisation, patterns, region, robustness, sanity, shared_interest
from .kind import ItemScope
from .outcome import Outcome

if TYPE_CHECKING:
    from ..engine import SpecEngine


class RegisteredKind(Protocol):
    """What the table holds: a :class:`~.kind.CheckKind` of any config type, called with the
    check's spec entry (it narrows the config to its own type itself)."""

    @property
    def name(self) -> str: ...

    def shard_statistics(self, shard: Shard, check: CheckSpec, method: str | None) -> dict[str, Tensor]: ...

    def outcome(
        self,
        engine: SpecEngine,
        check: CheckSpec,
        item: ItemScope,
        result: PassResult,
        baselines: BaselineSettings,
    ) -> Outcome: ...


KINDS: dict[str, RegisteredKind] = {
    kind.name: kind
    for kind in (
        shared_interest.KIND,
        patterns.KIND,
        fidelity.KIND,
        drift.KIND,
        region.KIND,
        sanity.KIND,
        localisation.KIND,
        complexity.KIND,
        robustness.KIND,
    )
}


def kind_of(check: CheckSpec) -> RegisteredKind:
    """The kind of ``check`` (the key of its block)."""
    return KINDS[check.kind]
