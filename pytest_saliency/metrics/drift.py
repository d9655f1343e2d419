"""Attribution drift between two model versions, summarised by clusters of salient segments.

Follows IMACS (Schoop et al., "IMACS: Image Model Attribution Comparison Summaries", Google,
2022; docs/methods.md#attribution-drift-imacs): attribute both versions on the same inputs, cut every image into segments,
keep each image's most salient segments, embed the kept segments, cluster the embeddings, and
report per cluster how much of the attribution each version puts there. A cluster whose share
moves is a kind of input feature the two versions treat differently.

The paper's code is not public, so **every stage's default here is this project's choice**, and
every stage is a separate function that can be swapped:

* segments: a fixed ``patch × patch`` grid (:func:`patch_segments`); any ``(H, W)`` map of
  segment ids (superpixels, say) works in its place;
* segment score: the sum of ``|attribution|`` over the segment's pixels and channels
  (:func:`segment_attribution`);
* kept segments: the ``keep`` highest-scoring segments of each image under version A **and**
  under version B (the union), so a segment that only the new version finds salient is counted
  (:func:`top_segments`, ``segments_from="union"``);
* embedding: a colour/texture descriptor (:func:`colour_texture_embeddings`) by default, or pooled
  activations of a named layer (:func:`activation_embeddings`), or any callable, or precomputed
  per-segment embeddings;
* clustering: k-means with greedy k-means++ seeding (:func:`kmeans`), fitted on the segments kept
  under the *reference* version A only, so the centres can be stored in a baseline and reused;
* shift: per cluster, the share of the dataset's attribution that falls in the cluster's
  segments, with every image weighing the same, under B minus under A (:func:`cluster_shift`).

Everything is batched tensor code on the inputs' device: no loop over pixels or images (the only
loops are over k-means iterations, k-means++ centres and model forward chunks).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol, TypeAlias

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._io import json_number
from .intervals import RESAMPLES, bootstrap_means, percentile_bounds
from .sanity import average_ranks

__all__ = [
    "ClusterShift",
    "DriftResult",
    "Embedder",
    "KMeansResult",
    "activation_embedder",
    "activation_embeddings",
    "assign",
    "attribution_drift",
    "cluster_shift",
    "colour_texture_embeddings",
    "drift_from_scores",
    "kmeans",
    "patch_segments",
    "rank_correlation",
    "representatives",
    "segment_attribution",
    "top_segments",
]

SegmentsFrom = Literal["union", "a"]


class Embedder(Protocol):
    """Embeds kept segments: called with keywords, returns ``(N * M, D)`` rows in
    image-major order (image 0's ``M`` segments, then image 1's, ...).

    ``images``: ``(N, C, H, W)``; ``segments``: ``(H, W) long``; ``indices``: ``(N, M) long``
    segment ids to embed for each image.
    """

    def __call__(self, *, images: Tensor, segments: Tensor, indices: Tensor) -> Tensor: ...


# --------------------------------------------------------------------------------------------
# Segments and their attribution
# --------------------------------------------------------------------------------------------


def patch_segments(height: int, width: int, patch: int, *, device: torch.device | str | None = None) -> Tensor:
    """Segment ids ``(H, W) long`` of a grid of ``patch × patch`` squares, row-major.

    There are ``ceil(H / patch) * ceil(W / patch)`` segments; the last row and column of patches
    are smaller when ``patch`` does not divide the size.
    """
    if patch < 1:
        raise ValueError(f"patch must be >= 1, got {patch}")
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    columns = math.ceil(width / patch)
    rows = torch.arange(height, device=device) // patch
    cols = torch.arange(width, device=device) // patch
    return rows[:, None] * columns + cols[None, :]


def _num_segments(segments: Tensor, num_segments: int | None) -> int:
    if segments.dim() != 2:
        raise ValueError(f"segments must be (H, W), got {tuple(segments.shape)}")
    if segments.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
        raise ValueError(f"segments must hold integer ids, got {segments.dtype}")
    if segments.numel() and int(segments.min()) < 0:
        raise ValueError("segment ids must be non-negative")
    found = int(segments.max()) + 1 if segments.numel() else 0
    if num_segments is None:
        return found
    if num_segments < found:
        raise ValueError(f"num_segments={num_segments} but segments holds id {found - 1}")
    return num_segments


def _segment_order(segments: Tensor, num_segments: int) -> tuple[Tensor, Tensor, Tensor]:
    """Pixels grouped by segment: ``(order (H*W,), bounds (S + 1,), counts (S,))``.

    ``order`` lists the flat pixel indices sorted by segment id (stable); segment ``s`` owns
    ``order[bounds[s]:bounds[s + 1]]``.
    """
    flat = segments.reshape(-1).long()
    counts = torch.bincount(flat, minlength=num_segments)
    order = torch.argsort(flat, stable=True)
    bounds = F.pad(torch.cumsum(counts, 0), (1, 0))
    return order, bounds, counts


def _segment_sums(values: Tensor, order: Tensor, bounds: Tensor) -> Tensor:
    """Per-segment sums ``(..., S)`` float64 of ``values (..., H*W)``.

    A segmented sum by sorting the pixels by segment and differencing a float64 running sum:
    memory linear in the image size whatever the segments' sizes, no atomics, so identical
    inputs give bit-identical sums on any device, and each image is summed on its own (batch
    invariant). The float64 running sum keeps the error near ``1e-16 ×`` the image's total.
    """
    running = F.pad(torch.cumsum(values.double()[..., order], dim=-1), (1, 0))
    return running[..., bounds[1:]] - running[..., bounds[:-1]]


def _float(tensor: Tensor) -> Tensor:
    return tensor if tensor.dtype == torch.float64 else tensor.float()


def segment_attribution(attributions: Tensor, segments: Tensor, num_segments: int | None = None) -> Tensor:
    """Sum of ``|attribution|`` over each segment: ``(N, C, H, W)`` or ``(N, H, W)`` → ``(N, S)``.

    Channels are summed after the absolute value, so a segment's score counts evidence for and
    against the target alike (IMACS scores segments by attribution magnitude). ``S`` is
    ``num_segments`` or ``segments.max() + 1``; an id with no pixels scores 0. The scores of an
    image sum to its total ``|attribution|``. Summed in float64 (see :func:`_segment_sums`) and
    returned in the attributions' float dtype; bit-identical for identical inputs on any device.
    """
    maps = _float(attributions).abs()
    if maps.dim() == 4:
        maps = maps.sum(dim=1)
    if maps.dim() != 3:
        raise ValueError(f"attributions must be (N, C, H, W) or (N, H, W), got {tuple(attributions.shape)}")
    if tuple(maps.shape[1:]) != tuple(segments.shape):
        raise ValueError(f"attributions are {tuple(maps.shape[1:])} but segments are {tuple(segments.shape)}")
    count = _num_segments(segments, num_segments)
    order, bounds, _ = _segment_order(segments.to(maps.device), count)
    return _segment_sums(maps.reshape(maps.shape[0], -1), order, bounds).to(maps.dtype)


def top_segments(scores: Tensor, keep: int) -> Tensor:
    """Ids ``(N, min(keep, S)) long`` of each image's highest-scoring segments, best first.

    Ties go to the lower segment id (a stable sort), so the choice is deterministic.
    """
    if scores.dim() != 2:
        raise ValueError(f"scores must be (N, S), got {tuple(scores.shape)}")
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    keep = min(keep, scores.shape[1])
    return torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :keep]


# --------------------------------------------------------------------------------------------
# Embeddings of kept segments
# --------------------------------------------------------------------------------------------


def _check_indices(indices: Tensor, images: Tensor, num_segments: int) -> Tensor:
    if indices.dim() != 2 or indices.shape[0] != images.shape[0]:
        raise ValueError(f"indices must be (N, M) with N = {images.shape[0]}, got {tuple(indices.shape)}")
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= num_segments):
        raise ValueError(f"segment indices must lie in [0, {num_segments})")
    return indices.to(images.device).long()


def colour_texture_embeddings(images: Tensor, segments: Tensor, indices: Tensor) -> Tensor:
    """A cheap colour/texture descriptor of each kept segment: ``(N * M, 2C + 1)``.

    ``images``: ``(N, C, H, W)``; ``segments``: ``(H, W)``; ``indices``: ``(N, M)`` segment ids.
    Per segment: the mean of each channel over its pixels (``C``), their standard deviation
    (``C``, population, from float64 moments), and the mean gradient magnitude of the channel-mean image (1; central
    differences, replicate padding). Rows are image-major. A segment with no pixels embeds as
    zeros. The descriptor lives on the images' value scale; standardise it first if channels
    differ wildly in range.
    """
    if images.dim() != 4:
        raise ValueError(f"images must be (N, C, H, W), got {tuple(images.shape)}")
    n, c, h, w = images.shape
    if (h, w) != tuple(segments.shape):
        raise ValueError(f"images are {h}x{w} but segments are {tuple(segments.shape)}")
    count = _num_segments(segments, None)
    indices = _check_indices(indices, images, count)
    x = _float(images)
    grey = x.mean(dim=1, keepdim=True)
    padded = F.pad(grey, (1, 1, 1, 1), mode="replicate")
    gx = (padded[:, :, 1:-1, 2:] - padded[:, :, 1:-1, :-2]) / 2
    gy = (padded[:, :, 2:, 1:-1] - padded[:, :, :-2, 1:-1]) / 2
    magnitude = torch.sqrt(gx.square() + gy.square())
    base = torch.cat([x, magnitude], dim=1).reshape(n, c + 1, h * w).double()
    pixels = torch.cat([base[:, :c], base[:, :c].square(), base[:, c:]], dim=1)  # x, x², |∇|
    order, bounds, counts = _segment_order(segments.to(x.device), count)
    means = _segment_sums(pixels, order, bounds) / counts.clamp(min=1)  # (N, 2C+1, S) float64
    m = indices.shape[1]
    kept = means.gather(2, indices[:, None, :].expand(n, 2 * c + 1, m))  # (N, 2C+1, M)
    mean, square, texture = kept[:, :c], kept[:, c : 2 * c], kept[:, 2 * c :]
    std = torch.sqrt((square - mean.square()).clamp(min=0))
    embedding = torch.cat([mean, std, texture], dim=1).to(x.dtype)
    return embedding.permute(0, 2, 1).reshape(n * m, 2 * c + 1)


def _footprint_weights(segments: Tensor, num_segments: int, height: int, width: int) -> Tensor:
    """``(S, h * w)``: the fraction of each segment's pixels that fall in each feature cell.

    A pixel ``(y, x)`` of an ``H × W`` image falls in cell ``(floor((y + ½)·h/H),
    floor((x + ½)·w/W))`` (the pixel-centre, "nearest-exact" mapping).
    """
    big_h, big_w = segments.shape
    device = segments.device
    ys = torch.div((torch.arange(big_h, device=device) * 2 + 1) * height, 2 * big_h, rounding_mode="floor")
    xs = torch.div((torch.arange(big_w, device=device) * 2 + 1) * width, 2 * big_w, rounding_mode="floor")
    cells = ys.clamp(max=height - 1)[:, None] * width + xs.clamp(max=width - 1)[None, :]
    pairs = segments.reshape(-1).long() * (height * width) + cells.reshape(-1)
    weights = torch.bincount(pairs, minlength=num_segments * height * width)
    weights = weights.reshape(num_segments, height * width).float()
    return weights / weights.sum(dim=1, keepdim=True).clamp(min=1)


def activation_embeddings(
    model: nn.Module,
    images: Tensor,
    layer_name: str,
    segments: Tensor,
    indices: Tensor,
    *,
    batch_size: int | None = None,
) -> Tensor:
    """Pooled activations of a named layer over each kept segment: ``(N * M, D)``.

    ``images``: ``(N, C, H, W)`` on the model's device; ``segments``: ``(H, W)``; ``indices``:
    ``(N, M)`` segment ids. A forward hook on ``model.get_submodule(layer_name)`` captures the
    layer's ``(N, D, h, w)`` output (the first element if it returns a tuple; a ``(N, D)`` output
    counts as ``1 × 1``). Each segment's embedding is the average of the feature map over the
    segment's footprint mapped to the feature resolution: exactly the mean, over the segment's
    pixels, of the feature map upsampled to ``H × W`` with nearest-exact interpolation, computed
    without materialising the upsampled map. The model runs under ``torch.no_grad`` in chunks of
    ``batch_size`` images (all at once by default) and is used as given (call ``eval()`` first).
    Rows are image-major.
    """
    if images.dim() != 4:
        raise ValueError(f"images must be (N, C, H, W), got {tuple(images.shape)}")
    if tuple(images.shape[2:]) != tuple(segments.shape):
        raise ValueError(f"images are {tuple(images.shape[2:])} but segments are {tuple(segments.shape)}")
    count = _num_segments(segments, None)
    indices = _check_indices(indices, images, count)
    layer = model.get_submodule(layer_name)
    captured: list[Tensor] = []

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
        if not captured:
            captured.append(output[0] if isinstance(output, (tuple, list)) else output)

    chunk = batch_size or max(images.shape[0], 1)
    outputs: list[Tensor] = []
    weights: Tensor | None = None
    handle = layer.register_forward_hook(hook)
    try:
        with torch.no_grad():
            for part, part_indices in zip(torch.split(images, chunk), torch.split(indices, chunk), strict=True):
                captured.clear()
                model(part)
                if not captured:
                    raise RuntimeError(f"layer {layer_name!r} was not called by the model's forward")
                features = captured[0]
                if features.dim() == 2:
                    features = features[:, :, None, None]
                if features.dim() != 4:
                    raise ValueError(f"layer {layer_name!r} gives {tuple(features.shape)}; need (N, D, h, w) or (N, D)")
                if weights is None:
                    weights = _footprint_weights(
                        segments.to(features.device), count, features.shape[2], features.shape[3]
                    )
                flat = _float(features).flatten(2).transpose(1, 2)  # (n, h*w, D)
                chosen = weights.to(flat.dtype)[part_indices.to(flat.device)]  # (n, M, h*w)
                outputs.append(torch.bmm(chosen, flat).reshape(-1, flat.shape[2]))
    finally:
        handle.remove()
    if not outputs:
        return images.new_zeros(0, 0)
    return torch.cat(outputs).to(images.device)


def activation_embedder(model: nn.Module, layer_name: str, *, batch_size: int | None = None) -> Embedder:
    """An :class:`Embedder` that pools ``layer_name``'s activations of ``model`` per segment."""

    def embed(*, images: Tensor, segments: Tensor, indices: Tensor) -> Tensor:
        return activation_embeddings(model, images, layer_name, segments, indices, batch_size=batch_size)

    return embed


