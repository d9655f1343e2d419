"""The few samples a failure shows: the worst ones, as JSON rows and as text tables."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from .._io import json_number
from .request import CheckRequest, ConfigT

WORST_SHOWN = 5
"""How many samples a failure lists."""


def worst_positions(values: Tensor, wants_high: bool) -> list[int]:
    """Positions of the (at most :data:`WORST_SHOWN`) ``(M,)`` values furthest on the wrong side
    of a threshold: the lowest when high values are wanted, else the highest; NaN (undefined)
    last; ties in order (a stable sort)."""
    ranked = values.nan_to_num(nan=math.inf if wants_high else -math.inf)
    return torch.argsort(ranked, descending=not wants_high, stable=True)[:WORST_SHOWN].tolist()


Cell = str | int | float
"""A value in a sample table: a class name or index, a sample index, a score."""


def label_and_prediction(request: CheckRequest[ConfigT], position: int) -> tuple[str | int, str | int]:
    """``(label, predicted)`` of the sample at ``position`` of the pass's result, as class names
    when the spec names the classes."""
    classes = request.engine.spec.data.classes
    result = request.result

    def name(value: int) -> str | int:
        return classes[value] if classes and value < len(classes) else value

    return name(int(result.labels[position])), name(int(result.predictions[position]))


def json_floats(values: Tensor) -> list[float | None]:
    """``(M,)`` values as JSON numbers rounded to 6 decimals; NaN (undefined) becomes ``None``."""
    return [json_number(v) for v in values.tolist()]


def per_sample_json(indices: Tensor, scores: dict[str, Tensor]) -> dict[str, list[int] | list[float | None]]:
    """The ``per_sample`` block of a JSON result: the samples' ``(M,)`` ``indices`` under
    ``"index"``, then each ``(M,)`` score under its name (:func:`json_floats`)."""
    index: list[int] = indices.tolist()
    return {"index": index, **{name: json_floats(values) for name, values in scores.items()}}


def sample_table(rows: Sequence[Mapping[str, Cell]], columns: list[str]) -> list[str]:
    """Fixed-width text lines for a few samples (the worst examples in a failure)."""

    def cell(value: Cell) -> str:
        if isinstance(value, float):
            return "nan" if math.isnan(value) else f"{value:.3f}"
        return str(value)

    if not rows:
        return []
    widths = {c: max(len(c), *(len(cell(row[c])) for row in rows)) for c in columns}
    lines = ["  ".join(c.rjust(widths[c]) for c in columns)]
    lines += ["  ".join(cell(row[c]).rjust(widths[c]) for c in columns) for row in rows]
    return lines


def worst_sample_lines(
    request: CheckRequest[ConfigT],
    chosen: dict[str, Tensor],
    positions: Tensor,
    metric: str,
    wants_high: bool,
    names: dict[str, str] | None = None,
) -> list[str]:
    """Table lines for the samples furthest on the wrong side of ``metric`` among ``chosen``
    ``(M,)`` scores of the samples at ``positions`` of the pass's result (undefined last): sample,
    label, predicted and every score, under its name in ``names`` if there is one."""
    names = names or {}
    rows = []
    for position in worst_positions(chosen[metric], wants_high):
        at = int(positions[position])
        label, predicted = label_and_prediction(request, at)
        row: dict[str, Cell] = {"sample": int(request.result.indices[at]), "label": label, "predicted": predicted}
        row.update({names.get(name, name): float(values[position]) for name, values in chosen.items()})
        rows.append(row)
    return sample_table(rows, ["sample", "label", "predicted", *(names.get(name, name) for name in chosen)])
