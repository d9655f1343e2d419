"""The table of check kinds: the one place the runners and the items find a kind by its key.

Every key of the spec language's :class:`~pytest_saliency.spec.schema.CheckSpec` names a module
of this package that defines ``KIND``, its :class:`~.kind.CheckKind`; adding a kind is its config
in the schema and its module here (docs/checks.md), nothing else.
"""

from __future__ import annotations

from importlib import import_module

from ..spec.schema import CheckConfig, CheckSpec
from .kind import CheckKind


def _load(name: str, config_type: type[CheckConfig]) -> CheckKind[CheckConfig]:
    """The ``KIND`` of the module ``name``, checked against the schema's config type for it."""
    kind: object = getattr(import_module(f"{__package__}.{name}"), "KIND", None)
    if not isinstance(kind, CheckKind) or kind.name != name or kind.config_type is not config_type:
        raise TypeError(f"{__package__}.{name}.KIND must be CheckKind({name!r}, {config_type.__name__}, ...)")
    return kind


KINDS: dict[str, CheckKind[CheckConfig]] = {name: _load(name, config) for name, config in CheckSpec.kinds().items()}


def kind_of(check: CheckSpec) -> CheckKind[CheckConfig]:
    """The kind of ``check`` (the key of its block)."""
    return KINDS[check.kind]
