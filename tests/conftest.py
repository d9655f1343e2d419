"""Fixtures shared by every test directory."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _no_ci_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run every test as on a developer machine: CI services set ``CI=true``, which changes how
    baselines may be updated. Tests of the CI behaviour set the variable themselves."""
    monkeypatch.delenv("CI", raising=False)
