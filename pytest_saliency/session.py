"""Per-run state of the plugin: options, the engine cache and the collected results."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .engine import EngineCache

SESSION_KEY = pytest.StashKey["SaliencySession"]()


@dataclass
class SaliencySession:
    """Options of this run and every saliency result reported back (from workers too)."""

    device: str = "auto"
    strict: bool = False
    results: list[dict[str, Any]] = field(default_factory=list)
    _engines: EngineCache | None = None

    @property
    def engines(self) -> EngineCache:
        if self._engines is None:
            from .engine import EngineCache

            self._engines = EngineCache(size=2)
        return self._engines

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Keep each item's result; under xdist the reports arrive here from every worker."""
        result = getattr(report, "saliency", None)
        if result is not None and report.when == "call":
            self.results.append(result)
