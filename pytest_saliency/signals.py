"""SIGTERM, what a CI system sends to a cancelled job, handled as Ctrl-C: pytest then shows the
outcomes of what ran, the plugin writes the partial reports beside the complete ones (never over
them) and ends the Ray actors and a cluster the run started, instead of the process dying at
once. Stdlib only (loaded with the plugin)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType


def handle_sigterm_as_interrupt() -> Callable[[], None]:
    """Make SIGTERM raise :class:`KeyboardInterrupt` in the main thread (a second SIGTERM ends
    the process at once); returns the function that puts the previous handler back. Leaves a
    handler of the user's own in place, and does nothing outside the main thread (xdist
    workers). Ray's driver handler (``sys.exit``, which skips pytest's summary) is replaced."""
    if threading.current_thread() is not threading.main_thread():
        return _nothing
    previous = signal.getsignal(signal.SIGTERM)
    if previous not in (signal.SIG_DFL, None) and not str(getattr(previous, "__module__", "")).startswith("ray."):
        return _nothing

    def interrupt(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    signal.signal(signal.SIGTERM, interrupt)

    def restore() -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)

    return restore


def _nothing() -> None:
    """Nothing to restore."""
