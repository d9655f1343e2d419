"""How a pytest run treats drift snapshots: where they live, whether this run may write them,
and the command that writes them.

The plugin builds one :class:`BaselineSettings` from the options (``--saliency-update-baselines``,
``--saliency-update-mode``, ``--saliency-allow-ci-update``, the ``saliency_baseline_dir`` ini
value) and hands it to each check in its :class:`~pytest_saliency.checks.request.CheckRequest`;
the drift check reads it there. Outside a pytest run (the Python API) the defaults apply:
snapshots beside the spec, compare only. The options, the ini value and the
``saliency-baselines/`` folder keep the names users have committed in their CI files and
repositories, and so does this class, which mirrors them.

Imports nothing heavy (it is loaded with the plugin): the store (:mod:`.store`, which needs
torch) is used by the drift check only.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

from .._constants import spec_stem

UpdateMode = Literal["missing", "changed", "all"]
UPDATE_MODES: tuple[str, ...] = ("missing", "changed", "all")
DEFAULT_MODE: UpdateMode = "changed"
DEFAULT_DIRNAME = "saliency-baselines"
"""The folder, beside each spec file, that holds its snapshots unless ``saliency_baseline_dir`` says otherwise."""
OBTAINED_DIRNAME = "saliency-obtained"
"""The folder, in pytest's cache folder (``.pytest_cache/`` unless ``cache_dir`` says otherwise),
that holds the obtained summaries of drift mismatches: never the snapshots' folder, which may
be read-only (a checkout, a mounted volume) and is committed."""


def ci_is_set(environ: Mapping[str, str] | None = None) -> bool:
    """True when the ``CI`` environment variable is set to anything but ``""``, ``0``, ``false``
    or ``no`` (CI services set ``CI=true``)."""
    value = (environ if environ is not None else os.environ).get("CI")
    return value is not None and value.strip().lower() not in ("", "0", "false", "no")


def update_command(spec_path: str | os.PathLike[str] | None, mode: UpdateMode | None = None) -> str:
    """The exact command that writes a spec's snapshots (``mode``: as with
    ``--saliency-update-mode``; the default mode is left out). When ``CI`` is set, a note says
    to run it on a developer machine."""
    parts = ["pytest", "--saliency-update-baselines"]
    if mode is not None and mode != DEFAULT_MODE:
        parts.append(f"--saliency-update-mode={mode}")
    parts.append(shlex.quote(str(spec_path)) if spec_path is not None else "<spec file>")
    command = " ".join(parts)
    if ci_is_set():
        command += " (on a developer machine: CI is set here, which refuses updates without --saliency-allow-ci-update)"
    return command


def snapshot_name(snapshot: str, check_id: str, method: str) -> str:
    """The stored name of one drift item's snapshot: ``<snapshot>.<check id>.<method>``.

    One file pair per (snapshot, check, attribution method): each check stores the reference
    data its own settings need, so two checks naming the same snapshot never overwrite each
    other."""
    return f"{snapshot}.{check_id}.{method}"


@dataclass(frozen=True)
class BaselineSettings:
    """How this run treats drift snapshots.

    ``directory``: the configured ``saliency_baseline_dir`` (``None``: a ``saliency-baselines/``
    folder beside each spec). ``mode``: ``None`` compares only (a normal run never writes a
    snapshot); ``missing`` creates absent snapshots; ``changed`` also rewrites those whose
    content or settings differ; ``all`` rewrites every snapshot the run touches. ``obtained``:
    where the obtained summaries of mismatches go (``None``: nowhere, outside a pytest run).
    """

    directory: Path | None = None
    mode: UpdateMode | None = None
    obtained: Path | None = None

    @property
    def updating(self) -> bool:
        return self.mode is not None

    def folder(self, spec_path: Path) -> Path:
        """The folder of one spec's snapshots: ``<base>/<spec stem>/``."""
        base = self.directory if self.directory is not None else spec_path.parent / DEFAULT_DIRNAME
        return base / spec_stem(spec_path)

    def obtained_folder(self, spec_path: Path) -> Path | None:
        """The folder of one spec's obtained summaries: ``<pytest cache>/saliency-obtained/<spec stem>/``."""
        return None if self.obtained is None else self.obtained / spec_stem(spec_path)


def settings_from_config(config: pytest.Config) -> BaselineSettings:
    """Read the snapshot options (``--saliency-update-baselines`` and the rest); refuse an update when ``CI`` is set without
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
    try:
        cache = Path(os.path.expandvars(str(config.getini("cache_dir")))).expanduser()
    except ValueError:  # -p no:cacheprovider: the option is not registered, its default folder serves
        cache = Path(".pytest_cache")
    return BaselineSettings(directory=directory, mode=mode, obtained=config.rootpath / cache / OBTAINED_DIRNAME)
