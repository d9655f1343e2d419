"""A transient rich progress bar for long computations (attributions, fidelity curves).

The engine reports progress through a callback, ``progress(description, done, total)``
(:class:`~pytest_saliency.engine.SpecEngine`'s ``progress=``). :class:`TerminalProgress` is
that callback for a pytest run: it draws one bar (description, bar, done/total, images/s, time)
on the line below pytest's current line, and erases it when the computation ends, putting the
cursor back where pytest left it, so pytest's own output reads as if the bar was never there.

It draws only when it can do so cleanly (:func:`for_config`): not on xdist workers, not under
``-q``, not when stdout or stderr is not a terminal (CI logs, pipes), not on a ``TERM=dumb``
terminal. Items run with pytest's output capture on, so each update suspends capture for the
moment it writes (as pytest's own live logging does).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, ProgressColumn, Task, TaskID

Suspend = Callable[[], AbstractContextManager[object]]


class TerminalProgress:
    """``progress(description, done, total)``: one transient bar per computation.

    ``console``: a rich Console writing to the terminal, or a function that makes one (called
    when the first bar is drawn, so rich loads only then); ``suspend``: a context manager factory
    during which writing to the terminal is safe (pytest's capture suspended); ``column``: the
    column pytest's writer is at (the cursor goes back there when a bar is erased)."""

    def __init__(
        self,
        console: Console | Callable[[], Console],
        suspend: Suspend = nullcontext,
        column: Callable[[], int] = lambda: 0,
    ) -> None:
        self._make_console = console if callable(console) else (lambda: console)
        self._console: Console | None = None
        self._suspend = suspend
        self._column = column
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._description: str | None = None

    def __call__(self, description: str, done: int, total: int) -> None:
        total = max(int(total), 1)
        done = max(0, min(int(done), total))
        with self._suspend():
            if self._progress is None or self._task is None or description != self._description:
                self._stop()
                self._progress, self._task = self._start(description, done, total)
            self._progress.update(self._task, completed=done, total=total)
            self._progress.refresh()
            if done >= total:
                self._stop()

    def close(self) -> None:
        """Erase a bar left by a computation that did not finish (an error, Ctrl-C)."""
        if self._progress is not None:
            with self._suspend():
                self._stop()

    @property
    def active(self) -> bool:
        return self._progress is not None

    def _start(self, description: str, done: int, total: int) -> tuple[Progress, TaskID]:
        """A new bar for ``description``, drawn, and its task."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        if self._console is None:
            self._console = self._make_console()
        self._console.file.write("\n")  # the bar goes on its own line, below pytest's
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=None),
            MofNCompleteColumn(),
            RateColumn(),
            TimeElapsedColumn(),
            console=self._console,
            transient=True,
            auto_refresh=False,  # no refresh thread: it would write while capture is on
            redirect_stdout=False,
            redirect_stderr=False,
        )
        # The first call comes after the first batch: the rate counts from there (``first``).
        task = progress.add_task(description, total=total, completed=done, first=done)
        self._description = description
        progress.start()
        return progress, task

    def _stop(self) -> None:
        if self._progress is None or self._console is None:
            return
        self._progress.stop()  # transient: the bar's line is erased, the cursor at its start
        self._progress = self._task = self._description = None
        # Back up to pytest's line, at the column pytest's writer is at.
        self._console.file.write(f"\x1b[1A\x1b[{self._column() + 1}G")
        self._console.file.flush()


def RateColumn() -> ProgressColumn:  # noqa: N802  (reads like the rich column classes it stands beside)
    """A rich progress column: images per second since the bar appeared."""
    from rich.progress import ProgressColumn
    from rich.text import Text

    class _Rate(ProgressColumn):
        def render(self, task: Task) -> Text:
            elapsed = task.elapsed or 0.0
            counted = task.completed - task.fields.get("first", 0)
            if elapsed <= 0 or counted <= 0:
                return Text("– images/s", style="progress.data.speed")
            return Text(f"{counted / elapsed:,.1f} images/s", style="progress.data.speed")

    return _Rate()


def for_config(config: pytest.Config) -> TerminalProgress | None:
    """The progress callback for this run, or None where no bar should be drawn (see the module
    doc). Call it from ``pytest_configure``: the terminal check looks at the real streams, which
    pytest's capture has not replaced at that point."""
    if hasattr(config, "workerinput") or config.getoption("verbose") < 0:
        return None
    if os.environ.get("TERM") == "dumb" or not (_isatty(sys.stdout) and _isatty(sys.stderr)):
        return None
    return TerminalProgress(_console_factory(config), _suspend_capture(config), lambda: _current_column(config))


def _isatty(stream: object) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return callable(isatty) and bool(isatty())
    except ValueError:  # a closed stream
        return False


def _suspend_capture(config: pytest.Config) -> Suspend:
    """pytest's ``global_and_fixture_disabled`` (what its live logging uses) when capture is on."""
    capture = config.pluginmanager.getplugin("capturemanager")
    suspend = getattr(capture, "global_and_fixture_disabled", None)
    return suspend if callable(suspend) else nullcontext


def _current_column(config: pytest.Config) -> int:
    try:
        return int(config.get_terminal_writer().width_of_current_line)
    except (AttributeError, AssertionError, TypeError, ValueError):
        return 0


def _console_factory(config: pytest.Config) -> Callable[[], Console]:
    """A rich Console on stderr, as wide as pytest's terminal writer and coloured only when
    pytest colours (``--color``)."""

    def make() -> Console:
        from rich.console import Console

        writer = config.get_terminal_writer()
        return Console(
            stderr=True,  # resolved at each write: the real stderr while capture is suspended
            force_terminal=True,
            width=writer.fullwidth,
            no_color=not writer.hasmarkup,
            highlight=False,
        )

    return make
