"""Per-run state of the plugin: options, the engine cache and the collected results."""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from ._constants import DEFAULT_CACHE_MAX_MB, CacheMode
from .baselines import BaselineSettings, summary_lines

if TYPE_CHECKING:
    from pluggy import Result

    from .cache import ResultCache
    from .engine import EngineCache, Runner
    from .report.results import ItemResult
    from .spec.overrides import Override

SESSION_KEY = pytest.StashKey["SaliencySession"]()


@dataclass(eq=False)  # registered as a plugin: pluggy hashes plugins, so keep identity hashing
class SaliencySession:
    """Options of this run and every saliency result reported back (from workers too)."""

    device: str = "auto"
    strict: bool = False
    debug: bool = False  # --saliency-debug or -vv: failures show the original traceback too
    baselines: BaselineSettings = field(default_factory=BaselineSettings)
    results: list[ItemResult] = field(default_factory=list)
    report_path: str | None = None  # --saliency-report
    json_path: str | None = None  # --saliency-json
    markdown_path: str | None = None  # --saliency-markdown
    step_summary: str | None = None  # $GITHUB_STEP_SUMMARY: the Markdown is appended to it too
    overrides: tuple[Override, ...] = ()  # --saliency-set, in the order given
    progress: Callable[[str, int, int], None] | None = None  # the engines' progress callback (a terminal bar)
    report_lines: list[str] = field(default_factory=list)  # what write_reports wrote, for the summary
    runner: Runner | None = None  # where shards run: None in-process, else on a Ray cluster (--saliency-ray)
    cache_dir: Path | None = None  # the persistent result cache's folder (None: no cache)
    cache_mode: CacheMode = "off"  # --saliency-cache
    cache_max_mb: int = DEFAULT_CACHE_MAX_MB  # saliency_cache_max_mb
    cache_counts: dict[str, int] = field(default_factory=dict)  # shards cached/computed, entries unreadable
    cache_unreadable: str | None = None  # the first unreadable entry
    _engines: EngineCache | None = None
    _result_cache: ResultCache | None = None

    @property
    def engines(self) -> EngineCache:
        if self._engines is None:
            from .engine import EngineCache

            self._engines = EngineCache(size=2)
        return self._engines

    @property
    def result_cache(self) -> ResultCache | None:
        """The persistent result cache of this run's engines (None when off), made at first use."""
        if self.cache_dir is None or self.cache_mode == "off":
            return None
        if self._result_cache is None:
            from .cache import ResultCache

            self._result_cache = ResultCache(self.cache_dir, self.cache_mode, self.cache_max_mb << 20)
        return self._result_cache

    def take_cache_counts(self) -> dict[str, int | str | None] | None:
        """What the cache did since the last call (one item's run), or None when nothing; it
        travels to the xdist controller with the item's report."""
        if self._result_cache is None:
            return None
        counts = self._result_cache.take_counts()
        return asdict(counts) if counts.cached or counts.computed or counts.unreadable else None

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Generator[None, Result[None], None]:
        """Erase a progress bar whose computation did not finish when the item ends."""
        try:
            yield
        finally:
            close = getattr(self.progress, "close", None)
            if close is not None:
                close()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Keep each item's result; under xdist the reports arrive here from every worker."""
        result: ItemResult | None = getattr(report, "saliency", None)  # a dict, from an xdist worker too
        if result is not None and report.when == "call":
            result.setdefault("nodeid", report.nodeid)
            line = report.location[1]
            result.setdefault("line", None if line is None else line + 1)  # the check's line in the spec
            result.setdefault("duration", round(report.duration, 6))
            self.results.append(result)
        counts = getattr(report, "saliency_cache", None)
        if counts is not None and report.when == "call":
            for name in ("cached", "computed", "unreadable"):
                self.cache_counts[name] = self.cache_counts.get(name, 0) + int(counts[name])
            self.cache_unreadable = self.cache_unreadable or counts["first_unreadable"]

    @property
    def wants_thumbnails(self) -> bool:
        """Items attach example thumbnails to their results only when a report or JSON file is asked for."""
        return bool(self.report_path or self.json_path)

    def write_reports(self, *, interrupted: bool = False) -> tuple[bool, bool]:
        """Write the JSON results, HTML report and Markdown summary the options (and
        ``$GITHUB_STEP_SUMMARY``) ask for (on the controller only; beside the asked-for paths for
        an ``interrupted`` run). Returns ``(missing, interrupted)``: a file asked for could not be
        written, a Ctrl-C came while writing."""
        step_summary = self.step_summary if self.results else None  # a run of no spec adds nothing to the job page
        if not (self.wants_thumbnails or self.markdown_path or step_summary):
            return False, False
        from .report.outputs import write_run_outputs

        outputs = write_run_outputs(
            self.results,
            report_path=self.report_path,
            json_path=self.json_path,
            markdown_path=self.markdown_path,
            step_summary=step_summary,
            overrides=[str(override) for override in self.overrides],
            interrupted=interrupted,
        )
        self.report_lines = outputs.lines
        return outputs.missing, outputs.interrupted

    def cache_summary(self) -> list[str]:
        """Lines for the end of the run: how many shards came from the result cache."""
        counts = self.cache_counts
        cached, computed, unreadable = (counts.get(name, 0) for name in ("cached", "computed", "unreadable"))
        if self.cache_mode == "off" or not cached + computed + unreadable:
            return []
        lines = [f"saliency cache: {cached} of {cached + computed} shards from the cache, {computed} computed"]
        if unreadable:
            lines.append(
                f"saliency cache: {unreadable} unreadable entr{'ies' if unreadable != 1 else 'y'} ignored and "
                f"recomputed (first: {self.cache_unreadable})"
            )
        return lines

    def baseline_summary(self) -> list[str]:
        """Lines for the end of the run: baselines created/updated/unchanged, obtained files."""
        return summary_lines(self.results, self.baselines)
