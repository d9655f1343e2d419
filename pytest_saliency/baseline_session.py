"""Drift baselines in a pytest run: where they live, whether this run may write them, and the
end-of-run counts.

The plugin builds one :class:`BaselineSettings` from the options (``--saliency-update-baselines``,
``--saliency-update-mode``, ``--saliency-allow-ci-update``, the ``saliency_baseline_dir`` ini
value) and hands it to each check in its :class:`~pytest_saliency.checks.base.CheckRequest`;
the drift check reads it there. Outside a pytest run (the Python API) the defaults apply:
baselines beside the spec, compare only.

Imports nothing heavy (it is loaded with the plugin): the baseline store itself
(:mod:`pytest_saliency.baselines`, which needs torch) is used by the drift check.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest

from ._constants import spec_stem

UpdateMode = Literal["missing", "changed", "all"]
UPDATE_MODES: tuple[str, ...] = ("missing", "changed", "all")
DEFAULT_MODE: UpdateMode = "changed"
DEFAULT_DIRNAME = "saliency-baselines"
"""The folder, beside each spec file, that holds its baselines unless ``saliency_baseline_dir`` says otherwise."""
ACTIONS: tuple[str, ...] = ("created", "updated", "unchanged")


def ci_is_set(environ: Mapping[str, str] | None = None) -> bool:
    """True when the ``CI`` environment variable is set to anything but ``""``, ``0``, ``false``
    or ``no`` (CI services set ``CI=true``)."""
    value = (environ if environ is not None else os.environ).get("CI")
    return value is not None and value.strip().lower() not in ("", "0", "false", "no")


def baseline_name(baseline: str, check_id: str, method: str) -> str:
    """The stored name of one drift item's baseline: ``<baseline>.<check id>.<method>``.

    One file pair per (baseline, check, attribution method): each check stores the reference
    data its own settings need, so two checks naming the same baseline never overwrite each
    other."""
    return f"{baseline}.{check_id}.{method}"


@dataclass(frozen=True)
class BaselineSettings:
    """How this run treats drift baselines.

    ``directory``: the configured ``saliency_baseline_dir`` (``None``: a ``saliency-baselines/``
    folder beside each spec). ``mode``: ``None`` compares only (a normal run never writes a
    baseline); ``missing`` creates absent baselines; ``changed`` also rewrites those whose
    content or settings differ; ``all`` rewrites every baseline the run touches.
    """

    directory: Path | None = None
    mode: UpdateMode | None = None

    @property
    def updating(self) -> bool:
        return self.mode is not None

    def folder(self, spec_path: Path) -> Path:
        """The folder of one spec's baselines: ``<base>/<spec stem>/``."""
        base = self.directory if self.directory is not None else spec_path.parent / DEFAULT_DIRNAME
        return base / spec_stem(spec_path)

    def command(self, spec_path: Path | str, mode: UpdateMode | None = None) -> str:
        """The exact command that writes a spec's baselines (``mode``: as with
        ``--saliency-update-mode``; the default mode is left out)."""
        parts = ["pytest", "--saliency-update-baselines"]
        if mode is not None and mode != DEFAULT_MODE:
            parts.append(f"--saliency-update-mode={mode}")
        command = " ".join(parts) + " " + shlex.quote(str(spec_path))
        if ci_is_set():
            command += " (on a developer machine: CI is set here, which refuses updates without --saliency-allow-ci-update)"
        return command


def settings_from_config(config: pytest.Config) -> BaselineSettings:
    """Read the baseline options; refuse an update when ``CI`` is set without
    ``--saliency-allow-ci-update`` (a :class:`pytest.UsageError`)."""
    configured = str(config.getini("saliency_baseline_dir") or "").strip()
    directory: Path | None = None
    if configured:
        directory = Path(configured).expanduser()
        if not directory.is_absolute():
            anchor = config.inipath.parent if config.inipath is not None else config.rootpath
            directory = anchor / directory
    mode: UpdateMode | None = None
    if config.getoption("saliency_update_baselines"):
        mode = config.getoption("saliency_update_mode") or DEFAULT_MODE
        if ci_is_set() and not config.getoption("saliency_allow_ci_update"):
            raise pytest.UsageError(
                "--saliency-update-baselines refused: the CI environment variable is set. Baselines are "
                "reviewed changes made on a developer machine; a CI job that must write them passes "
                "--saliency-allow-ci-update as well."
            )
    return BaselineSettings(directory=directory, mode=mode)


def _shown(path: str) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return path


def summary_lines(results: Iterable[dict[str, Any]], settings: BaselineSettings) -> list[str]:
    """End-of-run lines: in an update run, how many baselines were created, updated and left
    unchanged (and which stored ones no check of the run's specs names: never deleted); in any
    run, where the obtained summaries of drift mismatches were written."""
    entries = [result["baseline"] for result in results if isinstance(result.get("baseline"), dict)]
    lines = []
    if settings.updating:
        counts = {action: sum(1 for entry in entries if entry.get("action") == action) for action in ACTIONS}
        folders = sorted({_shown(entry["folder"]) for entry in entries if entry.get("folder")})
        where = f" in {', '.join(folders)}" if folders else ""
        lines.append(
            f"saliency baselines (--saliency-update-mode={settings.mode}): "
            + ", ".join(f"{counts[action]} {action}" for action in ACTIONS)
            + where
        )
        unused = sorted({name for entry in entries for name in entry.get("unused", ())})
        if unused:
            shown = ", ".join(unused[:5]) + (f" and {len(unused) - 5} more" if len(unused) > 5 else "")
            lines.append(f"saliency baselines named by no check of these specs (kept, delete by hand if stale): {shown}")
    obtained = sorted({_shown(entry["obtained"]) for entry in entries if entry.get("obtained")})
    if obtained:
        lines.append("saliency drift mismatches, obtained summaries written beside their baselines:")
        lines += [f"  {path}" for path in obtained]
    return lines
