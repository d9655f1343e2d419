"""Out of memory: retried once at half the batch, then one line naming the setting."""

from __future__ import annotations

import pytest
import torch

from pytest_saliency.errors import SpecRuntimeError
from pytest_saliency.memory import is_out_of_memory, run_with_half_batch_retry


@pytest.mark.parametrize(
    "error",
    [
        torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        MemoryError(),
        RuntimeError(
            "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you tried to allocate 1024 bytes"
        ),
    ],
    ids=["cuda", "python", "cpu-allocator"],
)
def test_out_of_memory_errors_are_recognised(error: BaseException) -> None:
    assert is_out_of_memory(error)


def test_other_errors_are_not_out_of_memory() -> None:
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not is_out_of_memory(ValueError("out of range"))


def hungry(limit: int, calls: list[int]):
    def run(batch_size: int) -> int:
        calls.append(batch_size)
        if batch_size > limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return batch_size

    return run


def test_a_batch_that_fits_runs_once() -> None:
    calls: list[int] = []
    assert run_with_half_batch_retry(hungry(64, calls), 64, ("data",), "data.batch_size") == 64
    assert calls == [64]


def test_out_of_memory_once_runs_again_at_half_the_batch_with_a_warning() -> None:
    calls: list[int] = []
    with pytest.warns(RuntimeWarning, match=r"data.batch_size 64 ran out of memory; ran at 32 instead"):
        assert run_with_half_batch_retry(hungry(40, calls), 64, ("data",), "data.batch_size") == 32
    assert calls == [64, 32]


def test_out_of_memory_twice_names_the_setting_at_its_location() -> None:
    calls: list[int] = []
    with pytest.raises(SpecRuntimeError) as raised:
        run_with_half_batch_retry(hungry(8, calls), 64, ("attributions", "ig"), "data.batch_size")
    assert calls == [64, 32]
    assert raised.value.location == ("attributions", "ig")
    assert raised.value.message == "out of memory at batch size 64 and again at 32: lower data.batch_size (e.g. 8)"


def test_a_batch_of_one_is_not_halved() -> None:
    calls: list[int] = []
    with pytest.raises(SpecRuntimeError, match=r"out of memory at batch size 1: even one image at a time does not fit"):
        run_with_half_batch_retry(hungry(0, calls), 1, ("data",), "data.batch_size")
    assert calls == [1]


def test_a_batch_of_two_then_one_names_no_smaller_batch() -> None:
    with pytest.raises(
        SpecRuntimeError, match=r"at batch size 2 and again at 1: even one image at a time does not fit"
    ):
        run_with_half_batch_retry(hungry(0, []), 2, ("data",), "data.batch_size")


def test_other_errors_pass_through_untouched() -> None:
    def broken(batch_size: int) -> int:
        raise KeyError("x")

    with pytest.raises(KeyError):
        run_with_half_batch_retry(broken, 8, ("data",), "data.batch_size")