# --------------------------------------------------------------------------------------------
# k-means
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KMeansResult:
    """``centres (k, D)``, ``assignment (P,) long`` (nearest centre of each point), ``inertia``
    (sum of squared distances to the assigned centres) and the Lloyd ``iterations`` run."""

    centres: Tensor
    assignment: Tensor
    inertia: float
    iterations: int


def _distances(points: Tensor, centres: Tensor) -> Tensor:
    # The direct (not matmul-expanded) Euclidean form: exact zeros for coincident points and no
    # negative rounding, so ties and duplicates behave predictably.
    return torch.cdist(points, centres, compute_mode="donot_use_mm_for_euclid_dist")


def assign(points: Tensor, centres: Tensor) -> Tensor:
    """Index ``(P,) long`` of the nearest centre ``(k, D)`` of each point ``(P, D)``; ties go to
    the lower centre index."""
    return _nearest(_float(points), _float(centres).to(points.device))[0]


def _nearest(points: Tensor, centres: Tensor) -> tuple[Tensor, Tensor]:
    distance, index = _distances(points, centres).min(dim=1)
    return index, distance


def _kmeans_plus_plus(points: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """Greedy k-means++ seeding (Arthur & Vassilvitskii 2007, with ``2 + ln k`` candidate draws
    per centre as scikit-learn does). Random draws come from a CPU generator, so a seed gives the
    same draws whatever the points' device."""
    count = points.shape[0]
    trials = 2 + int(math.log(k))
    first = int(torch.randint(count, (1,), generator=generator))
    chosen = [first]
    closest = _distances(points, points[first : first + 1]).squeeze(1).double().square()
    for _ in range(1, k):
        total = float(closest.sum())
        if total > 0:
            draws = torch.rand(trials, generator=generator, dtype=torch.float64) * total
            cumulative = torch.cumsum(closest, 0)
            candidates = torch.searchsorted(cumulative, draws.to(points.device), right=True).clamp(max=count - 1)
        else:  # every point coincides with a centre already: more centres can only duplicate
            candidates = torch.randint(count, (trials,), generator=generator).to(points.device)
        candidate_distance = _distances(points[candidates], points).double().square()  # (t, P)
        improved = torch.minimum(closest[None, :], candidate_distance)
        best = int(improved.sum(dim=1).argmin())
        closest = improved[best]
        chosen.append(int(candidates[best]))
    return points[torch.tensor(chosen, device=points.device)].clone()


def kmeans(
    points: Tensor,
    k: int,
    *,
    seed: int = 0,
    iterations: int = 100,
    tol: float = 1e-6,
    init: Tensor | None = None,
) -> KMeansResult:
    """k-means of ``points (P, D)`` into ``k`` clusters, deterministic for a seed.

    Seeding: greedy k-means++ from a ``torch.Generator`` seeded with ``seed`` on the CPU (or the
    given ``init (k, D)`` centres). Then Lloyd iterations (nearest centre by ``torch.cdist``, mean
    of each cluster by a one-hot matmul, no atomics) until the total squared movement of the
    centres is at most ``tol`` times the points' mean per-feature variance, or ``iterations``.

    Empty clusters: a centre that loses all its points is re-seeded to the point farthest from
    its own centre (the next farthest for a second empty cluster, and so on), which is where the
    current clustering fits worst. With more clusters than distinct points, clusters that can only
    duplicate a point stay empty (count 0): assignment ties go to the lower centre index.
    """
    if points.dim() != 2 or points.shape[0] == 0:
        raise ValueError(f"points must be (P, D) with P >= 1, got {tuple(points.shape)}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    x = _float(points)
    if init is not None:
        if tuple(init.shape) != (k, x.shape[1]):
            raise ValueError(f"init must be ({k}, {x.shape[1]}), got {tuple(init.shape)}")
        centres = init.to(device=x.device, dtype=x.dtype).clone()
    else:
        generator = torch.Generator(device="cpu").manual_seed(seed)
        centres = _kmeans_plus_plus(x, k, generator)
    threshold = tol * float(x.var(dim=0, unbiased=False).mean()) if x.shape[0] > 1 else 0.0
    done = 0
    for _ in range(iterations):
        done += 1
        assignment, distance = _nearest(x, centres)
        one_hot = F.one_hot(assignment, k).to(x.dtype)  # (P, k)
        counts = one_hot.sum(dim=0)
        updated = (one_hot.T @ x) / counts.clamp(min=1)[:, None]
        empty = torch.nonzero(counts == 0).squeeze(1)
        if empty.numel():
            farthest = torch.sort(distance, descending=True, stable=True).indices[: empty.numel()]
            updated[empty] = centres[empty]
            updated[empty[: farthest.numel()]] = x[farthest]
        movement = float((updated - centres).square().sum())
        centres = updated
        if movement <= threshold:
            break
    assignment, distance = _nearest(x, centres)
    return KMeansResult(centres, assignment, float(distance.double().square().sum()), done)


def representatives(points: Tensor, centres: Tensor, n: int, assignment: Tensor | None = None) -> Tensor:
    """The ``n`` members of each cluster closest to its centre: ``(k, n) long`` point indices,
    nearest first, padded with ``-1`` when a cluster has fewer than ``n`` members (ties go to
    the lower point index)."""
    x = _float(points)
    centres = _float(centres).to(x.device)
    if assignment is None:
        assignment = assign(x, centres)
    k = centres.shape[0]
    own = (x - centres[assignment]).norm(dim=1)  # (P,)
    member = assignment[None, :] == torch.arange(k, device=x.device)[:, None]  # (k, P)
    table = torch.where(member, own[None, :], math.inf)
    n = min(n, x.shape[0])
    order = torch.sort(table, dim=1, stable=True).indices[:, :n]
    taken = member.gather(1, order)
    return torch.where(taken, order, -1)


# --------------------------------------------------------------------------------------------
# Per-cluster shift
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterShift:
    """Per-cluster attribution shares under versions A and B (all tensors ``(k,)``, on the CPU).

    ``count``: kept segments in the cluster. ``share_a`` / ``share_b``: the cluster's share of the
    dataset's attribution: the sum, over the cluster's segments, of each segment's fraction of
    its image's total attribution, divided by the number of images (every image weighs the same;
    ``sum(share) <= 1``, the rest lies in segments that were not kept). ``shift = share_b -
    share_a``. ``mean_share_a`` / ``mean_share_b``: the mean per-segment fraction in the cluster
    (NaN for an empty cluster).
    """

    count: Tensor
    share_a: Tensor
    share_b: Tensor
    mean_share_a: Tensor
    mean_share_b: Tensor
    shift: Tensor
    num_images: int

    @property
    def clusters(self) -> int:
        return int(self.count.shape[0])

    @property
    def max_abs_shift(self) -> float:
        """The largest ``|shift|`` over the clusters (0 with no segments)."""
        return float(self.shift.abs().max()) if self.shift.numel() else 0.0

    @property
    def mean_abs_shift(self) -> float:
        """The mean ``|shift|`` over the non-empty clusters (0 with no segments)."""
        filled = self.count > 0
        return float(self.shift[filled].abs().mean()) if bool(filled.any()) else 0.0

    @property
    def max_shift_cluster(self) -> int:
        """The cluster with the largest ``|shift|`` (the lower index on ties)."""
        return int(torch.sort(self.shift.abs(), descending=True, stable=True).indices[0])

    def order(self) -> list[int]:
        """Cluster ids by decreasing ``|shift|`` (lower id first on ties)."""
        return torch.sort(self.shift.abs(), descending=True, stable=True).indices.tolist()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable summary (NaN becomes ``None``)."""
        return {
            "num_images": self.num_images,
            "max_abs_shift": json_number(self.max_abs_shift),
            "mean_abs_shift": json_number(self.mean_abs_shift),
            "clusters": [
                {
                    "cluster": index,
                    "count": int(self.count[index]),
                    "share_a": json_number(float(self.share_a[index])),
                    "share_b": json_number(float(self.share_b[index])),
                    "shift": json_number(float(self.shift[index])),
                    "mean_share_a": json_number(float(self.mean_share_a[index])),
                    "mean_share_b": json_number(float(self.mean_share_b[index])),
                }
                for index in range(self.clusters)
            ],
        }

    def describe(self, top: int | None = None) -> list[str]:
        """One line per non-empty cluster, largest ``|shift|`` first, e.g.
        ``"cluster 3 (n=412): share 0.08 → 0.31 (+0.23)"``."""
        lines = []
        for index in self.order():
            count = int(self.count[index])
            if count == 0:
                continue
            a, b, s = float(self.share_a[index]), float(self.share_b[index]), float(self.shift[index])
            lines.append(f"cluster {index} (n={count}): share {a:.2f} → {b:.2f} ({s:+.2f})")
        return lines if top is None else lines[:top]


def cluster_shift(share_a: Tensor, share_b: Tensor, assignment: Tensor, k: int, *, num_images: int) -> ClusterShift:
    """Aggregate per-segment shares ``(P,)`` by cluster ``assignment (P,)`` into a :class:`ClusterShift`.

    ``share_a[p]`` / ``share_b[p]``: kept segment ``p``'s attribution as a fraction of its
    image's total attribution under version A / B. A cluster's share is ``sum of its segments'
    fractions / num_images`` (the dataset-level share with every image weighing 1); see
    :class:`ClusterShift`.

    Why per image and not pooled mass (``sum of the cluster's segment attributions / sum of all
    images' totals``): attribution magnitudes are not comparable across images or versions
    (Integrated Gradients sums to ``f(x) - f(baseline)``, so an image's total grows with its
    logit margin). Pooled mass lets confident images dominate and moves when a new version is
    merely more confident; normalising each image first measures only *where* each version
    looks. Sums run in float64 through a one-hot matmul, so identical A and B
    give a shift of exactly 0 and the result does not depend on the order of the points.
    """
    if not (share_a.shape == share_b.shape == assignment.shape) or share_a.dim() != 1:
        raise ValueError("share_a, share_b and assignment must all be (P,)")
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    one_hot = F.one_hot(assignment.long(), k).double()  # (P, k)
    count = one_hot.sum(dim=0)
    shares = torch.stack([share_a.double(), share_b.double()], dim=1).to(one_hot.device)
    totals = one_hot.T @ shares  # (k, 2)
    mean = torch.where(count[:, None] > 0, totals / count.clamp(min=1)[:, None], math.nan)
    dataset = totals / num_images
    return ClusterShift(
        count=count.long().cpu(),
        share_a=dataset[:, 0].cpu(),
        share_b=dataset[:, 1].cpu(),
        mean_share_a=mean[:, 0].cpu(),
        mean_share_b=mean[:, 1].cpu(),
        shift=(dataset[:, 1] - dataset[:, 0]).cpu(),
        num_images=num_images,
    )


# --------------------------------------------------------------------------------------------
# Rank correlation
# --------------------------------------------------------------------------------------------


def rank_correlation(maps_a: Tensor, maps_b: Tensor) -> Tensor:
    """Spearman rank correlation per image between ``(N, ...)`` maps (e.g. ``(N, H, W)`` saliency
    maps or ``(N, S)`` segment scores) → ``(N,)`` float64.

    Ties get their average rank (Spearman's usual correction), so the value equals the Pearson
    correlation of the average ranks. An image where either map is constant has no defined
    correlation and gets NaN, to be counted as undefined rather than read as 0.
    """
    if maps_a.shape != maps_b.shape or maps_a.dim() < 2:
        raise ValueError(f"maps must share an (N, ...) shape, got {tuple(maps_a.shape)} and {tuple(maps_b.shape)}")
    ra = average_ranks(maps_a)
    rb = average_ranks(maps_b.to(maps_a.device))
    ra = ra - ra.mean(dim=1, keepdim=True)
    rb = rb - rb.mean(dim=1, keepdim=True)
    denominator = torch.sqrt(ra.square().sum(dim=1) * rb.square().sum(dim=1))
    correlation = (ra * rb).sum(dim=1) / denominator
    return torch.where(denominator > 0, correlation.clamp(-1.0, 1.0), math.nan)


# --------------------------------------------------------------------------------------------
# The whole check
# --------------------------------------------------------------------------------------------


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
    (their shares are 0).
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
    settings: dict[str, Any] = field(default_factory=dict)

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
        """``(image index, segment id)`` of the cluster's representatives, nearest first."""
        chosen = self.representatives[cluster]
        chosen = chosen[chosen >= 0]
        return list(zip(self.point_image[chosen].tolist(), self.point_segment[chosen].tolist(), strict=True))

    def baseline_tensors(self) -> dict[str, Tensor]:
        """What a drift snapshot stores for the reference version: its segment scores and the
        cluster centres (CPU tensors), enough to rerun against a new version with
        ``drift_from_scores(baseline["scores_a"], new_scores, ..., centres=baseline["centres"])``."""
        return {"scores_a": self.scores_a.detach().cpu(), "centres": self.centres.detach().cpu()}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable summary."""
        rho = self.rank_correlation[~torch.isnan(self.rank_correlation)]
        summary = self.shift.to_dict()
        for entry in summary["clusters"]:
            entry["representatives"] = [list(pair) for pair in self.representative_segments(entry["cluster"])]
        summary.update(
            {
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
                "settings": dict(self.settings),
            }
        )
        return summary

    def describe(self, top: int | None = None) -> list[str]:
        """Human-readable lines: clusters by decreasing ``|shift|``, then the rank correlation."""
        lines = self.shift.describe(top)
        rho = self.rank_correlation[~torch.isnan(self.rank_correlation)]
        if rho.numel():
            lines.append(f"segment rank correlation A vs B: mean {float(rho.mean()):.2f}, min {float(rho.min()):.2f}")
        return lines


EmbedSpec: TypeAlias = Callable[..., Tensor] | Tensor | Literal["colour_texture"]
"""How to embed kept segments: a name, an :class:`Embedder`, or ``(N, S, D)`` embeddings."""


def _embed(
    embed: EmbedSpec, images: Tensor | None, segments: Tensor | None, indices: Tensor, num_segments: int
) -> Tensor:
    n, m = indices.shape
    if isinstance(embed, Tensor):
        if embed.dim() != 3 or embed.shape[0] != n or embed.shape[1] != num_segments:
            raise ValueError(
                f"precomputed embeddings must be (N, S, D) = ({n}, {num_segments}, D), got {tuple(embed.shape)}"
            )
        table = embed.to(indices.device)
        return table.gather(1, indices[:, :, None].expand(n, m, table.shape[2])).reshape(n * m, -1)
    if images is None or segments is None:
        raise ValueError("embedding segments needs the images and the segment map")
    if isinstance(embed, str):
        if embed != "colour_texture":
            raise ValueError(f"unknown embedding {embed!r}; give 'colour_texture', a callable or an (N, S, D) tensor")
        return colour_texture_embeddings(images, segments, indices)
    rows = embed(images=images, segments=segments, indices=indices)
    if rows.dim() != 2 or rows.shape[0] != n * m:
        raise ValueError(f"the embedder returned {tuple(rows.shape)}; expected ({n * m}, D)")
    return rows


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
    """Attribution drift from per-segment scores ``(N, S)`` of versions A (reference) and B.

    Kept segments: per image, the ``keep`` best under A together with the ``keep`` best under B
    (``segments_from="union"``, the default: a segment only the new version attends to is still
    counted), or A's only (``"a"``). They are embedded (``embed``: ``"colour_texture"``, an
    :class:`Embedder`, or precomputed ``(N, S, D)`` embeddings of every segment), the k-means
    centres are fitted on the segments kept under A only (or ``centres (k, D)`` from a baseline
    are used as they are), and every kept segment goes to its nearest centre. A segment kept
    only because of B, of a kind A never attends to, lands in its nearest A cluster, whose share
    then rises; the cluster's representatives show what it holds.

    Shares: see :func:`cluster_shift`. Runs on ``scores_a``'s device.
    """
    if scores_a.dim() != 2 or scores_a.shape != scores_b.shape:
        raise ValueError(f"scores must share an (N, S) shape, got {tuple(scores_a.shape)} and {tuple(scores_b.shape)}")
    if segments_from not in ("union", "a"):
        raise ValueError(f"segments_from must be 'union' or 'a', got {segments_from!r}")
    device = scores_a.device
    a = _float(scores_a)
    b = _float(scores_b).to(device)
    n, s = a.shape

    top_a = top_segments(a, keep)
    top_b = top_segments(b, keep)
    mask_a = torch.zeros(n, s, dtype=torch.bool, device=device).scatter_(1, top_a, True)
    mask_b = torch.zeros(n, s, dtype=torch.bool, device=device).scatter_(1, top_b, True)
    candidates = torch.cat([top_a, top_b], dim=1) if segments_from == "union" else top_a
    candidates = torch.sort(candidates, dim=1).values
    valid = torch.ones_like(candidates, dtype=torch.bool)
    valid[:, 1:] = candidates[:, 1:] != candidates[:, :-1]
    point_image = torch.arange(n, device=device)[:, None].expand_as(candidates)[valid]
    point_segment = candidates[valid]

    embedded = _embed(embed, images, segments, candidates, s).to(device)
    embedded = _float(embedded).reshape(n, candidates.shape[1], -1)[valid]  # (P, D)

    in_a = mask_a[point_image, point_segment]
    in_b = mask_b[point_image, point_segment]
    inertia: float | None = None
    if centres is None:
        fitted = kmeans(embedded[in_a], clusters, seed=seed, iterations=iterations, tol=tol)
        centres = fitted.centres
        inertia = fitted.inertia
    else:
        centres = _float(centres).to(device)
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
        settings={
            "keep": keep,
            "clusters": k,
            "seed": seed,
            "segments_from": segments_from,
            "embedding": embed
            if isinstance(embed, str)
            else ("precomputed" if isinstance(embed, Tensor) else "callable"),
        },
    )


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
    grid = {"custom": True} if segments is not None else {"patch": patch}
    if segments is None:
        segments = patch_segments(height, width, patch, device=attr_a.device)
    segments = segments.to(attr_a.device)
    count = _num_segments(segments, None)
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
