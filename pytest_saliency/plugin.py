"""pytest hooks and options of pytest-saliency; nothing else lives here.

This module is imported by every pytest run in an environment where the plugin is installed,
so it imports nothing heavy: torch, captum and pydantic load when a spec file is collected.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Generator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from ._constants import CACHE_MODES, DEFAULT_CACHE_MAX_MB, SPEC_SUFFIXES, STEP_SUMMARY, CacheMode
from .baselines.settings import DEFAULT_DIRNAME, UPDATE_MODES, ci_is_set, settings_from_config
from .collect import CheckItem, SpecErrorItem, SpecFile
from .session import SESSION_KEY, SaliencySession

if TYPE_CHECKING:
    from pluggy import Result

    from .cluster import RayRunner
    from .engine import SpecEngine


_RESTORE_SIGTERM = pytest.StashKey[Callable[[], None]]()
"""Puts back the SIGTERM handler the run found (:func:`~pytest_saliency.signals.handle_sigterm_as_interrupt`)."""


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("saliency", "saliency checks (pytest-saliency)")
    group.addoption(
        "--saliency-device",
        default=None,
        help="device for models and attributions: auto (CUDA when available, else CPU), cpu, cuda, cuda:N. "
        "Default: the saliency_device ini value, else auto.",
    )
    group.addoption(
        "--saliency-strict",
        action="store_true",
        default=False,
        help="fail checks declared with severity: warn, and inconclusive ones (decide: interval), too "
        "(for a pre-deployment gate).",
    )
    group.addoption(
        "--saliency-debug",
        action="store_true",
        default=False,
        help="show the original Python traceback under the one-line message of a run-time error (-vv does too).",
    )
    group.addoption(
        "--saliency-update-baselines",
        action="store_true",
        default=False,
        help="write the drift snapshots (stored baselines) of the selected checks (which ones: --saliency-update-mode). "
        "A normal run never writes one.",
    )
    group.addoption(
        "--saliency-update-mode",
        choices=UPDATE_MODES,
        default=None,
        help="with --saliency-update-baselines: missing = create absent snapshots only; changed (default) = "
        "also rewrite those whose content or settings differ; all = rewrite every snapshot the run touches.",
    )
    group.addoption(
        "--saliency-allow-ci-update",
        action="store_true",
        default=False,
        help="allow --saliency-update-baselines when the CI environment variable is set (refused otherwise).",
    )
    group.addoption(
        "--saliency-report",
        metavar="PATH",
        default=None,
        help="write a self-contained HTML report of the saliency checks (summary, worst examples, charts) to PATH.",
    )
    group.addoption(
        "--saliency-json",
        metavar="PATH",
        default=None,
        help="write the saliency results as JSON to PATH (schema: pytest_saliency/report/results.schema.json).",
    )
    group.addoption(
        "--saliency-markdown",
        metavar="PATH",
        default=None,
        help="write a Markdown summary of the saliency checks to PATH (also appended to $GITHUB_STEP_SUMMARY when set).",
    )
    group.addoption(
        "--saliency-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set a value of every spec, as if written in it: a dotted key and a YAML value, e.g. "
        "model.weights=candidate.pt or checks.0.decide=interval (repeatable). Paths are relative to where "
        "pytest is invoked. Recorded in --saliency-json as overrides.",
    )
    group.addoption(
        "--saliency-ray",
        nargs="?",
        const="local",
        default=None,
        metavar="ADDRESS",
        help="compute the specs' shards on a Ray cluster: alone, a local one started for the run; "
        "--saliency-ray=ADDRESS connects to one (auto, ray://head:10001). Needs pytest-saliency[ray].",
    )
    group.addoption(
        "--saliency-workers",
        type=int,
        default=None,
        metavar="N",
        help="with --saliency-ray: the number of Ray actors (default: one per GPU of the cluster, else 2).",
    )
    group.addoption(
        "--saliency-cache",
        choices=CACHE_MODES,
        default=None,
        help="the persistent result cache of per-shard statistics: readwrite (default) reuses and stores, "
        "read only reuses, write only stores (recomputing everything), off ignores it. "
        "Kept under pytest's cache folder (-p no:cacheprovider turns it off, --cache-clear clears it) "
        "or saliency_cache_dir.",
    )
    parser.addini("saliency_device", "default for --saliency-device", default="auto")
    parser.addini(
        "saliency_cache_dir",
        "folder of the persistent result cache, relative to the ini file (default: saliency/ in pytest's cache folder)",
        default="",
    )
    parser.addini(
        "saliency_cache_max_mb",
        f"bound of the result cache's folder in MiB; least recently used entries go first (default {DEFAULT_CACHE_MAX_MB})",
        default=str(DEFAULT_CACHE_MAX_MB),
    )
    parser.addini(
        "saliency_baseline_dir",
        "folder for drift snapshots, relative to the ini file (default: saliency-baselines/ beside each spec)",
        default="",
    )


def pytest_configure(config: pytest.Config) -> None:
    from .spec.overrides import Override  # stdlib and PyYAML only

    try:
        overrides = tuple(Override.parse(argument) for argument in config.getoption("saliency_set"))
    except ValueError as error:
        raise pytest.UsageError(str(error)) from None
    session = SaliencySession(
        overrides=overrides,
        device=config.getoption("saliency_device") or config.getini("saliency_device"),
        strict=config.getoption("saliency_strict"),
        debug=config.getoption("saliency_debug") or config.getoption("verbose") >= 2,
        baselines=settings_from_config(config),
        report_path=_output_path(config, "saliency_report"),
        json_path=_output_path(config, "saliency_json"),
        markdown_path=_output_path(config, "saliency_markdown"),
        step_summary=os.environ.get(STEP_SUMMARY) or None,
    )
    session.runner = _ray_runner(config, session.device)
    session.cache_dir, session.cache_mode, session.cache_max_mb = _result_cache(config)
    from .signals import handle_sigterm_as_interrupt  # stdlib only; after Ray's init, which sets its own

    config.stash[_RESTORE_SIGTERM] = handle_sigterm_as_interrupt()
    from .report.progress import for_config  # stdlib and pytest only

    session.progress = for_config(config)
    config.stash[SESSION_KEY] = session
    config.pluginmanager.register(session, "saliency-session")
    config.addinivalue_line("markers", "saliency: a check from a *.saliency.yaml spec file")


def _ray_runner(config: pytest.Config, device: str) -> RayRunner | None:
    """The runner of ``--saliency-ray`` (None without it); its usage errors, one line each."""
    address = config.getoption("saliency_ray")
    workers = config.getoption("saliency_workers")
    if address is None:
        if workers is not None:
            raise pytest.UsageError("--saliency-workers needs --saliency-ray (it counts Ray actors)")
        return None
    if workers is not None and workers < 1:
        raise pytest.UsageError(f"--saliency-workers {workers}: give 1 or more")
    if (config.invocation_params.dir / address).exists():
        raise pytest.UsageError(
            f"--saliency-ray {address}: that is a path, not a Ray address: "
            f"write --saliency-ray=ADDRESS, or put --saliency-ray after the paths"
        )
    if getattr(config.option, "numprocesses", None) or hasattr(config, "workerinput"):
        raise pytest.UsageError(
            "--saliency-ray and -n (pytest-xdist) do not combine: every xdist worker would start its own "
            "Ray actors; use --saliency-ray alone, it spreads each spec's shards over the cluster"
        )
    from .cluster import INSTALL_HINT, RayRunner  # stdlib only
    from .errors import ClusterUnavailable

    try:
        import ray  # noqa: F401
    except ImportError:
        raise pytest.UsageError(INSTALL_HINT) from None
    runner = RayRunner(address, workers, device)
    if not config.option.collectonly:  # nothing runs then: no cluster to start
        try:
            runner.connect()
        except ClusterUnavailable as error:
            raise pytest.UsageError(str(error)) from None
    return runner


def _result_cache(config: pytest.Config) -> tuple[Path | None, CacheMode, int]:
    """``(folder, mode, bound in MiB)`` of the result cache: ``saliency_cache_dir`` (cleared of
    its entries by ``--cache-clear``), else pytest's cache folder; off without either."""
    mode: CacheMode = config.getoption("saliency_cache") or "readwrite"
    text = config.getini("saliency_cache_max_mb")
    try:
        bound = int(text)
    except ValueError:
        raise pytest.UsageError(f"saliency_cache_max_mb = {text}: give a whole number of MiB") from None
    if bound < 1:
        raise pytest.UsageError(f"saliency_cache_max_mb = {bound}: give 1 or more")
    if mode == "off":
        return None, mode, bound
    folder = config.getini("saliency_cache_dir")
    if folder:
        base = config.inipath.parent if config.inipath is not None else config.rootpath
        directory: Path = base / folder
        if config.getoption("cacheclear", False):
            for entry in directory.glob("*/*.pt"):
                entry.unlink(missing_ok=True)
        return directory, mode, bound
    cache = getattr(config, "cache", None)
    if cache is None:  # -p no:cacheprovider
        return None, "off", bound
    made: Path = cache.mkdir("saliency")
    return made, mode, bound


