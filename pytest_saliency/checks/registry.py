"""The table of check kinds: the one place the runners and the items find a kind by its key.

Every key of the spec language's :class:`~pytest_saliency.spec.schema.CheckSpec` names a module
of this package that defines ``KIND``, its :class:`~.kind.CheckKind`; adding a kind is its config
in the schema and its module here (docs/checks.md), nothing else.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Protocol

from torch import Tensor

from ..baselines.settings import BaselineSettings
from ..spec.schema import CheckSpec
from ..streaming import PassResult, Shard
from .kind import CheckKind, ItemScope
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


def _load(name: str, config_type: type) -> RegisteredKind:
    """The ``KIND`` of the module ``name``, checked against the schema's config type for it."""
    kind: object = getattr(import_module(f"{__package__}.{name}"), "KIND", None)
    if not isinstance(kind, CheckKind) or kind.name != name or kind.config_type is not config_type:
        raise TypeError(f"{__package__}.{name}.KIND must be CheckKind({name!r}, {config_type.__name__}, ...)")
    return kind


KINDS: dict[str, RegisteredKind] = {name: _load(name, config) for name, config in CheckSpec.kinds().items()}


def kind_of(check: CheckSpec) -> RegisteredKind:
    """The kind of ``check`` (the key of its block)."""
    return KINDS[check.kind]
