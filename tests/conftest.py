"""Fixtures shared by every test directory."""

from __future__ import annotations

import importlib.util

import pytest


@pytest.fixture(autouse=True)
def _no_ci_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run every test as on a developer machine: CI services set ``CI=true``, which changes how
    baselines may be updated, and GitHub Actions ``GITHUB_STEP_SUMMARY``, to which every run the
    tests start would append its Markdown summary. Tests of the CI behaviour set them themselves."""
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)


PINNED_PLUGINS = ",".join(["pytest_saliency.plugin"] + ["xdist.plugin"] * bool(importlib.util.find_spec("xdist")))
"""The plugins a pytest run started by a test loads: this one and pytest-xdist (for ``-n``, when
installed), and no other. Users' environments hold others (pytest-randomly shuffles the items of a run, which
some tests here read in order); a run started by a test must not depend on them."""


@pytest.fixture(autouse=True)
def _pinned_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs that tests start (pytester, in-process or not, and ``python -m pytest``) load
    exactly :data:`PINNED_PLUGINS` instead of every installed plugin."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.setenv("PYTEST_PLUGINS", PINNED_PLUGINS)
