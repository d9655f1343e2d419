"""Screenshots in headless Chromium (pytest_saliency.report.screenshot)."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_find_chromium_honours_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from pytest_saliency.report import screenshot

    monkeypatch.setenv("PYTEST_SALIENCY_CHROMIUM", str(tmp_path / "nothing-here"))
    assert screenshot.find_chromium() is None
    with pytest.raises(FileNotFoundError, match="apt-get install chromium"):
        screenshot.screenshot(tmp_path / "r.html", tmp_path / "r.png")
