"""Check evaluators, one module per kind of check; each has ``evaluate(request) -> Outcome``."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .base import CheckRequest, Outcome


def evaluator(kind: str) -> Callable[[CheckRequest], Outcome]:
    """The ``evaluate`` function of ``pytest_saliency.checks.<kind>`` (imported on first use)."""
    evaluate: Callable[[CheckRequest], Outcome] = importlib.import_module(f"{__name__}.{kind}").evaluate
    return evaluate
