"""Attribution drift between two model versions, summarised by clusters of salient segments.

Follows IMACS (Schoop et al., "IMACS: Image Model Attribution Comparison Summaries", Google,
2022; docs/methods.md#attribution-drift-imacs): attribute both versions on the same inputs, cut
every image into segments, keep each image's most salient segments, embed the kept segments,
cluster the embeddings, and report per cluster how much of the attribution each version puts
there. :func:`drift_from_kept` is the merge: it takes every image's kept segments and their
embeddings (computed per image, by shards, with :mod:`.segments`) and runs the stages of
:mod:`.clusters` on them all; :func:`drift_from_scores` and :func:`attribution_drift` do the
whole thing on tensors held at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal, TypeAlias

import torch
from torch import Tensor

from ..._io import json_number
from ...memo import remembered
from ..intervals import RESAMPLES, bootstrap_means, percentile_bounds
from .clusters import ClusterShift, KMeansResult, assign, cluster_shift, kmeans, representatives
from .segments import (
    SegmentsFrom,
    as_float,
    colour_texture_embeddings,
    first_occurrences,
    kept_segments,
    patch_segments,
    rank_correlation,
    segment_attribution,
    segment_count,
    top_segments,
)

if TYPE_CHECKING:
    from ...report.results import DriftSettings, DriftSummary, SegmentGrid


def _no_settings() -> DriftSettings:
    return {}


@dataclass(frozen=True)
class DriftResult:
    """The outcome of :func:`drift_from_scores` / :func:`attribution_drift`.

    Points are the kept segments, ``P`` of them, in (image, segment id) order:
    ``point_image (P,)``, ``point_segment (P,)``, ``salient_in_a`` / ``salient_in_b (P,) bool``
    (among that image's top ``keep`` under A / B), ``share_a`` / ``share_b (P,)`` (fraction of the
    image's total attribution), ``assignment (P,)`` (cluster). ``centres (k, D)`` were fitted on
    version A's kept segments (or given). ``representatives (k, n)``: point indices nearest each
    centre (``-1`` padded). ``scores_a`` / ``scores_b (N, S)``: segment scores.
    ``rank_correlation (N,)``: Spearman correlation of A's and B's segment scores per image (NaN
    where undefined). ``undefined_a`` / ``undefined_b``: images whose total attribution is 0
    (their shares are 0). ``sample_index (N,)``: what the images are called in
    :meth:`representative_segments` and the summary (their data set positions; default ``0..N-1``).
    """

    shift: ClusterShift
    centres: Tensor
    assignment: Tensor
    point_image: Tensor
    point_segment: Tensor
    salient_in_a: Tensor
    salient_in_b: Tensor
    share_a: Tensor
    share_b: Tensor
    representatives: Tensor
    scores_a: Tensor
    scores_b: Tensor
    rank_correlation: Tensor
    undefined_a: int
    undefined_b: int
    inertia: float | None
    settings: DriftSettings = field(default_factory=_no_settings)
    sample_index: Tensor | None = None

    @property
    def max_abs_shift(self) -> float:
        return self.shift.max_abs_shift

    @property
    def mean_abs_shift(self) -> float:
        return self.shift.mean_abs_shift

    def image_shifts(self) -> Tensor:
        """``(N, k)`` float64: per image and cluster, the summed ``share_b - share_a`` of the image's
        kept segments in the cluster. Its column means are ``shift.shift``."""
        n, k = int(self.scores_a.shape[0]), self.shift.clusters
        table = torch.zeros(n * k, dtype=torch.float64, device=self.share_a.device)
        change = self.share_b.double() - self.share_a.double()
        table.index_add_(0, self.point_image * k + self.assignment.to(self.point_image.device), change)
        return table.reshape(n, k).cpu()

    def shift_intervals(
        self, *, generator: torch.Generator, resamples: int = RESAMPLES
    ) -> dict[str, tuple[float, float]]:
        """95 % percentile-bootstrap bounds of ``max_abs_shift`` and ``mean_abs_shift``,
        resampling the images (the clusters stay fixed; ``mean_abs_shift`` averages over the
        clusters that are non-empty in the data). See docs/methods.md, "Intervals and decisions"."""
        shifts = bootstrap_means(self.image_shifts(), generator=generator, resamples=resamples).abs()  # (B, k)
        filled = self.shift.count > 0
        largest = shifts.max(dim=1).values if shifts.shape[1] else torch.zeros(resamples, dtype=torch.float64)
        average = shifts[:, filled].mean(dim=1) if bool(filled.any()) else torch.zeros(resamples, dtype=torch.float64)
        bounds = {
            name: percentile_bounds(values)
            for name, values in (("max_abs_shift", largest), ("mean_abs_shift", average))
        }
        return {name: (float(lower), float(upper)) for name, (lower, upper) in bounds.items()}

    def representative_segments(self, cluster: int) -> list[tuple[int, int]]:
        """``(image, segment id)`` of the cluster's representatives, nearest first; the image by
        its :attr:`sample_index`."""
        chosen = self.representatives[cluster]
        chosen = chosen[chosen >= 0]
        images = self.point_image[chosen].cpu()
        if self.sample_index is not None:
            images = self.sample_index.cpu()[images]
        return list(zip(images.tolist(), self.point_segment[chosen].tolist(), strict=True))

    def baseline_tensors(self) -> dict[str, Tensor]:
        """What a drift snapshot stores for the reference version: its segment scores and the
        cluster centres (CPU tensors), enough to rerun against a new version with
        ``drift_from_scores(baseline["scores_a"], new_scores, ..., centres=baseline["centres"])``."""
        return {"scores_a": self.scores_a.detach().cpu(), "centres": self.centres.detach().cpu()}

    def to_dict(self) -> DriftSummary:
        """A JSON-serialisable summary."""
        rho = self.rank_correlation[~torch.isnan(self.rank_correlation)]
        shift = self.shift.to_dict()
        for entry in shift["clusters"]:
            entry["representatives"] = [list(pair) for pair in self.representative_segments(entry["cluster"])]
        return {
            **shift,
            "segments_kept": int(self.assignment.shape[0]),
            "undefined_a": self.undefined_a,
            "undefined_b": self.undefined_b,
            "inertia": None if self.inertia is None else json_number(self.inertia),
            "rank_correlation": {
                "mean": json_number(float(rho.mean())) if rho.numel() else None,
                "median": json_number(float(rho.median())) if rho.numel() else None,
                "min": json_number(float(rho.min())) if rho.numel() else None,
                "undefined": int(self.rank_correlation.numel() - rho.numel()),
            },
            "settings": self.settings.copy(),
        }

    def describe(self, top: int | None = None) -> list[str]:
        """Human-readable lines: clusters by decreasing ``|shift|``, then the rank correlation."""
        lines = self.shift.describe(top)
        rho = self.rank_correlation[~torch.isnan(self.rank_correlation)]
        if rho.numel():
            lines.append(f"segment rank correlation A vs B: mean {float(rho.mean()):.2f}, min {float(rho.min()):.2f}")
        return lines


EmbedSpec: TypeAlias = Callable[..., Tensor] | Tensor | Literal["colour_texture"]
"""How to embed kept segments: a name, an :class:`~.segments.Embedder`, or ``(N, S, D)`` embeddings."""


def embed_segments(
    embed: EmbedSpec, images: Tensor | None, segments: Tensor | None, indices: Tensor, count: int
) -> Tensor:
    """``(N, M, D)`` embeddings of the segments ``indices (N, M)`` of each image (``count``
    segments an image), by ``embed`` (see :data:`EmbedSpec`)."""
    n, m = indices.shape
    if isinstance(embed, Tensor):
        if embed.dim() != 3 or embed.shape[0] != n or embed.shape[1] != count:
            raise ValueError(f"precomputed embeddings must be (N, S, D) = ({n}, {count}, D), got {tuple(embed.shape)}")
        table = embed.to(indices.device)
        return table.gather(1, indices[:, :, None].expand(n, m, table.shape[2]))
    if images is None or segments is None:
        raise ValueError("embedding segments needs the images and the segment map")
    if isinstance(embed, str):
        if embed != "colour_texture":
            raise ValueError(f"unknown embedding {embed!r}; give 'colour_texture', a callable or an (N, S, D) tensor")
        return colour_texture_embeddings(images, segments, indices).reshape(n, m, -1)
    rows = embed(images=images, segments=segments, indices=indices)
    if rows.dim() != 2 or rows.shape[0] != n * m:
        raise ValueError(f"the embedder returned {tuple(rows.shape)}; expected ({n * m}, D)")
    return rows.reshape(n, m, -1)


def drift_from_kept(
    scores_a: Tensor,
    scores_b: Tensor,
    candidates: Tensor,
    embeddings: Tensor,
    *,
    keep: int = 8,
    clusters: int = 8,
    seed: int = 0,
    centres: Tensor | None = None,
    segments_from: SegmentsFrom = "union",
    representatives_per_cluster: int = 5,
    iterations: int = 100,
    tol: float = 1e-6,
    sample_index: Tensor | None = None,
) -> DriftResult:
    """Attribution drift from every image's segment scores ``(N, S)`` under versions A
    (reference) and B, its kept segments ``candidates (N, M)`` (:func:`~.segments.kept_segments`
    of the same scores) and their embeddings ``(N, M, D)``.

    The k-means centres are fitted on the segments kept under A only (or ``centres (k, D)`` from
    a snapshot are used as they are), and every kept segment goes to its nearest centre. A
    segment kept only because of B, of a kind A never attends to, lands in its nearest A cluster,
    whose share then rises; the cluster's representatives show what it holds. Shares: see
    :func:`~.clusters.cluster_shift`. Runs on ``scores_a``'s device.
    """
    if scores_a.dim() != 2 or scores_a.shape != scores_b.shape:
        raise ValueError(f"scores must share an (N, S) shape, got {tuple(scores_a.shape)} and {tuple(scores_b.shape)}")
    device = scores_a.device
    a = as_float(scores_a)
    b = as_float(scores_b).to(device)
    n, s = a.shape
    candidates = candidates.to(device)
    if embeddings.dim() != 3 or tuple(embeddings.shape[:2]) != tuple(candidates.shape):
        raise ValueError(
            f"embeddings must be (N, M, D) = {tuple(candidates.shape)} + (D,), got {tuple(embeddings.shape)}"
        )

    valid = first_occurrences(candidates)
    point_image = torch.arange(n, device=device)[:, None].expand_as(candidates)[valid]
    point_segment = candidates[valid]
    embedded = as_float(embeddings.to(device))[valid]  # (P, D)

    mask_a = torch.zeros(n, s, dtype=torch.bool, device=device).scatter_(1, top_segments(a, keep), True)
    mask_b = torch.zeros(n, s, dtype=torch.bool, device=device).scatter_(1, top_segments(b, keep), True)
    in_a = mask_a[point_image, point_segment]
    in_b = mask_b[point_image, point_segment]
    inertia: float | None = None
    if centres is None:
        points = embedded[in_a]
        centres, fitted_inertia = remembered(
            "kmeans",
            [points],
            {"k": clusters, "seed": seed, "iterations": iterations, "tol": tol},
            lambda: _centres_and_inertia(kmeans(points, clusters, seed=seed, iterations=iterations, tol=tol)),
        )
        centres, inertia = centres.to(device), float(fitted_inertia)
    else:
        centres = as_float(centres).to(device)
        if centres.dim() != 2 or centres.shape[1] != embedded.shape[1]:
            raise ValueError(f"centres are {tuple(centres.shape)} but the embeddings have {embedded.shape[1]} features")
    k = centres.shape[0]
    assignment = assign(embedded, centres)

    total_a = a.sum(dim=1)
    total_b = b.sum(dim=1)
    share_a = torch.where(total_a[point_image] > 0, a[point_image, point_segment] / total_a[point_image], 0.0)
    share_b = torch.where(total_b[point_image] > 0, b[point_image, point_segment] / total_b[point_image], 0.0)
    shift = cluster_shift(share_a, share_b, assignment, k, num_images=n)

    return DriftResult(
        shift=shift,
        centres=centres,
        assignment=assignment,
        point_image=point_image,
        point_segment=point_segment,
        salient_in_a=in_a,
        salient_in_b=in_b,
        share_a=share_a,
        share_b=share_b,
        representatives=representatives(embedded, centres, representatives_per_cluster, assignment),
        scores_a=a,
        scores_b=b,
        rank_correlation=rank_correlation(a, b),
        undefined_a=int((total_a <= 0).sum()),
        undefined_b=int((total_b <= 0).sum()),
        inertia=inertia,
        settings={"keep": keep, "clusters": k, "seed": seed, "segments_from": segments_from},
        sample_index=sample_index,
    )


def _centres_and_inertia(fitted: KMeansResult) -> tuple[Tensor, Tensor]:
    """What a drift result keeps of a k-means fit: ``centres (k, D)`` and the inertia ``()`` float64."""
    return fitted.centres, torch.tensor(fitted.inertia, dtype=torch.float64)


def drift_from_scores(
    scores_a: Tensor,
    scores_b: Tensor,
    images: Tensor | None = None,
    segments: Tensor | None = None,
    *,
    keep: int = 8,
    embed: EmbedSpec = "colour_texture",
    clusters: int = 8,
    seed: int = 0,
    centres: Tensor | None = None,
    segments_from: SegmentsFrom = "union",
    representatives_per_cluster: int = 5,
    iterations: int = 100,
    tol: float = 1e-6,
) -> DriftResult:
    """Attribution drift from per-segment scores ``(N, S)`` of versions A (reference) and B, all
    images at once.

    Kept segments: per image, the ``keep`` best under A together with the ``keep`` best under B
    (``segments_from="union"``, the default: a segment only the new version attends to is still
    counted), or A's only (``"a"``). They are embedded (``embed``: ``"colour_texture"``, an
    :class:`~.segments.Embedder`, or precomputed ``(N, S, D)`` embeddings of every segment),
    then :func:`drift_from_kept`. Runs on ``scores_a``'s device.
    """
    candidates = kept_segments(as_float(scores_a), as_float(scores_b), keep, segments_from)
    embedded = embed_segments(embed, images, segments, candidates, scores_a.shape[1])
    result = drift_from_kept(
        scores_a, scores_b, candidates, embedded,
        keep=keep, clusters=clusters, seed=seed, centres=centres, segments_from=segments_from,
        representatives_per_cluster=representatives_per_cluster, iterations=iterations, tol=tol,
    )  # fmt: skip
    shown = embed if isinstance(embed, str) else ("precomputed" if isinstance(embed, Tensor) else "callable")
    return replace(result, settings={**result.settings, "embedding": shown})


def attribution_drift(
    attr_a: Tensor,
    attr_b: Tensor,
    images: Tensor | None = None,
    *,
    patch: int = 8,
    segments: Tensor | None = None,
    keep: int = 8,
    embed: EmbedSpec = "colour_texture",
    clusters: int = 8,
    seed: int = 0,
    centres: Tensor | None = None,
    segments_from: SegmentsFrom = "union",
    representatives_per_cluster: int = 5,
    iterations: int = 100,
    tol: float = 1e-6,
) -> DriftResult:
    """IMACS-style drift between attributions ``(N, C, H, W)`` or ``(N, H, W)`` of a reference
    version A and a new version B on the same ``images (N, C, H, W)``.

    Segments are a ``patch × patch`` grid unless ``segments (H, W)`` is given; each segment
    scores the sum of its ``|attribution|`` (:func:`segment_attribution`); the rest is
    :func:`drift_from_scores`. Defaults (patch 8, keep 8, colour/texture embedding, 8 clusters,
    union of A's and B's kept segments, centres from A) are this project's choices; IMACS does
    not publish its code. ``settings`` in the result records them, ``patch`` included.
    """
    if attr_a.shape != attr_b.shape:
        raise ValueError(f"attributions differ in shape: {tuple(attr_a.shape)} vs {tuple(attr_b.shape)}")
    height, width = attr_a.shape[-2:]
    grid: SegmentGrid = {"custom": True} if segments is not None else {"patch": patch}
    if segments is None:
        segments = patch_segments(height, width, patch, device=attr_a.device)
    segments = segments.to(attr_a.device)
    count = segment_count(segments, None)
    scores_a = segment_attribution(attr_a, segments, count)
    scores_b = segment_attribution(attr_b.to(attr_a.device), segments, count)
    result = drift_from_scores(
        scores_a,
        scores_b,
        images,
        segments,
        keep=keep,
        embed=embed,
        clusters=clusters,
        seed=seed,
        centres=centres,
        segments_from=segments_from,
        representatives_per_cluster=representatives_per_cluster,
        iterations=iterations,
        tol=tol,
    )
    return replace(result, settings={"segments": grid, **result.settings})
