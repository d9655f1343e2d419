"""Readers of the data files a spec names that need no torch: the spec's validation
(:mod:`pytest_saliency.spec.validate`) and the loaders both call them."""

from __future__ import annotations

import csv
import zipfile
from pathlib import Path

import numpy as np


def as_strings(values: object) -> np.ndarray:
    """Per-sample field values as an ``(N,)`` array of strings (how slices are named and matched)."""
    return np.asarray(values).reshape(-1).astype(str)


def read_labels_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    """A folder data set's labels CSV: its header (``[]`` without one; a header's first cell is
    file, filename, image or name) and its rows (``#`` comments and empty lines skipped). UTF-8,
    with or without the byte-order mark that Excel writes."""
    with open(path, newline="", encoding="utf-8-sig") as stream:
        rows = [row for row in csv.reader(stream) if row and not row[0].startswith("#")]
    if rows and rows[0][0].strip().lower() in ("file", "filename", "image", "name"):
        return [cell.strip() for cell in rows[0]], rows[1:]
    return [], rows


def npz_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Array shapes in an ``.npz`` file, read from the headers without loading the data."""
    shapes: dict[str, tuple[int, ...]] = {}
    with zipfile.ZipFile(path) as archive:
        for member in archive.namelist():
            if not member.endswith(".npy"):
                continue
            with archive.open(member) as stream:
                version = np.lib.format.read_magic(stream)  # type: ignore[no-untyped-call]  # numpy leaves np.lib.format unannotated
                read_header = (
                    np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                )
                header = read_header(stream)  # type: ignore[no-untyped-call]  # as read_magic
            shapes[member[: -len(".npy")]] = header[0]
    return shapes