def pytest_unconfigure(config: pytest.Config) -> None:
    """End the Ray actors of ``--saliency-ray`` (and Ray, when the run started it); give SIGTERM
    its previous handler back."""
    session = config.stash.get(SESSION_KEY, None)
    if session is not None and session.runner is not None:
        from .cluster import RayRunner

        assert isinstance(session.runner, RayRunner)
        session.runner.close()
    config.stash.get(_RESTORE_SIGTERM, lambda: None)()


def pytest_report_header(config: pytest.Config) -> list[str]:
    """One header line with the device and baseline settings of the run, as pytest-randomly
    prints its seed: ``saliency: device auto (CUDA when available), baselines compare, folder
    saliency-baselines/ beside each spec``. ``auto`` is resolved only when torch is already
    imported (the header never imports it). With ``--saliency-ray`` a second line describes the
    cluster (``saliency: ray local cluster (2 CPUs, 0 GPUs), 2 workers on cpu``)."""
    session = config.stash[SESSION_KEY]
    device = session.device
    torch = sys.modules.get("torch")
    if device == "auto":
        if torch is None:
            device += " (CUDA when available)"
        else:
            device += " (cuda)" if torch.cuda.is_available() else " (cpu)"
    settings = session.baselines
    mode = "compare" if settings.mode is None else f"update ({settings.mode})"
    if ci_is_set():
        mode += ", allowed with CI set" if settings.updating else ", updates refused with CI set"
    if settings.directory is None:
        folder = f"{DEFAULT_DIRNAME}/ beside each spec"
    else:
        folder = os.path.relpath(settings.directory, config.rootpath) + "/"
    lines = [f"saliency: device {device}, baselines {mode}, folder {folder}"]
    if session.cache_dir is not None:
        shown = os.path.relpath(session.cache_dir, config.rootpath)
        lines.append(f"saliency: result cache {session.cache_mode}, {shown}/ (at most {session.cache_max_mb} MiB)")
    else:
        lines.append("saliency: result cache off")
    runner = session.runner
    if runner is not None:
        from .cluster import RayRunner

        assert isinstance(runner, RayRunner)
        if runner.connected:
            lines.append(f"saliency: {runner.describe()}")
    return lines


