"""95 % intervals for the aggregates a check gates on (see ``docs/methods.md``, "Intervals and decisions").

Pure tensor functions, batched over leading dimensions so that many data sets (or repetitions
of an experiment) get their intervals at once:

- means: Student's t interval, :func:`mean_interval`;
- medians and percentiles: a percentile bootstrap over the samples, :func:`quantile_interval`;
- fractions: the Wilson score interval, :func:`wilson_interval`;
- any statistic of per-image contributions (drift shifts): resampled column means from
  :func:`bootstrap_means` and their :func:`percentile_bounds`.

Every interval is returned as ``(lower, upper)`` bounds; an interval that cannot be formed (fewer
than two samples, no trials) is NaN. Bootstraps draw from a ``torch.Generator`` the caller seeds,
so the same data and seed give the same interval.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

CONFIDENCE = 0.95
"""Two-sided coverage of every interval."""

RESAMPLES = 1000
"""Bootstrap resamples per interval."""

_CHUNK = 1 << 22  # elements of resampling counts held at once (32 MiB of int64)


def normal_quantile(p: float) -> float:
    """The standard normal quantile ``Phi^-1(p)``."""
    return float(torch.special.ndtri(torch.tensor(p, dtype=torch.float64)))


def student_t_quantile(p: float, df: Tensor) -> Tensor:
    """Quantile ``p`` of Student's t with ``df`` degrees of freedom (any shape, float64 out).

    Exact for ``df`` 1 and 2; otherwise the Cornish-Fisher expansion in ``1/df`` to the fourth
    order (Abramowitz & Stegun 26.7.5), within 0.004 of the exact value at ``df = 3`` and 1e-5
    from ``df = 10``. NaN for ``df < 1``."""
    df = torch.as_tensor(df, dtype=torch.float64)
    z = normal_quantile(p)
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    v = df.clamp(min=1.0)
    expansion = z + g1 / v + g2 / v**2 + g3 / v**3 + g4 / v**4
    one = math.tan(math.pi * (p - 0.5))
    two = (2 * p - 1) / math.sqrt(2 * p * (1 - p))
    quantile = torch.where(df < 1.5, one, torch.where(df < 2.5, two, expansion))
    return torch.where(df >= 1, quantile, math.nan)


def mean_interval(values: Tensor, confidence: float = CONFIDENCE) -> tuple[Tensor, Tensor]:
    """Student's t interval of the mean: ``(..., n)`` samples -> ``(lower, upper)``, each ``(...)``
    float64: ``mean -/+ t_{n-1} * s / sqrt(n)`` with the sample standard deviation ``s``
    (``ddof = 1``). NaN with fewer than two samples."""
    values = values.double()
    n = values.shape[-1]
    mean = values.mean(dim=-1)
    if n < 2:
        nan = torch.full_like(mean, math.nan)
        return nan, nan.clone()
    half = student_t_quantile(0.5 + confidence / 2, torch.tensor(n - 1.0)) * values.std(dim=-1) / math.sqrt(n)
    return mean - half, mean + half


def wilson_interval(successes: Tensor, trials: Tensor, confidence: float = CONFIDENCE) -> tuple[Tensor, Tensor]:
    """Wilson score interval of a fraction ``successes / trials`` (same shapes, float64 out):
    centre ``(p + z^2/2n) / (1 + z^2/n)``, half-width
    ``z / (1 + z^2/n) * sqrt(p (1 - p) / n + z^2 / 4n^2)``. It stays inside ``[0, 1]`` and is
    not empty at ``p = 0`` or ``1``. NaN for no trials."""
    k = torch.as_tensor(successes, dtype=torch.float64)
    n = torch.as_tensor(trials, dtype=torch.float64)
    z2 = normal_quantile(0.5 + confidence / 2) ** 2
    safe = n.clamp(min=1)
    p = k / safe
    scale = 1 + z2 / safe
    centre = (p + z2 / (2 * safe)) / scale
    half = math.sqrt(z2) / scale * torch.sqrt(p * (1 - p) / safe + z2 / (4 * safe**2))
    lower = torch.where(n > 0, (centre - half).clamp(min=0.0), math.nan)
    upper = torch.where(n > 0, (centre + half).clamp(max=1.0), math.nan)
    return lower, upper


def percentile_bounds(statistics: Tensor, confidence: float = CONFIDENCE) -> tuple[Tensor, Tensor]:
    """The ``(1 - confidence)/2`` and ``(1 + confidence)/2`` quantiles along the last dimension
    of bootstrap statistics ``(..., B)`` -> ``(lower, upper)``, each ``(...)`` float64."""
    tail = (1 - confidence) / 2
    levels = torch.tensor([tail, 1 - tail], dtype=torch.float64)
    bounds = torch.quantile(statistics.double(), levels, dim=-1)
    return bounds[0], bounds[1]


def _resampling_counts(rows: int, n: int, resamples: int, generator: torch.Generator) -> Tensor:
    """``(rows, resamples, n)`` int64: how often each of ``n`` samples is drawn in each resample."""
    draws = torch.randint(n, (rows, resamples, n), generator=generator)
    return torch.zeros(rows, resamples, n, dtype=torch.int64).scatter_add_(2, draws, torch.ones_like(draws))


def quantile_interval(
    values: Tensor,
    q: float,
    *,
    generator: torch.Generator,
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
) -> tuple[Tensor, Tensor]:
    """Percentile-bootstrap interval of quantile ``q`` (``torch.quantile``'s linear
    interpolation): ``(..., n)`` samples -> ``(lower, upper)``, each ``(...)`` float64.

    A resample's quantile is read from its draw counts: with the samples sorted once, the
    ``k``-th smallest resampled value is the first sorted sample whose cumulative count exceeds
    ``k``, so no resample is sorted. NaN with fewer than two samples."""
    values = values.double()
    batch, n = values.shape[:-1], values.shape[-1]
    if n < 2:
        nan = torch.full(batch, math.nan, dtype=torch.float64)
        return nan, nan.clone()
    ordered = torch.sort(values.reshape(-1, n), dim=-1).values
    position = q * (n - 1)
    below = math.floor(position)
    fraction = position - below
    ranks = torch.tensor([below, min(below + 1, n - 1)], dtype=torch.int64)
    resamples_per_chunk = min(resamples, max(1, _CHUNK // n))
    rows_per_chunk = max(1, _CHUNK // (resamples_per_chunk * n))
    lowers, uppers = [], []
    for start in range(0, ordered.shape[0], rows_per_chunk):
        chunk = ordered[start : start + rows_per_chunk]
        parts = []
        for done in range(0, resamples, resamples_per_chunk):
            count = min(resamples_per_chunk, resamples - done)
            counts = _resampling_counts(chunk.shape[0], n, count, generator).cumsum(dim=-1)
            wanted = ranks.expand(chunk.shape[0], count, 2).contiguous()
            at = torch.searchsorted(counts, wanted, right=True).clamp(max=n - 1)  # (rows, count, 2)
            picked = chunk[:, None, :].expand(-1, count, -1).gather(2, at)
            parts.append(picked[..., 0] + fraction * (picked[..., 1] - picked[..., 0]))
        lower, upper = percentile_bounds(torch.cat(parts, dim=1), confidence)
        lowers.append(lower)
        uppers.append(upper)
    return torch.cat(lowers).reshape(batch), torch.cat(uppers).reshape(batch)


def bootstrap_means(contributions: Tensor, *, generator: torch.Generator, resamples: int = RESAMPLES) -> Tensor:
    """Column means of ``(n, k)`` per-sample contributions over ``resamples`` bootstrap resamples
    of the rows -> ``(resamples, k)`` float64 (one matmul of the draw counts per chunk)."""
    table = contributions.double().cpu()
    n = table.shape[0]
    per_chunk = max(1, _CHUNK // max(n, 1))
    parts = []
    for start in range(0, resamples, per_chunk):
        count = min(per_chunk, resamples - start)
        counts = _resampling_counts(1, n, count, generator)[0].double()
        parts.append(counts @ table / n)
    return torch.cat(parts)
