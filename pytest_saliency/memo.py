"""Derived values worth keeping between runs: deciding an item computes some values that depend
only on the statistics and on settings that are not thresholds (a bootstrap interval, a drift
check's k-means clusters). The code that computes them calls :func:`remembered`; while the plugin
decides an item, :func:`deciding_with` routes those calls through the run's result cache
(:meth:`pytest_saliency.cache.ResultCache.remember`), so a warm run or an edited threshold reads
them instead of computing them again. Outside it, :func:`remembered` just computes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar

from torch import Tensor

Compute = Callable[[], Sequence[Tensor]]
Remember = Callable[[str, Sequence[Tensor], dict[str, object], Compute], list[Tensor]]
"""``remember(name, inputs, settings, compute)`` -> ``compute()``'s tensors, on the CPU."""

_REMEMBER: ContextVar[Remember | None] = ContextVar("saliency_remember", default=None)


@contextlib.contextmanager
def deciding_with(remember: Remember | None) -> Iterator[None]:
    """Meanwhile, :func:`remembered` goes through ``remember`` (it just computes when None)."""
    token = _REMEMBER.set(remember)
    try:
        yield
    finally:
        _REMEMBER.reset(token)


def remembered(name: str, inputs: Sequence[Tensor], settings: dict[str, object], compute: Compute) -> list[Tensor]:
    """``compute()``, a deterministic function ``name`` of ``inputs`` and ``settings`` (JSON
    values; never a threshold), on the CPU: from the cache :func:`deciding_with` names when there
    is one."""
    remember = _REMEMBER.get()
    if remember is None:
        return [value.detach().cpu() for value in compute()]
    return remember(name, inputs, settings, compute)