def _output_path(config: pytest.Config, name: str) -> str | None:
    """An output file option as an absolute path (relative ones are relative to where pytest
    was invoked, whatever the working directory is when the file is written)."""
    value = config.getoption(name)
    return str(config.invocation_params.dir / Path(value)) if value else None


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The controller (or a run without xdist) writes --saliency-json and --saliency-report
    (beside the asked-for paths when the run was interrupted). A file asked for that could not
    be written makes a passing run exit 1; a Ctrl-C while writing, 2 (as an interrupted run)."""
    if hasattr(session.config, "workerinput") or SESSION_KEY not in session.config.stash:
        return
    missing, interrupted = session.config.stash[SESSION_KEY].write_reports(
        interrupted=exitstatus == pytest.ExitCode.INTERRUPTED
    )
    if interrupted:
        session.exitstatus = pytest.ExitCode.INTERRUPTED
    elif missing and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> SpecFile | None:
    if file_path.name.endswith(SPEC_SUFFIXES):
        return SpecFile.from_parent(parent, path=file_path)
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Spec errors first, so a broken spec is reported before any model runs."""
    for item in items:
        if isinstance(item, CheckItem | SpecErrorItem):
            item.add_marker("saliency")
    items.sort(key=lambda item: not isinstance(item, SpecErrorItem))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Result[pytest.TestReport], None]:
    outcome = yield
    report = outcome.get_result()
    if call.when != "call" or not isinstance(item, CheckItem | SpecErrorItem):
        return
    result = item.saliency_result()
    if report.failed and not result["measurements"] and result["status"] != "error":
        result["status"] = "error"
        result["message"] = str(report.longrepr).splitlines()[0] if report.longrepr else ""
    # Travels back from xdist workers with the report (xdist sends a report's __dict__); TestReport
    # declares no such field, and a subclass would not survive that round trip.
    report.saliency = result  # type: ignore[attr-defined]
    counts = item.config.stash[SESSION_KEY].take_cache_counts()
    if counts is not None:
        report.saliency_cache = counts  # type: ignore[attr-defined]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    if hasattr(config, "workerinput"):
        return  # the controller prints the one merged summary
    session = config.stash[SESSION_KEY]
    results = session.results
    if results and config.getoption("verbose") >= -1:
        from .report.terminal import summary_table

        writer = config.get_terminal_writer()
        terminalreporter.write_sep("=", "saliency summary")
        terminalreporter.write(summary_table(results, width=writer.fullwidth, markup=writer.hasmarkup))
    for line in session.cache_summary():
        terminalreporter.write_line(line)
    for line in session.baseline_summary():
        terminalreporter.write_line(line)
    for line in session.report_lines:
        terminalreporter.write_line(line)


@pytest.fixture
def saliency_engine(request: pytest.FixtureRequest) -> Callable[[str | Path], SpecEngine]:
    """Load a spec file and return its engine for tests written in Python:
    ``shard = saliency_engine("specs/x.saliency.yaml").shard(range(64))``, then the shard's
    attributions, Shared Interest scores, predictions (:meth:`SpecEngine.shard`)."""

    def load(path: str | Path) -> SpecEngine:
        from .engine import SpecEngine, resolve_device
        from .spec import load_spec

        spec_path = Path(path)
        if not spec_path.is_absolute():
            spec_path = request.config.rootpath / spec_path
        session = request.config.stash[SESSION_KEY]
        return SpecEngine(load_spec(spec_path), resolve_device(session.device), (request.config.rootpath,))

    return load
