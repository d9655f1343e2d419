"""Fidelity of an attribution from Most- and Least-Important-First perturbation curves.

Brocki & Chung, "Fidelity of Interpretability Methods and Perturbation Artifacts in Neural
Networks" (2022), and their code (github.com/lenbrocki/Feature-Perturbation-Augmentation,
``perturb.ipynb``); see docs/methods.md#fidelity-curves.

1. The attribution is collapsed to one ``H x W`` importance map per image
   (:func:`pytest_saliency.metrics.saliency.reduce_channels`); with ``unit = K > 1`` the map is cut
   into ``K x K`` patches and a patch's importance is the sum over its pixels (edge patches of an
   image whose side is not a multiple of ``K`` sum over the pixels they have).
2. Units are ordered by importance: ``"mif"`` descending (Most Important First), ``"lif"``
   ascending (Least Important First), ``"random"`` a seeded random order (the reference curve of
   SRG/MRG, Blücher et al. 2024). Equal importances are ordered by a seeded random permutation
   used as the secondary sort key, so flat regions order reproducibly; LIF is the exact reverse
   of MIF (ties in the reverse seeded order). Importances are compared in float32.
3. At each fraction ``f`` the first ``k = floor(f * U)`` of the ``U`` units
   (:func:`removal_counts`) are replaced (every channel of every pixel in them) by the fill, and
   the model's score of the target is recorded.
   The default fractions are ``0, 1/steps, ..., (steps-1)/steps`` (0 %, 5 %, ..., 95 % for 20
   steps). ``floor`` matches Quantus ROAD's ``int(a_size * p / 100)``; the authors' notebook
   removes ``n * int(0.05 * H * W)`` pixels at step ``n`` (21 points up to about 100 %), which
   ``fractions=`` can reproduce.
4. Each per-image curve is divided by its value at fraction 0 (the clean image), as the authors
   do (``logits / logits[0]``). For ``score="accuracy"`` the curves are NOT divided per sample:
   a sample's value is 1.0 while the model still predicts the target and 0.0 after, and its clean
   value is 0 when the clean image is already misclassified, which would make the ratio 0/0. The
   mean accuracy curve is then the accuracy of the model at each fraction (the abstract's "test
   accuracy" curve); divide it by ``mean_curve(order)[0]`` for the authors' relative scale.
   An accuracy curve without a fraction-0 point needs no clean pass, and none is made
   (``FidelityResult.clean`` is then NaN). For ``score="logit"`` (or a probability that
   underflows to 0) a sample whose clean score is ``<= 0`` or not finite cannot be normalised; it is
   marked in :attr:`FidelityResult.defined`, its curves are NaN, and it is left out of every mean
   and interval (and counted in ``to_dict()["n_undefined"]``), never a silent 0. Insertion's curve
   is not divided, so it drops only a sample whose clean score is not finite
   (:meth:`FidelityResult.defined_in`).
5. AUC by the trapezoid rule over the fraction axis (``[0, 1]``; the authors' plots use
   ``0..100``, so multiply by 100 to compare with their tables, and their axis is
   ``linspace(0, 100, n_points)`` whatever the real fractions, see :func:`curve_auc`).
6. Fidelity gap = mean AUC(LIF) - mean AUC(MIF), with the 95 % interval of half-width
   ``1.96 * sqrt(var_MIF + var_LIF) / sqrt(N)`` (:func:`fidelity_gap`; the variances are the
   per-order population variances ``numpy.var`` of the authors' notebook, ``ddof = 0``).

Insertion (Petsiuk, Das, Saenko, "RISE: Randomized Input Sampling for Explanation of Black-box
Models", BMVC 2018; docs/methods.md, "Insertion") runs the other way: it starts from the
blurred image (the ``"blur"`` fill, whatever ``fill`` is) and puts the most important units back
first; at fraction ``f`` the ``floor(f * U)`` most important units are the image's own and the
rest are blurred. Its curve is the raw score, as in RISE (not divided by the clean score: it
ends near the clean score and starts at the blurred image's); higher AUC is better. It uses the
MIF order's ranks, so it shares the sort, the clean pass and the batches of the other orders.

The engine: every order's ranks come from one sort of the importance; the clean images are
scored once; (order, fraction) pairs whose set of removed units is the same (``k = 0``, ``k = U``,
or two fractions with the same ``k``) are scored once and shared; the perturbed inputs of all
remaining (order, fraction, image) triples are laid out job-major and built batch by batch
(per run of consecutive images of one job: one comparison of the precomputed ranks with ``k`` and
one fused ``mul``/``where`` straight into the batch; no per-image or per-pixel Python loop), then
pushed through the model in full batches of ``batch_size`` under ``torch.inference_mode``. The
per-sample curves depend neither on ``batch_size`` nor on the other images: every random draw
(tie keys, random order, fill noise) is seeded by ``seed`` and the image's index in the data set
(``indices``; :func:`~pytest_saliency.metrics.seeding.per_sample_draws`), so a data set can be
scored shard by shard (:func:`sample_scores`) and summed up once
(:meth:`FidelityResult.from_scores`). Fills with a per-image source (blur, uniform,
the noisy-linear noise) hold one extra ``(N, C, H, W)`` tensor.

Fills (every channel of a removed pixel takes the fill's value for that channel):

- ``"zeros"``: 0 (the authors' choice);
- ``"mean"``: the image's per-channel mean;
- ``"blur"``: a Gaussian-blurred copy of the image (:func:`~pytest_saliency.metrics.image.gaussian_blur`), ``sigma = BLUR_SIGMA = 3`` pixels, kernel
  ``2 * ceil(3 * sigma) + 1 = 19`` taps, separable, replicate padding at the border;
- ``"uniform"``: uniform noise in ``[min, max]`` of the image (over all its channels and pixels),
  drawn once per image from ``seed`` and its index and shared by every step and order;
- ``"noisy_linear"``: ROAD's noisy linear imputation
  (:mod:`pytest_saliency.metrics.imputation`) of the removed pixels of each perturbed input,
  solved for the whole batch at once, plus ``N(0, noise_std^2)`` noise. The noise is drawn once
  per image and pixel from ``seed`` and the image's index (common random numbers), so the same
  removed pixel gets the same noise at every step and in every order; ROAD draws fresh noise at
  each call, which has the same distribution at each point of a curve.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from pytest_saliency._io import json_number
from pytest_saliency.metrics.image import gaussian_blur
from pytest_saliency.metrics.imputation import linear_impute
from pytest_saliency.metrics.saliency import ChannelReduction, reduce_channels
from pytest_saliency.metrics.seeding import per_sample_draws, sample_indices

if TYPE_CHECKING:
    from pytest_saliency.report.results import FidelityOrder, FidelitySummary

__all__ = [
    "FILLS",
    "ORDERS",
    "SCORES",
    "FidelityResult",
    "SampleScores",
    "auc_interval",
    "curve_auc",
    "default_fractions",
    "fidelity_curves",
    "fidelity_gap",
    "removal_counts",
    "sample_scores",
]

Order = Literal["mif", "lif", "random", "insertion"]
Fill = Literal["zeros", "mean", "blur", "uniform", "noisy_linear"]
Score = Literal["probability", "logit", "accuracy"]

ORDERS: tuple[str, ...] = ("mif", "lif", "random", "insertion")
FILLS: tuple[str, ...] = ("zeros", "mean", "blur", "uniform", "noisy_linear")
SCORES: tuple[str, ...] = ("probability", "logit", "accuracy")

#: z value of the two-sided 95 % normal interval used by the authors (``stats.norm.interval``).
Z95: float = 1.96

# Salts that derive independent random streams from one ``seed``.
_SALT_TIES, _SALT_RANDOM_ORDER, _SALT_FILL = 0x51, 0x52, 0x53


# ---------------------------------------------------------------------------------------------
# Curve -> number arithmetic
# ---------------------------------------------------------------------------------------------


def default_fractions(steps: int) -> list[float]:
    """``steps`` fractions ``0, 1/steps, ..., (steps-1)/steps`` (docs/methods.md#fidelity-curves, step 3)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return [i / steps for i in range(steps)]


def removal_counts(fractions: Tensor | Sequence[float], n_units: int) -> Tensor:
    """Units removed at each fraction: ``floor(f * n_units)`` (``(S,)`` long).

    A slack of ``1e-6`` absorbs binary rounding (``0.29 * 100`` is ``28.999...``), so the count
    is the one exact arithmetic gives; it matches Quantus ROAD's ``int(a_size * p / 100)``.
    """
    f = torch.as_tensor(fractions, dtype=torch.float64)
    return torch.floor(f * n_units + 1e-6).clamp_(0, n_units).to(torch.long)


def curve_auc(curves: Tensor, fractions: Tensor | Sequence[float]) -> Tensor:
    """Trapezoid-rule area under each curve over the fraction axis.

    Args:
        curves: ``(..., S)`` curve values.
        fractions: ``(S,)`` x coordinates (non-decreasing).

    Returns:
        ``(...)`` areas in float64. A constant-1 curve has area ``fractions[-1] - fractions[0]``
        (0.95 for the default 20 steps); to reproduce the authors' numbers, whose x axis is
        ``numpy.linspace(0, 100, S)``, pass that as ``fractions``. ``S = 1`` gives 0.
    """
    x = torch.as_tensor(fractions, dtype=torch.float64, device=curves.device)
    y = curves.to(torch.float64)
    if y.shape[-1] != x.shape[0]:
        raise ValueError(f"curves have {y.shape[-1]} points but fractions has {x.shape[0]}")
    if x.shape[0] < 2:
        return torch.zeros(y.shape[:-1], dtype=torch.float64, device=y.device)
    return torch.trapezoid(y, x=x, dim=-1)


def _finite(values: Tensor) -> Tensor:
    values = torch.as_tensor(values, dtype=torch.float64).flatten()
    return values[torch.isfinite(values)]


def auc_interval(auc: Tensor, *, ddof: int = 0, z: float = Z95) -> float:
    """Half-width ``z * std / sqrt(N)`` of the normal interval of a mean AUC.

    ``std`` is the standard deviation of the per-sample AUCs with ``ddof`` (default 0, the
    population variance ``numpy.var`` of the authors' notebook); non-finite AUCs (undefined
    samples) are left out. NaN when no sample (or ``N <= ddof``) remains.
    """
    values = _finite(auc)
    n = values.numel()
    if n <= ddof or n == 0:
        return math.nan
    return float(z * values.var(correction=ddof).sqrt() / math.sqrt(n))


def fidelity_gap(
    auc_mif: Tensor,
    auc_lif: Tensor,
    *,
    ddof: int = 0,
    z: float = Z95,
) -> tuple[float, float]:
    """Fidelity ``mean(AUC_LIF) - mean(AUC_MIF)`` and its 95 % interval half-width.

    Brocki & Chung (docs/methods.md#fidelity-curves, step 5; ``perturb.ipynb``): half-width
    ``z * sqrt(var_MIF + var_LIF) / sqrt(N)``, where ``var_MIF`` and ``var_LIF`` are the variances
    of the per-sample AUCs of each order taken separately (the covariance between the two curves
    of one image is ignored, as in the authors' code), with ``ddof=0`` by default: the population
    variance ``numpy.var`` the authors use. Pass ``ddof=1`` for the unbiased sample variance.

    Args:
        auc_mif: ``(N,)`` per-sample AUCs of the MIF curves.
        auc_lif: ``(N,)`` per-sample AUCs of the LIF curves (same samples, same order).

    Returns:
        ``(gap, half_width)`` as floats. Samples where either AUC is non-finite (undefined) are
        dropped from both; ``(nan, nan)`` when none remains.
    """
    mif = torch.as_tensor(auc_mif, dtype=torch.float64).flatten()
    lif = torch.as_tensor(auc_lif, dtype=torch.float64).flatten()
    if mif.shape != lif.shape:
        raise ValueError(f"auc_mif and auc_lif must have the same length, got {mif.numel()} and {lif.numel()}")
    keep = torch.isfinite(mif) & torch.isfinite(lif)
    mif, lif = mif[keep], lif[keep]
    n = mif.numel()
    if n == 0:
        return math.nan, math.nan
    gap = float(lif.mean() - mif.mean())
    if n <= ddof:
        return gap, math.nan
    spread = (mif.var(correction=ddof) + lif.var(correction=ddof)).sqrt()
    return gap, float(z * spread / math.sqrt(n))


# ---------------------------------------------------------------------------------------------
# Result
# ---------------------------------------------------------------------------------------------


def _json_list(values: Tensor) -> list[float | None]:
    return [json_number(float(v), digits=None) for v in values.detach().to(torch.float64).cpu().flatten()]


@dataclass(frozen=True)
class SampleScores:
    """The model's raw scores along each order's perturbation path, per sample: what
    :func:`sample_scores` computes for one batch of images (a shard), and what the batches of a
    data set concatenate into (along ``N``) before :meth:`FidelityResult.from_scores` sums them up.

    Attributes:
        fractions: ``(S,)`` float64, the fractions of units removed at each curve point.
        scores: order -> ``(N, S)`` float32 raw score (probability, logit or 0/1 correctness).
        clean: ``(N,)`` float32 raw score of each clean image; NaN for an accuracy curve without
            a fraction-0 point, whose clean pass is skipped.
        n_units: units per image (pixels, or ``K x K`` patches).
    """

    fractions: Tensor
    scores: dict[str, Tensor]
    clean: Tensor
    n_units: int


@dataclass(frozen=True)
class FidelityResult:
    """Perturbation curves of one attribution and the numbers derived from them.

    Attributes:
        fractions: ``(S,)`` float64, the fractions of units removed at each curve point.
        curves: order -> ``(N, S)`` normalised curves (divided by the clean score; raw for
            ``score="accuracy"`` and for ``insertion``; NaN rows for undefined samples).
        auc: order -> ``(N,)`` trapezoid AUC of each normalised curve over ``fractions``.
        scores: order -> ``(N, S)`` raw scores (probability, logit or 0/1 correctness).
        clean: ``(N,)`` raw score of each clean image (the value at fraction 0); NaN for an
            accuracy curve without a fraction-0 point, where the clean pass is not needed and
            is skipped.
        defined: ``(N,)`` bool, False where the curve cannot be normalised (see module docs);
            insertion's curve, never divided, needs only a finite clean score
            (:meth:`defined_in`).
        counts: ``(S,)`` long, units removed at each fraction.
        n_units: units per image (pixels, or ``K x K`` patches).
        score, fill, unit: the settings that produced the curves.
        ddof: variance correction used by the intervals (0: the authors' ``numpy.var``).
    """

    fractions: Tensor
    curves: dict[str, Tensor]
    auc: dict[str, Tensor]
    scores: dict[str, Tensor]
    clean: Tensor
    defined: Tensor
    counts: Tensor
    n_units: int
    score: str
    fill: str
    unit: int
    ddof: int = field(default=0)

    @classmethod
    def from_scores(cls, samples: SampleScores, *, score: str, fill: str, unit: int, ddof: int = 0) -> FidelityResult:
        """The normalised curves, AUCs and defined samples of per-sample raw scores (module docs,
        steps 4 and 5): of one batch, or of every shard of a data set concatenated."""
        orders = tuple(samples.scores)
        clean = samples.clean.float().cpu()
        raw = torch.stack([samples.scores[order].float().cpu() for order in orders])  # (O, N, S)
        if score == "accuracy":
            defined = torch.ones(clean.numel(), dtype=torch.bool)
            normalised = raw.clone()
        else:
            defined = torch.isfinite(clean) & (clean > 0)
            denominator = torch.where(defined, clean, torch.ones_like(clean))
            normalised = raw / denominator.view(1, -1, 1)
            normalised[:, ~defined] = math.nan
        if "insertion" in orders:  # RISE's curve is the raw score
            index = orders.index("insertion")
            normalised[index] = torch.where(_insertion_defined(defined, clean).view(-1, 1), raw[index], math.nan)
        fractions = samples.fractions
        curves = {order: normalised[i] for i, order in enumerate(orders)}
        return cls(
            fractions=fractions,
            curves=curves,
            auc={order: curve_auc(curve, fractions) for order, curve in curves.items()},
            scores={order: raw[i] for i, order in enumerate(orders)},
            clean=clean,
            defined=defined,
            counts=removal_counts(fractions, samples.n_units),
            n_units=samples.n_units,
            score=score,
            fill=fill,
            unit=unit,
            ddof=ddof,
        )

    @property
    def orders(self) -> tuple[str, ...]:
        return tuple(self.curves)

    def defined_in(self, order: str) -> Tensor:
        """``(N,)`` bool: the samples whose ``order`` curve is defined."""
        if order not in self.curves:
            raise KeyError(f"order {order!r} was not computed; available: {self.orders}")
        return _insertion_defined(self.defined, self.clean) if order == "insertion" else self.defined

    @property
    def n(self) -> int:
        """Number of samples whose curves are defined in every computed order."""
        return int(torch.stack([self.defined_in(order) for order in self.orders]).all(dim=0).sum())

    def _auc(self, order: str) -> Tensor:
        return self.auc[order][self.defined_in(order)]

    def mean_auc(self, order: str) -> float:
        """Mean AUC of ``order`` over the defined samples (NaN when there is none)."""
        values = _finite(self._auc(order))
        return float(values.mean()) if values.numel() else math.nan

    def auc_interval(self, order: str) -> float:
        """Half-width ``1.96 * std / sqrt(N)`` of the 95 % interval of :meth:`mean_auc`."""
        return auc_interval(self._auc(order), ddof=self.ddof)

    def mean_curve(self, order: str) -> Tensor:
        """``(S,)`` mean of the defined samples' curves of ``order``."""
        rows = self.curves[order][self.defined_in(order)]
        if rows.shape[0] == 0:
            return torch.full((self.fractions.numel(),), math.nan, dtype=torch.float64)
        return rows.to(torch.float64).mean(dim=0)

    def _gap(self) -> tuple[float, float]:
        if "mif" not in self.auc or "lif" not in self.auc:
            raise KeyError(f"the gap needs the 'mif' and 'lif' orders; computed: {self.orders}")
        return fidelity_gap(self._auc("mif"), self._auc("lif"), ddof=self.ddof)

    @property
    def gap(self) -> float:
        """Mean AUC(LIF) - mean AUC(MIF) over the defined samples."""
        return self._gap()[0]

    @property
    def gap_interval(self) -> float:
        """Half-width ``1.96 * sqrt(var_MIF + var_LIF) / sqrt(N)`` (see :func:`fidelity_gap`)."""
        return self._gap()[1]

    def to_dict(self) -> FidelitySummary:
        """JSON-serialisable summary: plain floats and lists; NaN becomes ``None``."""
        orders: dict[str, FidelityOrder] = {}
        for order in self.orders:
            orders[order] = {
                "mean_auc": json_number(self.mean_auc(order), digits=None),
                "auc_interval": json_number(self.auc_interval(order), digits=None),
                "mean_curve": _json_list(self.mean_curve(order)),
                "auc": _json_list(self.auc[order]),
                "n": int(self.defined_in(order).sum()),
            }
        out: FidelitySummary = {
            "score": self.score,
            "fill": self.fill,
            "unit": self.unit,
            "n_units": self.n_units,
            "fractions": _json_list(self.fractions),
            "counts": [int(c) for c in self.counts.tolist()],
            "n": self.n,
            "n_undefined": self.defined.numel() - self.n,
            "orders": orders,
        }
        if "mif" in self.auc and "lif" in self.auc:
            gap, half = self._gap()
            out["gap"] = json_number(gap, digits=None)
            out["gap_interval"] = json_number(half, digits=None)
        return out


def _insertion_defined(defined: Tensor, clean: Tensor) -> Tensor:
    """``(N,)`` bool: the samples whose insertion curve (the raw score) is defined: those whose
    clean score is finite, or that need no clean score (``defined`` with ``score="accuracy"``)."""
    return defined | torch.isfinite(clean)


# ---------------------------------------------------------------------------------------------
# Fills
# ---------------------------------------------------------------------------------------------


def _make_fill(
    fill: str, images: Tensor, indices: Sequence[int], seed: int, noise_std: float, batch_size: int
) -> Tensor | None:
    """The per-image fill source of the samples ``indices``: ``None`` (zeros), ``(N, C, 1, 1)``
    means, or ``(N, C, H, W)`` (blurred copy, uniform noise; for ``noisy_linear`` the scaled
    Gaussian noise field); the noise is drawn per sample (:func:`per_sample_draws`)."""
    if fill == "zeros":
        return None
    if fill == "mean":
        return images.mean(dim=(2, 3), keepdim=True)
    if fill == "blur":
        return torch.cat([gaussian_blur(chunk) for chunk in torch.split(images, max(1, batch_size))])
    shape = tuple(images.shape[1:])
    if fill == "uniform":
        noise = per_sample_draws(indices, shape, seed, _SALT_FILL, "uniform").to(images.device, images.dtype)
        low = images.amin(dim=(1, 2, 3), keepdim=True)
        high = images.amax(dim=(1, 2, 3), keepdim=True)
        return low + (high - low) * noise
    if fill == "noisy_linear":
        noise = per_sample_draws(indices, shape, seed, _SALT_FILL, "normal")
        return (noise_std * noise).to(device=images.device, dtype=images.dtype)
    raise ValueError(f"unknown fill {fill!r}; expected one of {FILLS}")


# ---------------------------------------------------------------------------------------------
# The perturbation engine
# ---------------------------------------------------------------------------------------------


def _unit_importance(importance: Tensor, unit: int) -> Tensor:
    """``(N, H, W)`` -> ``(N, ceil(H/K) * ceil(W/K))`` patch sums (zero-padded edges)."""
    n, h, w = importance.shape
    if unit == 1:
        return importance.reshape(n, h * w)
    hu, wu = -(-h // unit), -(-w // unit)
    padded = F.pad(importance, (0, wu * unit - w, 0, hu * unit - h))
    return padded.view(n, hu, unit, wu, unit).sum(dim=(2, 4)).reshape(n, hu * wu)


def _ranks(importance: Tensor, orders: Sequence[str], indices: Sequence[int], seed: int) -> Tensor:
    """``(O, N, U)`` int32 rank of each unit in each order (0 = removed first; for
    ``insertion``, 0 = the first to stay blurred: the LIF ranks), for the samples ``indices``.

    MIF sorts by (importance, seeded random tie key), both descending, in one sort: the float32
    importance is mapped to an order-preserving int32 (``-0.0`` counts as ``0.0``) and packed
    above a random 32-bit key into one int64 sort key, so equal importances are ordered by the
    seeded key (the "seeded random permutation as secondary key" of docs/methods.md#fidelity-curves) and the
    order is reproducible. LIF is the exact reverse of MIF (ties in the reverse seeded order), so
    one sort serves both. ``random`` is a seeded random permutation. The tie keys and the random
    order are drawn per sample, so they do not depend on the other samples of the batch.
    """
    n, u = importance.shape
    device = importance.device
    positions = torch.arange(u, device=device, dtype=torch.int32).expand(n, u)

    def rank_of(sequence: Tensor) -> Tensor:
        rank = torch.empty((n, u), dtype=torch.int32, device=device)
        return rank.scatter_(1, sequence, positions)

    mif_rank: Tensor | None = None
    if {"mif", "lif", "insertion"} & set(orders):
        bits = (importance.to(torch.float32) + 0.0).contiguous().view(torch.int32)
        ordered = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits).to(torch.int64)
        ties = per_sample_draws(indices, (u,), seed, _SALT_TIES, "bits")
        keys = (ordered << 32) | ties.to(device)
        sequence = torch.sort(keys, dim=1, descending=True, stable=True).indices
        mif_rank = rank_of(sequence)
    ranks = []
    for order in orders:
        if order == "random":
            keys = per_sample_draws(indices, (u,), seed, _SALT_RANDOM_ORDER, "uniform").to(device)
            ranks.append(rank_of(keys.argsort(dim=1)))
            continue
        assert mif_rank is not None  # computed above for mif, lif and insertion
        # insertion blurs the U - k least important units
        ranks.append(mif_rank if order == "mif" else (u - 1) - mif_rank)
    return torch.stack(ranks)


def _target_scores(logits: Tensor, target: Tensor, score: str) -> Tensor:
    logits = logits.float()
    picked = target.view(-1, 1)
    if score == "probability":
        return logits.softmax(dim=-1).gather(1, picked).squeeze(1)
    if score == "logit":
        return logits.gather(1, picked).squeeze(1)
    return (logits.argmax(dim=-1) == target).float()


@dataclass(frozen=True)
class _Jobs:
    """The distinct model inputs of every image: job ``j`` removes ``k[j]`` units in the order
    ``order[j]`` (a shared job builds the same input for every order); ``points`` ``(O, S)`` is
    the job of each order's curve point; ``clean`` whether job 0 is the clean image."""

    order: list[int]
    k: list[int]
    points: Tensor
    clean: bool


def _jobs(orders: tuple[str, ...], counts: Tensor, n_units: int, fill: str, score: str) -> _Jobs:
    """(order, units removed) pairs whose set of removed units is the same are one job: ``k = 0``
    (clean) and ``k = U`` for every order (``k = U`` of insertion only when it blurs like the
    fill), and a count repeated in one order. Insertion at ``k`` inserted units removes (blurs)
    ``U - k``. The clean images come first; they are scored whenever the curves need them: to
    normalise (probability, logit) or as a curve point (a fraction with ``k = 0``). An accuracy
    curve without such a point is not normalised, so no pass is spent on it."""
    inserting = [order == "insertion" for order in orders]
    index: dict[tuple[int | str, int], int] = {}
    job_order: list[int] = []
    job_k: list[int] = []

    def job(order: int, k: int) -> int:
        shared = k == 0 or (k == n_units and (not inserting[order] or fill == "blur"))
        key: tuple[int | str, int] = ("shared", k) if shared else (order, k)
        if key not in index:
            index[key] = len(job_order)
            job_order.append(order)
            job_k.append(key[1])
        return index[key]

    if score != "accuracy" or bool((counts == 0).any()):
        job(0, 0)
    points = torch.tensor(
        [[job(o, n_units - int(k) if inserting[o] else int(k)) for k in counts.tolist()] for o in range(len(orders))],
        dtype=torch.long,
    )
    return _Jobs(job_order, job_k, points, ("shared", 0) in index)


def _perturbed_batch(
    start: int,
    stop: int,
    jobs: _Jobs,
    ranks: Tensor,
    images: Tensor,
    inserting: list[bool],
    fill: str,
    fill_source: Tensor | None,
    blurred: Tensor | None,
    unit: int,
) -> Tensor:
    """The model inputs ``start:stop`` of the job-major layout (input ``i`` is image
    ``i mod N`` of job ``i div N``): a few runs of consecutive images of one job, each one
    comparison of the precomputed ranks with ``k`` and one fused fill."""
    n, _, h, w = images.shape
    hu, wu = -(-h // unit), -(-w // unit)
    device = images.device
    batch = torch.empty((stop - start, *images.shape[1:]), dtype=images.dtype, device=device)
    removed = torch.empty((stop - start, h, w), dtype=torch.bool, device=device) if fill == "noisy_linear" else None
    for job_id in range(start // n, (stop - 1) // n + 1):
        first, last = max(start, job_id * n), min(stop, (job_id + 1) * n)
        rows, out = slice(first - job_id * n, last - job_id * n), slice(first - start, last - start)
        units = ranks[jobs.order[job_id], rows] < jobs.k[job_id]  # (run, U)
        if unit > 1:
            units = units.view(-1, hu, wu).repeat_interleave(unit, 1).repeat_interleave(unit, 2)
            pixels = units[:, :h, :w]
        else:
            pixels = units.view(-1, h, w)
        mask = pixels.unsqueeze(1)
        if inserting[jobs.order[job_id]]:
            assert blurred is not None
            torch.where(mask, blurred[rows], images[rows], out=batch[out])
            if removed is not None:
                removed[out] = False
        elif fill == "zeros":
            # exact for finite inputs, and several times faster than masked_fill
            torch.mul(images[rows], mask.logical_not(), out=batch[out])
        elif removed is not None:
            removed[out] = pixels
            batch[out] = images[rows]
        else:
            assert fill_source is not None  # only the zeros fill has none
            torch.where(mask, fill_source[rows], images[rows], out=batch[out])
    if removed is None:
        return batch
    assert fill_source is not None
    imputed = linear_impute(batch, removed)
    imputed.add_(fill_source.index_select(0, torch.arange(start, stop, device=device) % n))
    return torch.where(removed.unsqueeze(1), imputed, batch)


def _checked_fractions(fractions: Sequence[float] | None, steps: int) -> Tensor:
    """``(S,)`` float64: ``fractions``, or the default ones of ``steps``; refused unless
    non-decreasing in ``[0, 1]``."""
    values = default_fractions(steps) if fractions is None else [float(f) for f in fractions]
    frac = torch.tensor(values, dtype=torch.float64)
    if frac.numel() == 0 or bool(((frac < 0) | (frac > 1)).any()) or bool((frac.diff() < 0).any()):
        raise ValueError(f"fractions must be non-decreasing values in [0, 1], got {values}")
    return frac


def _check_settings(orders: tuple[str, ...], fill: str, score: str, unit: int, batch_size: int) -> None:
    if not orders or any(o not in ORDERS for o in orders) or len(set(orders)) != len(orders):
        raise ValueError(f"orders must be distinct values of {ORDERS}, got {orders}")
    if fill not in FILLS:
        raise ValueError(f"unknown fill {fill!r}; expected one of {FILLS}")
    if score not in SCORES:
        raise ValueError(f"unknown score {score!r}; expected one of {SCORES}")
    if not isinstance(unit, int) or unit < 1:
        raise ValueError(f"unit must be a positive integer, got {unit!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")


def sample_scores(
    model: Callable[[Tensor], Tensor],
    images: Tensor,
    importance: Tensor,
    *,
    target: Tensor,
    indices: Sequence[int] | Tensor | None = None,
    fractions: Sequence[float] | None = None,
    steps: int = 20,
    orders: Sequence[Order] = ("mif", "lif"),
    fill: Fill = "zeros",
    unit: int = 1,
    score: Score = "probability",
    batch_size: int = 64,
    seed: int = 0,
    noise_std: float = 0.01,
    channels: ChannelReduction = "abs_sum",
) -> SampleScores:
    """The model's raw score of every image along every order's perturbation path (module docs,
    steps 1 to 3): the per-sample part of :func:`fidelity_curves`, which one shard computes.

    Args:
        model: maps ``(B, C, H, W)`` inputs to ``(B, K)`` logits; called only under
            ``torch.inference_mode`` and in batches of at most ``batch_size``. An ``nn.Module``
            should be in eval mode (a warning is given otherwise: train-mode batch norm would make
            the curves depend on the batch composition).
        images: ``(N, C, H, W)`` inputs, on the model's device.
        importance: ``(N, H, W)`` one importance map per image, or ``(N, C, H, W)`` attributions
            collapsed with ``channels`` (:func:`~pytest_saliency.metrics.saliency.reduce_channels`).
        target: ``(N,)`` long class whose score is tracked (label or clean prediction).
        indices: the ``N`` samples' indices in the data set (default ``0 .. N-1``): every random
            draw (tie keys, random order, uniform and noisy-linear fills) is seeded by ``seed``
            and the sample's index, so a sample's curves depend neither on the batch size nor on
            the other samples it is computed with.
        fractions: fractions of units removed at each curve point, non-decreasing in ``[0, 1]``;
            default ``0, 1/steps, ..., (steps-1)/steps``.
        steps: number of default fractions (ignored when ``fractions`` is given).
        orders: any of ``"mif"``, ``"lif"``, ``"random"``, ``"insertion"`` (RISE: the most
            important units put back first into the blurred image; its curve is not normalised).
        fill: ``"zeros" | "mean" | "blur" | "uniform" | "noisy_linear"`` (module docstring).
        unit: patch side ``K`` (1 = pixels); a patch's importance is the sum over it.
        score: ``"probability"`` (softmax of the target), ``"logit"`` or ``"accuracy"``
            (``argmax == target`` as 0/1).
        batch_size: perturbed inputs per forward pass.
        seed: seeds the tie-break, the random order and the random fills.
        noise_std: ROAD noise for ``fill="noisy_linear"``.
        channels: channel reduction for 4-D ``importance``.
    """
    if images.dim() != 4:
        raise ValueError(f"images must be (N, C, H, W), got {tuple(images.shape)}")
    n, _, h, w = images.shape
    if importance.dim() == 4:
        importance = reduce_channels(importance, channels)
    if importance.dim() != 3 or tuple(importance.shape) != (n, h, w):
        raise ValueError(f"importance must be (N, H, W) = {(n, h, w)} or (N, C, H, W), got {tuple(importance.shape)}")
    orders = tuple(orders)
    _check_settings(orders, fill, score, unit, batch_size)
    frac = _checked_fractions(fractions, steps)
    target = torch.as_tensor(target, device=images.device).long().view(-1)
    if target.numel() != n:
        raise ValueError(f"target must have N = {n} entries, got {target.numel()}")
    samples = sample_indices(indices, n)
    if isinstance(model, torch.nn.Module) and model.training:
        warnings.warn(
            "fidelity_curves got a model in training mode; call model.eval() first "
            "(batch norm and dropout would make the curves depend on the batching)",
            stacklevel=3,
        )
    device = images.device
    importance = importance.to(device=device, dtype=torch.float32)
    if bool(torch.isnan(importance).any()):
        raise ValueError("importance contains NaN")
    if not bool(torch.isfinite(images).all()):
        raise ValueError("images contain NaN or infinite values")

    with torch.inference_mode():
        unit_imp = _unit_importance(importance, unit)
        n_units = unit_imp.shape[1]
        counts = removal_counts(frac, n_units)
        ranks = _ranks(unit_imp, orders, samples, seed)
        jobs = _jobs(orders, counts, n_units, fill, score)
        inserting = [order == "insertion" for order in orders]
        fill_source = _make_fill(fill, images, samples, seed, noise_std, batch_size)
        blurred = None
        if any(inserting):
            blurred = (
                fill_source if fill == "blur" else _make_fill("blur", images, samples, seed, noise_std, batch_size)
            )
        total = len(jobs.order) * n
        results = torch.empty(total, dtype=torch.float32, device=device)
        for start in range(0, total, batch_size):
            stop = min(start + batch_size, total)
            batch = _perturbed_batch(start, stop, jobs, ranks, images, inserting, fill, fill_source, blurred, unit)
            image_ids = torch.arange(start, stop, device=device) % n
            results[start:stop] = _target_scores(model(batch), target[image_ids], score)
        raw = results.view(len(jobs.order), n)[jobs.points.to(device)]  # (O, S, N)
        clean = results[:n] if jobs.clean else torch.full((n,), math.nan, device=device)
    raw, clean = raw.permute(0, 2, 1).clone(), clean.clone()  # (O, N, S); normal (non-inference) tensors
    return SampleScores(frac, {order: raw[i] for i, order in enumerate(orders)}, clean, n_units)


def fidelity_curves(
    model: Callable[[Tensor], Tensor],
    images: Tensor,
    importance: Tensor,
    *,
    target: Tensor,
    indices: Sequence[int] | Tensor | None = None,
    fractions: Sequence[float] | None = None,
    steps: int = 20,
    orders: Sequence[Order] = ("mif", "lif"),
    fill: Fill = "zeros",
    unit: int = 1,
    score: Score = "probability",
    batch_size: int = 64,
    seed: int = 0,
    noise_std: float = 0.01,
    channels: ChannelReduction = "abs_sum",
) -> FidelityResult:
    """MIF / LIF (/ random, insertion) perturbation curves of a batch of images (Brocki & Chung
    2022): :func:`sample_scores` (the arguments are its own) summed up by
    :meth:`FidelityResult.from_scores`, with ``S = len(fractions)`` points per curve. For
    ``score="accuracy"`` the curves are not normalised per sample."""
    samples = sample_scores(
        model,
        images,
        importance,
        target=target,
        indices=indices,
        fractions=fractions,
        steps=steps,
        orders=orders,
        fill=fill,
        unit=unit,
        score=score,
        batch_size=batch_size,
        seed=seed,
        noise_std=noise_std,
        channels=channels,
    )
    return FidelityResult.from_scores(samples, score=score, fill=fill, unit=unit)
