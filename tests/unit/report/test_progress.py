"""The terminal progress bar (pytest_saliency.report.progress)."""

from __future__ import annotations

import io
from types import SimpleNamespace
from typing import Any

import pytest

from pytest_saliency.report import progress as report_progress


def terminal() -> tuple[Any, io.StringIO]:
    from rich.console import Console

    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=True, width=80, no_color=True), buffer


def test_progress_draws_a_transient_bar_and_returns_to_pytests_line() -> None:
    console, buffer = terminal()
    bar = report_progress.TerminalProgress(console, column=lambda: 27)
    bar("shapes: ig", 64, 256)
    assert bar.active
    bar("shapes: ig", 200, 256)
    bar("shapes: ig", 320, 256)  # the last batch may count past the total
    assert not bar.active
    out = buffer.getvalue()
    assert out.startswith("\n")  # the bar goes below pytest's line
    assert "shapes: ig" in out and "256/256" in out and "images/s" in out
    assert out.endswith("\x1b[1A\x1b[28G")  # back to pytest's line, column 28


def test_progress_starts_a_new_bar_per_computation_and_close_erases_an_unfinished_one() -> None:
    console, buffer = terminal()
    suspended: list[str] = []

    class Suspend:
        def __enter__(self) -> None:
            suspended.append("in")

        def __exit__(self, *args: Any) -> None:
            suspended.append("out")

    bar = report_progress.TerminalProgress(console, suspend=Suspend)
    bar("a", 1, 4)
    bar("b", 1, 4)  # another computation: the first bar goes
    bar.close()
    assert not bar.active
    assert buffer.getvalue().count("\x1b[1A\x1b[1G") == 2
    assert suspended == ["in", "out"] * 3  # every write happens with capture suspended
    bar.close()  # nothing to erase: no write, no suspend
    assert len(suspended) == 6


def fake_config(verbose: int = 0, worker: bool = False) -> Any:
    config = SimpleNamespace(getoption=lambda name: verbose, pluginmanager=SimpleNamespace(getplugin=lambda name: None))
    if worker:
        config.workerinput = {}
    return config


class TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_off_when_quiet_on_workers_and_without_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdout", TTY())
    monkeypatch.setattr("sys.stderr", TTY())
    monkeypatch.setenv("TERM", "xterm")
    assert report_progress.for_config(fake_config()) is not None
    assert report_progress.for_config(fake_config(verbose=-1)) is None
    assert report_progress.for_config(fake_config(worker=True)) is None
    monkeypatch.setenv("TERM", "dumb")
    assert report_progress.for_config(fake_config()) is None
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert report_progress.for_config(fake_config()) is None
