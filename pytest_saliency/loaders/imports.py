"""Resolve ``"package.module:callable"`` references written in a spec."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from ..errors import Location, SpecRuntimeError, describe_exception

Made = TypeVar("Made")


def resolve_callable(reference: str, search_paths: Sequence[Path], location: Location) -> Callable[..., object]:
    """Import ``module:attr``; ``search_paths`` (the rootdir, the spec's folder) are tried first,
    as pytest does for conftest files. Failures raise :class:`SpecRuntimeError` at ``location``."""
    module_name, _, attribute = reference.partition(":")
    added = [str(path) for path in search_paths if str(path) not in sys.path]
    sys.path[:0] = added
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise SpecRuntimeError(location, f"cannot import {module_name!r}: {error}") from None
    finally:
        for path in added:
            sys.path.remove(path)
    target: object = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise SpecRuntimeError(location, f"module {module_name!r} has no attribute {attribute!r}")
        target = getattr(target, part)
    if not callable(target):
        raise SpecRuntimeError(location, f"{reference!r} is not callable")
    return target


def call_factory(
    factory: Callable[..., Made], kwargs: Mapping[str, object], reference: str, location: Location
) -> Made:
    """Call a user factory; its exception becomes one line naming the factory."""
    try:
        return factory(**kwargs)
    except Exception as error:  # the user's code: report it, do not crash the run
        raise SpecRuntimeError(
            location, f"{reference}({_kwargs(kwargs)}) raised {describe_exception(error)}"
        ) from error


def _kwargs(kwargs: Mapping[str, object]) -> str:
    return ", ".join(f"{key}={value!r}" for key, value in kwargs.items())
