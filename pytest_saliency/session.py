"""Per-run state of the plugin: options, the engine cache and the collected results."""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

from .baseline_session import BaselineSettings, activated, summary_lines

if TYPE_CHECKING:
    from .engine import EngineCache

SESSION_KEY = pytest.StashKey["SaliencySession"]()


@dataclass(eq=False)  # registered as a plugin: pluggy hashes plugins, so keep identity hashing
class SaliencySession:
    """Options of this run and every saliency result reported back (from workers too)."""

    device: str = "auto"
    strict: bool = False
    baselines: BaselineSettings = field(default_factory=BaselineSettings)
    results: list[dict[str, Any]] = field(default_factory=list)
    _engines: EngineCache | None = None

    @property
    def engines(self) -> EngineCache:
        if self._engines is None:
            from .engine import EngineCache

            self._engines = EngineCache(size=2)
        return self._engines

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Generator[None, Any, None]:
        """Items run with this run's baseline settings active (the drift check reads them)."""
        with activated(self.baselines):
            yield

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Keep each item's result; under xdist the reports arrive here from every worker."""
        result = getattr(report, "saliency", None)
        if result is not None and report.when == "call":
            self.results.append(result)

    def baseline_summary(self) -> list[str]:
        """Lines for the end of the run: baselines created/updated/unchanged, obtained files."""
        return summary_lines(self.results, self.baselines)
