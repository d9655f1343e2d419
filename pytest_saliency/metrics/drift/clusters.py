"""The merged stages of attribution drift (IMACS; docs/methods.md#attribution-drift-imacs): k-means
over the kept segments' embeddings, each cluster's representatives, and the per-cluster shift of
attribution share between two versions.

These need every image's kept segments at once: a drift check runs them after the shards merge.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from ..._io import json_number
from .segments import as_float

if TYPE_CHECKING:
    from ...report.results import ShiftSummary

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
    return _nearest(as_float(points), as_float(centres).to(points.device))[0]


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
    x = as_float(points)
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
    x = as_float(points)
    centres = as_float(centres).to(x.device)
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

    def to_dict(self) -> ShiftSummary:
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
