"""What every benchmark here times with and prints about the machine."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def cpu_name() -> str:
    """The processor's model name (from /proc/cpuinfo where there is one)."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def best_of(repeats: int, run: Callable[[], T]) -> tuple[float, T]:
    """The shortest of ``repeats`` timed calls of ``run`` (seconds), and the last call's result."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - start)
    return best, result
