"""Out of memory in attributions and curves: retry once at half the batch, then one clear line.

captum users hit this on large models (captum #245, #538, #632): the right fix is a smaller
batch, and the spec says which setting holds it. Both CUDA's ``OutOfMemoryError`` and the CPU
allocator's errors count.
"""

from __future__ import annotations

import gc
import warnings
from collections.abc import Callable
from typing import TypeVar

import torch

from .errors import Location, SpecRuntimeError

T = TypeVar("T")

_CPU_MESSAGES = ("can't allocate memory", "not enough memory", "out of memory")


def is_out_of_memory(error: BaseException) -> bool:
    """True for CUDA's ``OutOfMemoryError``, Python's ``MemoryError`` and the CPU allocator's
    ``RuntimeError`` ("DefaultCPUAllocator: can't allocate memory")."""
    if isinstance(error, torch.cuda.OutOfMemoryError | MemoryError):
        return True
    return isinstance(error, RuntimeError) and any(text in str(error) for text in _CPU_MESSAGES)


def run_with_half_batch_retry(run: Callable[[int], T], batch_size: int, location: Location, setting: str) -> T:
    """``run(batch_size)``; if it runs out of memory, ``run(batch_size // 2)`` once (with a
    warning that names ``setting``); out of memory again raises a :class:`SpecRuntimeError` at
    ``location`` that names the setting to lower."""
    try:
        return run(batch_size)
    except Exception as error:  # only out-of-memory errors are handled; the others are raised again
        if not is_out_of_memory(error):
            raise
        if batch_size == 1:
            raise _out_of_memory(location, setting, [batch_size]) from error
    # Out of the except block: the failed attempt's frames and tensors can be freed now.
    _free_memory()
    half = batch_size // 2
    try:
        result = run(half)
    except Exception as error:  # as above
        if is_out_of_memory(error):
            raise _out_of_memory(location, setting, [batch_size, half]) from error
        raise
    warnings.warn(
        f"{setting} {batch_size} ran out of memory; ran at {half} instead (set {setting}: {half} to skip the retry)",
        RuntimeWarning,
        stacklevel=2,
    )
    return result


def _out_of_memory(location: Location, setting: str, tried: list[int]) -> SpecRuntimeError:
    sizes = " and again at ".join(str(size) for size in tried)
    if tried[-1] == 1:
        fix = "even one image at a time does not fit: use smaller images or model, or another device"
    else:
        fix = f"lower {setting} (e.g. {max(1, tried[-1] // 4)})"
    return SpecRuntimeError(location, f"out of memory at batch size {sizes}: {fix}")


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
