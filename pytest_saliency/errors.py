"""Every error and warning of pytest-saliency. Every error derives from one root,
:class:`SaliencyError`, which users can catch; the warnings are :class:`SaliencyWarning` (a
check that warns), :class:`SnapshotEnvironmentWarning` and :class:`SpecDeprecationWarning`. A
spec problem reads as one line, ``path:line:col: message (fix)``; this module imports nothing
heavy."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

Location = tuple[str | int, ...]
"""A place in a spec as the keys and indices that lead to it: ``("checks", 0, "fidelity")``."""


class SaliencyError(Exception):
    """The root of every error pytest-saliency raises on purpose: catch it to catch them all.

    Every one pickles with its attributes, whatever its ``__init__`` takes, so that an error
    raised in a Ray worker reaches the driver as itself (:mod:`pytest_saliency.cluster`)."""

    def __reduce__(self) -> tuple[Callable[..., SaliencyError], _Pickled]:
        return _restore, (type(self), self.args, self.__dict__)


_Pickled: TypeAlias = "tuple[type[SaliencyError], tuple[object, ...], dict[str, object]]"
"""What a pickled :class:`SaliencyError` holds: its class, its ``args`` and its attributes."""


def _restore(kind: type[SaliencyError], args: tuple[object, ...], state: dict[str, object]) -> SaliencyError:
    """A pickled :class:`SaliencyError` rebuilt without calling its ``__init__``."""
    error = kind.__new__(kind, *args)
    error.args = args
    error.__dict__.update(state)
    return error


@dataclass(frozen=True)
class SpecProblem:
    """One problem in a spec file, at a 1-based line and column."""

    path: str
    line: int
    column: int
    message: str
    origin: str | None = None
    """Set for a value given on the command line: the option, e.g. ``--saliency-set model.weights``."""

    def __str__(self) -> str:
        """One line, whatever the path or message holds (control characters escaped)."""
        if self.origin is not None:
            return one_line(f"{self.origin}: {self.message}")
        return one_line(f"{self.path}:{self.line}:{self.column}: {self.message}")


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def one_line(text: str) -> str:
    """``text`` with its control characters (line breaks, tabs, escapes, NUL) shown escaped as
    Python writes them in a string (``\\n``, ``\\x1b``), so that a message stays one line."""
    return _CONTROL.sub(lambda match: repr(match.group())[1:-1], text)


class SpecError(SaliencyError):
    """A spec file that cannot run; ``problems`` lists every problem found, in file order."""

    def __init__(self, problems: Sequence[SpecProblem]) -> None:
        self.problems = sorted(problems, key=lambda problem: (problem.origin is None, problem.line, problem.column))
        super().__init__("\n".join(str(problem) for problem in self.problems))


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest choice, or ``""`` when none is close. A word of
    three or more letters that begins exactly one choice (``prob``) suggests that choice."""
    choices = list(choices)
    starting = [choice for choice in choices if len(word) >= 3 and choice.startswith(word)]
    close = starting if len(starting) == 1 else difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class SpecRuntimeError(SaliencyError):
    """A problem found while loading what a spec names (model, weights, data), tied to the key
    in the spec that named it, so it can be reported as ``path:line:col: message``."""

    def __init__(self, location: Location, message: str) -> None:
        super().__init__(message)
        self.location = location
        self.message = message


@contextmanager
def model_stage(location: Location, what: str) -> Iterator[None]:
    """Run user code (a model, a factory) and turn whatever it raises into a
    :class:`SpecRuntimeError` at ``location``: ``what: ExceptionType: first line``. The original
    exception stays as ``__cause__`` (``--saliency-debug`` shows its traceback)."""
    try:
        yield
    except SpecRuntimeError:
        raise
    except Exception as error:  # user code can raise anything
        raise SpecRuntimeError(location, f"{what}: {describe_exception(error)}") from error


def first_line(error: BaseException) -> str:
    """The first line of ``error``'s message, or its type's name when it has none."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def describe_exception(error: BaseException) -> str:
    """``ExceptionType: first line of its message`` (just the type when the message is empty)."""
    name = type(error).__name__
    return name if not str(error).strip() else f"{name}: {first_line(error)}"


class CheckFailed(SaliencyError):
    """A check's measurements did not meet their thresholds."""


class SpecInvalid(SaliencyError):
    """The spec file has errors; no check of it runs."""


class DeviceUnavailable(SaliencyError):
    """``--saliency-device`` (or the ``saliency_device`` ini value) names no usable device."""


class ClusterUnavailable(DeviceUnavailable):
    """The Ray cluster of ``--saliency-ray`` gave no worker in time (its resources are taken, or
    it cannot place the asked workers); one line says which."""


class PytestSaliencyWarning(UserWarning):
    """The root of every warning pytest-saliency gives (as ``PytestWarning`` is pytest's):
    ``-W error::pytest_saliency.errors.PytestSaliencyWarning`` turns them all into errors."""


class SaliencyWarning(PytestSaliencyWarning):
    """A check with ``severity: warn`` that did not meet its thresholds (or, under
    ``decide: interval``, could not decide)."""


class BaselineError(SaliencyError):
    """The root of the drift snapshots' errors: the stored snapshots and the options that update
    them (``--saliency-update-baselines``)."""


class MissingSnapshotError(BaselineError, FileNotFoundError):
    """No stored snapshot under that name; the message gives the command that creates it."""

    def __init__(self, name: str, path: Path, command: str) -> None:
        self.name = name
        self.path = path
        self.command = command
        super().__init__(f"no baseline {name!r} at {path}; create it with: {command}")


class SnapshotCorruptError(BaselineError):
    """A snapshot's tensor file does not match its metadata (an interrupted update or a hand edit)."""


class SnapshotEnvironmentWarning(PytestSaliencyWarning):
    """A snapshot was made with another torch or library version, or on another device."""


class SpecDeprecationWarning(PytestSaliencyWarning, FutureWarning):
    """A spec key that still works but has a new name (the warning, at the key's line, says which)."""
