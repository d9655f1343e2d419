"""Aggregates of per-sample values and their 95 % intervals, as measurements."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..memo import remembered
from ..metrics.intervals import mean_interval, quantile_interval
from ..spec.schema import Threshold
from .outcome import Measurement


def aggregate(values: Tensor, how: str) -> float:
    """``mean | median | min | max | pNN`` over the defined (non-NaN) values; NaN if none."""
    defined = values[~torch.isnan(values)].double()
    if defined.numel() == 0:
        return math.nan
    if how == "mean":
        return float(defined.mean())
    if how == "median":
        return float(defined.quantile(0.5))
    if how == "min":
        return float(defined.min())
    if how == "max":
        return float(defined.max())
    return float(defined.quantile(int(how[1:]) / 100))


def measure(name: str, values: Tensor, how: str, threshold: Threshold, seed: int) -> Measurement:
    """``how`` (:func:`aggregate`) of ``(M,)`` values against ``threshold``, with its 95 % interval
    over the defined values: Student's t for a mean, a percentile bootstrap seeded with ``seed``
    for a median or percentile, none for ``min`` / ``max`` (docs/methods.md, "Intervals and decisions")."""
    defined = values[~torch.isnan(values)].double()
    value = aggregate(values, how)
    if how in ("min", "max"):
        return Measurement.compare(name, value, threshold, samples=defined.numel())
    if how == "mean":
        lower, upper = mean_interval(defined)
    else:
        q = 0.5 if how == "median" else int(how[1:]) / 100
        lower, upper = remembered(
            "quantile interval",
            [defined],
            {"q": q, "seed": seed},
            lambda: quantile_interval(defined, q, generator=torch.Generator().manual_seed(seed)),
        )
    return Measurement.compare(name, value, threshold, bounds=(float(lower), float(upper)), samples=defined.numel())
