"""Atomic writes: a file is replaced whole or not at all."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from pytest_saliency._io import json_number, json_safe, write_atomic


def test_atomic_write_replaces_whole_files_and_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "out" / "results.json"
    write_atomic(target, "first")
    assert target.read_text() == "first"
    assert oct(target.stat().st_mode & 0o777) == oct(0o644)

    def crash(*args: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, "second")
    assert target.read_text() == "first"  # the old file stands, whole
    assert [p.name for p in target.parent.iterdir()] == ["results.json"]  # no temporary left


def test_json_safe_turns_nan_and_inf_into_none() -> None:
    import torch

    value = {"a": float("nan"), "b": (1.5, float("inf")), "c": torch.tensor(2.0), 3: None}
    assert json_safe(value) == {"a": None, "b": [1.5, None], "c": 2.0, "3": None}


def test_json_number_rounds_and_turns_undefined_values_into_none() -> None:
    assert json_number(0.123456789) == 0.123457
    assert json_number(0.123456789, digits=2) == 0.12
    assert json_number(0.123456789, digits=None) == 0.123456789
    assert json_number(3) == 3
    assert [json_number(x) for x in (float("nan"), float("inf"), float("-inf"))] == [None, None, None]
