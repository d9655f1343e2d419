"""Attribution drift (IMACS-style): segments, embeddings, k-means, cluster shares, rank correlation."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from pytest_saliency.metrics.drift import (
    DriftResult,
    activation_embedder,
    activation_embeddings,
    assign,
    attribution_drift,
    cluster_shift,
    colour_texture_embeddings,
    drift_from_kept,
    drift_from_scores,
    embed_segments,
    first_occurrences,
    kept_segments,
    kmeans,
    patch_segments,
    rank_correlation,
    representatives,
    segment_attribution,
    top_segments,
)
from pytest_saliency.metrics.sanity import spearman

# --------------------------------------------------------------------------------------------
# Synthetic data: grey textured backgrounds, one blue "object" patch and one red "decoy" patch
# --------------------------------------------------------------------------------------------

SIZE, PATCH = 32, 8
GRID = (SIZE // PATCH) ** 2
BLUE = torch.tensor([0.1, 0.1, 0.9])
RED = torch.tensor([0.9, 0.1, 0.1])


def make_scene(n: int = 24, seed: int = 0):
    """Images (N, 3, 32, 32) with the object and decoy at random grid cells, their positions."""
    g = torch.Generator().manual_seed(seed)
    images = (0.5 + 0.1 * torch.randn(n, 3, SIZE, SIZE, generator=g)).clamp(0, 1)
    cells = torch.rand(n, GRID, generator=g).argsort(dim=1)
    obj, decoy = cells[:, 0], cells[:, 1]
    segments = patch_segments(SIZE, SIZE, PATCH)
    at_obj = segments[None] == obj[:, None, None]
    at_decoy = segments[None] == decoy[:, None, None]
    images = torch.where(at_obj[:, None], BLUE[None, :, None, None], images)
    images = torch.where(at_decoy[:, None], RED[None, :, None, None], images)
    return images, segments, obj, decoy


def attribution_maps(segments, obj, decoy, *, obj_level, decoy_level, background, seed):
    """(N, H, W) maps: a level per segment (object, decoy, background ~ U(0, 2·background))."""
    n = obj.shape[0]
    g = torch.Generator().manual_seed(seed)
    levels = 2 * background * torch.rand(n, GRID, generator=g)
    rows = torch.arange(n)
    levels[rows, obj] = obj_level
    if decoy_level is not None:
        levels[rows, decoy] = decoy_level
    return levels[:, segments] * (1 + 0.05 * torch.rand(n, SIZE, SIZE, generator=g))


# --------------------------------------------------------------------------------------------
# Segments
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("height,width,patch", [(32, 32, 8), (10, 13, 4), (7, 5, 3), (5, 5, 8), (6, 9, 1)])
def test_patch_segments_cover_the_image(height, width, patch):
    seg = patch_segments(height, width, patch)
    assert seg.shape == (height, width) and seg.dtype == torch.long
    count = math.ceil(height / patch) * math.ceil(width / patch)
    assert torch.equal(torch.unique(seg), torch.arange(count))
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    assert torch.equal(seg, (ys // patch) * math.ceil(width / patch) + xs // patch)
    sizes = torch.bincount(seg.flatten())
    assert int(sizes.max()) <= patch * patch and int(sizes.sum()) == height * width


def test_segment_attribution_sums_to_total_attribution():
    g = torch.Generator().manual_seed(1)
    attr = torch.randn(5, 3, 10, 13, generator=g)
    seg = patch_segments(10, 13, 4)
    scores = segment_attribution(attr, seg)
    assert scores.shape == (5, 12)
    torch.testing.assert_close(scores.sum(dim=1), attr.abs().sum(dim=(1, 2, 3)))
    for s in range(12):  # brute force, segment by segment
        torch.testing.assert_close(scores[:, s], (attr.abs().sum(1) * (seg == s)).sum(dim=(1, 2)))
    torch.testing.assert_close(segment_attribution(attr.abs().sum(1), seg), scores)  # (N, H, W) input


def test_segment_attribution_arbitrary_segments_and_missing_ids():
    g = torch.Generator().manual_seed(2)
    seg = torch.randint(0, 5, (9, 7), generator=g) * 2  # odd ids absent
    attr = torch.rand(4, 9, 7, generator=g)
    scores = segment_attribution(attr, seg, num_segments=12)
    assert scores.shape == (4, 12)
    assert torch.all(scores[:, 1::2] == 0)
    torch.testing.assert_close(scores.sum(1), attr.sum(dim=(1, 2)))


def test_segment_attribution_is_batch_invariant_and_deterministic():
    g = torch.Generator().manual_seed(3)
    attr = torch.randn(9, 3, 16, 16, generator=g)
    seg = patch_segments(16, 16, 5)
    whole = segment_attribution(attr, seg)
    parts = torch.cat([segment_attribution(chunk, seg) for chunk in attr.split(4)])
    torch.testing.assert_close(parts, whole, rtol=0, atol=1e-5)
    assert torch.equal(segment_attribution(attr.clone(), seg), whole)


def test_top_segments_best_first_ties_to_lower_id():
    scores = torch.tensor([[0.1, 0.5, 0.5, 0.2, 0.5], [3.0, 1.0, 2.0, 2.0, 0.0]])
    assert top_segments(scores, 3).tolist() == [[1, 2, 4], [0, 2, 3]]
    assert top_segments(scores, 10).shape == (2, 5)
    with pytest.raises(ValueError):
        top_segments(scores, 0)


# --------------------------------------------------------------------------------------------
# Embeddings
# --------------------------------------------------------------------------------------------


def test_colour_texture_embeddings_match_brute_force():
    g = torch.Generator().manual_seed(4)
    images = torch.rand(3, 3, 11, 9, generator=g)
    seg = patch_segments(11, 9, 4)
    indices = torch.tensor([[0, 5], [2, 2], [3, 1]])
    rows = colour_texture_embeddings(images, seg, indices)
    assert rows.shape == (6, 7)
    grey = images.mean(1, keepdim=True)
    padded = F.pad(grey, (1, 1, 1, 1), mode="replicate")
    gx = (padded[..., 1:-1, 2:] - padded[..., 1:-1, :-2]) / 2
    gy = (padded[..., 2:, 1:-1] - padded[..., :-2, 1:-1]) / 2
    magnitude = (gx**2 + gy**2).sqrt()[:, 0]
    for i in range(3):
        for j in range(2):
            mask = seg == indices[i, j]
            pixels = images[i][:, mask]
            expected = torch.cat([pixels.mean(1), pixels.std(1, unbiased=False), magnitude[i][mask].mean()[None]])
            torch.testing.assert_close(rows[i * 2 + j], expected)


def test_colour_texture_of_a_flat_patch_and_of_uneven_segments():
    images = torch.full((2, 3, 12, 12), 0.7)
    seg = torch.zeros(12, 12, dtype=torch.long)
    seg[0, 0], seg[5:7, 5:7] = 1, 2  # one giant segment, a single pixel, a 2x2 block
    rows = colour_texture_embeddings(images, seg, torch.tensor([[0, 1, 2], [2, 1, 0]]))
    assert rows.shape == (6, 7)
    torch.testing.assert_close(rows[:, :3], torch.full((6, 3), 0.7))
    assert float(rows[:, 3:].abs().max()) < 1e-6  # no colour spread, no gradient
    attr = torch.rand(2, 12, 12)
    scores = segment_attribution(attr, seg)
    torch.testing.assert_close(scores[:, 1], attr[:, 0, 0])
    torch.testing.assert_close(scores.sum(1), attr.sum(dim=(1, 2)))


def test_colour_texture_embeddings_batch_invariant():
    g = torch.Generator().manual_seed(5)
    images = torch.rand(7, 3, 16, 16, generator=g)
    seg = patch_segments(16, 16, 4)
    indices = torch.randint(0, 16, (7, 3), generator=g)
    whole = colour_texture_embeddings(images, seg, indices)
    parts = torch.cat(
        [colour_texture_embeddings(a, seg, b) for a, b in zip(images.split(3), indices.split(3), strict=True)]
    )
    torch.testing.assert_close(parts, whole)


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 5, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(5, 6, 3, stride=2))
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        return self.head(self.features(x).mean(dim=(2, 3)))


def test_activation_embeddings_average_the_segment_footprint():
    torch.manual_seed(0)
    model = TinyNet().eval()
    g = torch.Generator().manual_seed(6)
    images = torch.rand(4, 3, 19, 15, generator=g)
    seg = patch_segments(19, 15, 4)
    indices = torch.tensor([[0, 7], [3, 19], [11, 11], [5, 1]])
    rows = activation_embeddings(model, images, "features", seg, indices)
    with torch.no_grad():
        features = model.features(images)  # (4, 6, 4, 3)
    up = F.interpolate(features, size=(19, 15), mode="nearest-exact")
    assert rows.shape == (8, 6)
    for i in range(4):
        for j in range(2):
            mask = seg == indices[i, j]
            torch.testing.assert_close(rows[i * 2 + j], up[i][:, mask].mean(1))
    chunked = activation_embeddings(model, images, "features", seg, indices, batch_size=3)
    torch.testing.assert_close(chunked, rows)
    assert not model.features._forward_hooks  # the hook is removed
    embed = activation_embedder(model, "features.2", batch_size=2)
    torch.testing.assert_close(embed(images=images, segments=seg, indices=indices), rows)


# --------------------------------------------------------------------------------------------
# k-means
# --------------------------------------------------------------------------------------------


def blobs(seed: int = 0, per: int = 40):
    g = torch.Generator().manual_seed(seed)
    means = torch.tensor([[0.0, 0.0, 0.0], [10.0, 0.0, 5.0], [0.0, 12.0, -6.0], [-9.0, -9.0, 9.0]])
    labels = torch.arange(4).repeat_interleave(per)
    points = means[labels] + 0.5 * torch.randn(len(labels), 3, generator=g)
    order = torch.randperm(len(labels), generator=g)
    return points[order], labels[order]


def test_kmeans_is_deterministic_for_a_seed():
    points, _ = blobs(1)
    first = kmeans(points, 4, seed=7)
    second = kmeans(points.clone(), 4, seed=7)
    assert torch.equal(first.centres, second.centres)
    assert torch.equal(first.assignment, second.assignment)
    assert first.inertia == second.inertia


def test_kmeans_recovers_well_separated_blobs():
    points, labels = blobs(2)
    for seed in range(3):
        result = kmeans(points, 4, seed=seed)
        pairs = torch.unique(torch.stack([labels, result.assignment], 1), dim=0)
        assert pairs.shape[0] == 4  # one cluster per blob, one blob per cluster
        assert torch.equal(assign(points, result.centres), result.assignment)
        assert result.inertia < 4 * 40 * 3 * 0.5**2 * 1.5


def test_kmeans_more_clusters_than_distinct_points():
    points = torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.0, 0.0], [1.0, 1.0], [5.0, 5.0]])
    result = kmeans(points, 5, seed=0)
    assert result.centres.shape == (5, 2) and torch.isfinite(result.centres).all()
    assert result.inertia == 0.0
    a = result.assignment
    assert a[0] == a[2] and a[1] == a[3] and len({int(a[0]), int(a[1]), int(a[4])}) == 3
    tiny = kmeans(torch.zeros(2, 3), 4)
    assert tiny.inertia == 0.0 and torch.equal(tiny.assignment, torch.zeros(2, dtype=torch.long))


def test_kmeans_reseeds_an_empty_cluster_to_the_farthest_point():
    points, labels = blobs(3)
    two = points[labels < 2]
    init = torch.tensor([[5.0, 0.0, 2.5], [1000.0, 1000.0, 1000.0]])  # the second centre wins nothing
    result = kmeans(two, 2, init=init)
    counts = torch.bincount(result.assignment, minlength=2)
    assert bool((counts > 0).all())
    assert torch.unique(torch.stack([labels[labels < 2], result.assignment], 1), dim=0).shape[0] == 2


def test_representatives_are_the_nearest_members():
    points, _ = blobs(4, per=5)
    result = kmeans(points, 4, seed=0)
    reps = representatives(points, result.centres, 7, result.assignment)
    assert reps.shape == (4, 7)
    for c in range(4):
        members = torch.nonzero(result.assignment == c).squeeze(1)
        distance = (points[members] - result.centres[c]).norm(dim=1)
        expected = members[torch.sort(distance, stable=True).indices].tolist()
        chosen = reps[c][reps[c] >= 0].tolist()
        assert chosen == expected[:7] and (reps[c] == -1).sum() == 7 - min(7, len(expected))


# --------------------------------------------------------------------------------------------
# Cluster shift
# --------------------------------------------------------------------------------------------


def test_cluster_shift_by_hand():
    share_a = torch.tensor([0.5, 0.25, 0.125, 0.125])
    share_b = torch.tensor([0.25, 0.25, 0.5, 0.0])
    assignment = torch.tensor([0, 0, 1, 1])
    shift = cluster_shift(share_a, share_b, assignment, 3, num_images=2)
    assert shift.count.tolist() == [2, 2, 0]
    assert shift.share_a.tolist() == [0.375, 0.125, 0.0]
    assert shift.share_b.tolist() == [0.25, 0.25, 0.0]
    assert shift.shift.tolist() == [-0.125, 0.125, 0.0]
    assert shift.mean_share_a[0] == 0.375 and math.isnan(float(shift.mean_share_a[2]))
    assert shift.max_abs_shift == 0.125 and shift.mean_abs_shift == 0.125
    assert shift.describe() == [
        "cluster 0 (n=2): share 0.38 → 0.25 (-0.12)",
        "cluster 1 (n=2): share 0.12 → 0.25 (+0.12)",
    ]
    data = json.loads(json.dumps(shift.to_dict(), allow_nan=False))
    assert data["clusters"][2]["mean_share_a"] is None and data["max_abs_shift"] == 0.125


def test_cluster_shift_is_order_invariant():
    g = torch.Generator().manual_seed(8)
    share_a, share_b = torch.rand(50, generator=g), torch.rand(50, generator=g)
    assignment = torch.randint(0, 5, (50,), generator=g)
    perm = torch.randperm(50, generator=g)
    one = cluster_shift(share_a, share_b, assignment, 5, num_images=10)
    two = cluster_shift(share_a[perm], share_b[perm], assignment[perm], 5, num_images=10)
    torch.testing.assert_close(one.shift, two.shift, rtol=0, atol=1e-12)
    assert torch.equal(one.count, two.count)


# --------------------------------------------------------------------------------------------
# The whole drift check
# --------------------------------------------------------------------------------------------


def test_drift_against_itself_is_exactly_zero():
    images, seg, obj, decoy = make_scene()
    attr = attribution_maps(seg, obj, decoy, obj_level=1.0, decoy_level=0.3, background=0.1, seed=1)
    attr = attr[:, None].expand(-1, 3, -1, -1) * torch.rand(3)[None, :, None, None]
    result = attribution_drift(attr, attr.clone(), images, patch=PATCH, keep=3, clusters=4)
    assert isinstance(result, DriftResult)
    assert torch.all(result.shift.shift == 0)
    assert result.max_abs_shift == 0.0 and result.mean_abs_shift == 0.0
    assert torch.equal(result.shift.share_a, result.shift.share_b)
    assert torch.all(result.rank_correlation == 1)
    assert bool(result.salient_in_a.all()) and torch.equal(result.salient_in_a, result.salient_in_b)
    assert int(result.shift.count.sum()) == 24 * 3


@pytest.mark.parametrize("a_sees_decoy", [True, False])
def test_drift_onto_a_decoy_colour_is_the_largest_rising_cluster(a_sees_decoy):
    images, seg, obj, decoy = make_scene()
    attr_a = attribution_maps(
        seg, obj, decoy, obj_level=1.0, decoy_level=0.3 if a_sees_decoy else None, background=0.1, seed=1
    )
    attr_b = attribution_maps(seg, obj, decoy, obj_level=0.6, decoy_level=1.5, background=0.05, seed=2)
    result = attribution_drift(attr_a, attr_b, images, patch=PATCH, keep=2, clusters=2, seed=0)
    is_decoy = result.point_segment == decoy[result.point_image]
    is_object = result.point_segment == obj[result.point_image]
    assert int(is_decoy.sum()) == 24  # every decoy is kept (salient under B)
    decoy_cluster = int(torch.mode(result.assignment[is_decoy]).values)
    object_cluster = int(torch.mode(result.assignment[is_object]).values)
    assert bool((result.assignment[is_decoy] == decoy_cluster).all())
    assert decoy_cluster != object_cluster
    shift = result.shift.shift
    assert int(shift.argmax()) == decoy_cluster and float(shift[decoy_cluster]) > 0.3
    assert result.shift.max_shift_cluster == decoy_cluster
    assert float(shift[object_cluster]) < 0
    assert result.describe()[0].startswith(f"cluster {decoy_cluster} (n=")
    if not a_sees_decoy:  # the decoys were kept only because of B
        assert not bool(result.salient_in_a[is_decoy].any()) and bool(result.salient_in_b[is_decoy].all())
    assert float(result.rank_correlation.mean()) < 1
    json.dumps(result.to_dict(), allow_nan=False)


def test_drift_with_reference_centres_is_order_and_batch_invariant():
    images, seg, obj, decoy = make_scene(n=20)
    attr_a = attribution_maps(seg, obj, decoy, obj_level=1.0, decoy_level=0.3, background=0.1, seed=1)
    attr_b = attribution_maps(seg, obj, decoy, obj_level=0.6, decoy_level=1.5, background=0.05, seed=2)
    reference = attribution_drift(attr_a, attr_b, images, keep=3, clusters=3)
    centres = reference.centres

    perm = torch.randperm(20, generator=torch.Generator().manual_seed(0))
    permuted = attribution_drift(attr_a[perm], attr_b[perm], images[perm], keep=3, centres=centres)
    torch.testing.assert_close(permuted.shift.shift, reference.shift.shift, rtol=0, atol=1e-12)
    assert torch.equal(permuted.shift.count, reference.shift.count)
    torch.testing.assert_close(permuted.rank_correlation, reference.rank_correlation[perm])

    # halves combine into the whole: every image weighs 1/N
    halves = [
        attribution_drift(attr_a[s], attr_b[s], images[s], keep=3, centres=centres) for s in (slice(0, 7), slice(7, 20))
    ]
    combined = (7 * halves[0].shift.shift + 13 * halves[1].shift.shift) / 20
    torch.testing.assert_close(combined, reference.shift.shift, rtol=0, atol=1e-12)
    assert torch.equal(halves[0].shift.count + halves[1].shift.count, reference.shift.count)


def test_kept_segments_of_parts_merge_into_the_whole_drift():
    """What a shard computes per image (kept segments, their embeddings) gives, merged, the
    drift of the whole data set to the last bit."""
    images, seg, obj, decoy = make_scene(n=20)
    attr_a = attribution_maps(seg, obj, decoy, obj_level=1.0, decoy_level=0.3, background=0.1, seed=1)
    attr_b = attribution_maps(seg, obj, decoy, obj_level=0.6, decoy_level=1.5, background=0.05, seed=2)
    scores_a, scores_b = segment_attribution(attr_a, seg), segment_attribution(attr_b, seg)
    whole = drift_from_scores(scores_a, scores_b, images, seg, keep=3, clusters=3)
    parts = (slice(0, 1), slice(1, 8), slice(8, 20))
    kept = torch.cat([kept_segments(scores_a[p], scores_b[p], 3) for p in parts])
    embedded = torch.cat([embed_segments("colour_texture", images[p], seg, kept[p], GRID) for p in parts])
    assert kept.shape == (20, 6) and embedded.shape == (20, 6, 7)
    merged = drift_from_kept(
        scores_a, scores_b, kept, embedded, keep=3, clusters=3, sample_index=torch.arange(20) + 100
    )
    assert torch.equal(merged.shift.shift, whole.shift.shift) and torch.equal(merged.centres, whole.centres)
    assert torch.equal(merged.assignment, whole.assignment)
    for cluster in range(3):
        assert merged.representative_segments(cluster) == [
            (100 + image, segment) for image, segment in whole.representative_segments(cluster)
        ]


def test_kept_segments_union_and_first_occurrences():
    scores_a = torch.tensor([[4.0, 3.0, 2.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    scores_b = torch.tensor([[1.0, 3.0, 2.0, 4.0], [1.0, 1.0, 1.0, 1.0]])
    kept = kept_segments(scores_a, scores_b, 2)
    assert kept.tolist() == [[0, 1, 1, 3], [0, 0, 1, 1]]  # sorted ids; ties to the lower id
    assert first_occurrences(kept).tolist() == [[True, True, False, True], [True, False, True, False]]
    assert kept_segments(scores_a, scores_b, 2, "a").tolist() == [[0, 1], [0, 1]]
    with pytest.raises(ValueError):
        kept_segments(scores_a, scores_b[:, :3], 2)


def test_drift_embedding_choices_and_stored_centres():
    images, seg, obj, decoy = make_scene(n=10)
    attr_a = attribution_maps(seg, obj, decoy, obj_level=1.0, decoy_level=0.3, background=0.1, seed=1)
    attr_b = attribution_maps(seg, obj, decoy, obj_level=0.6, decoy_level=1.5, background=0.05, seed=2)
    torch.manual_seed(0)
    model = TinyNet().eval()
    by_layer = attribution_drift(
        attr_a, attr_b, images, keep=2, clusters=3, embed=activation_embedder(model, "features")
    )
    assert by_layer.centres.shape == (3, 6) and by_layer.settings["embedding"] == "callable"

    every = torch.arange(GRID, dtype=torch.long).expand(10, -1)
    table = colour_texture_embeddings(images, seg, every).reshape(10, GRID, -1)
    precomputed = attribution_drift(attr_a, attr_b, None, keep=2, clusters=3, embed=table)
    default = attribution_drift(attr_a, attr_b, images, keep=2, clusters=3)
    torch.testing.assert_close(precomputed.shift.shift, default.shift.shift)

    only_a = attribution_drift(attr_a, attr_b, images, keep=2, clusters=3, segments_from="a")
    assert bool(only_a.salient_in_a.all()) and only_a.assignment.shape == (20,)

    stored = default.baseline_tensors()
    again = drift_from_scores(stored["scores_a"], default.scores_b, images, seg, keep=2, centres=stored["centres"])
    assert torch.equal(again.shift.shift, default.shift.shift) and again.inertia is None
    assert default.settings["segments"] == {"patch": 8} and default.settings["keep"] == 2


def test_drift_rejects_bad_inputs():
    images, seg, obj, decoy = make_scene(n=4)
    attr = attribution_maps(seg, obj, decoy, obj_level=1.0, decoy_level=0.3, background=0.1, seed=1)
    with pytest.raises(ValueError):
        attribution_drift(attr, attr[:, :16], images)
    with pytest.raises(ValueError):
        attribution_drift(attr, attr, images, centres=torch.zeros(3, 4))
    with pytest.raises(ValueError):
        attribution_drift(attr, attr, None)
    with pytest.raises(ValueError):
        attribution_drift(attr, attr, images, embed="nope")


def test_drift_counts_images_without_attribution():
    images, seg, obj, decoy = make_scene(n=6)
    attr = attribution_maps(seg, obj, decoy, obj_level=1.0, decoy_level=0.3, background=0.1, seed=1)
    attr_b = attr.clone()
    attr_b[2] = 0
    result = attribution_drift(attr, attr_b, images, keep=2, clusters=2)
    assert result.undefined_a == 0 and result.undefined_b == 1
    assert bool((result.share_b[result.point_image == 2] == 0).all())
    assert math.isnan(float(result.rank_correlation[2]))
    assert result.to_dict()["rank_correlation"]["undefined"] == 1


# --------------------------------------------------------------------------------------------
# Rank correlation
# --------------------------------------------------------------------------------------------


def test_rank_correlation_identical_and_reversed():
    g = torch.Generator().manual_seed(9)
    maps = torch.rand(6, 12, 12, generator=g)
    torch.testing.assert_close(rank_correlation(maps, maps), torch.ones(6, dtype=torch.float64))
    torch.testing.assert_close(rank_correlation(maps, -maps), -torch.ones(6, dtype=torch.float64))
    ties = torch.tensor([[1.0, 2.0, 2.0, 3.0, 3.0, 3.0]])
    torch.testing.assert_close(rank_correlation(ties, -ties), -torch.ones(1, dtype=torch.float64))


def test_rank_correlation_matches_scipy_with_ties():
    stats = pytest.importorskip("scipy.stats")
    g = torch.Generator().manual_seed(10)
    a = torch.randint(0, 4, (5, 30), generator=g).float()
    b = a + torch.randint(0, 3, (5, 30), generator=g).float()
    rho = rank_correlation(a, b)
    for i in range(5):
        assert float(rho[i]) == pytest.approx(stats.spearmanr(a[i].numpy(), b[i].numpy()).statistic, abs=1e-12)


def test_rank_correlation_constant_map_is_undefined_and_batch_invariant():
    g = torch.Generator().manual_seed(11)
    a, b = torch.rand(7, 5, 5, generator=g), torch.rand(7, 5, 5, generator=g)
    a[3] = 0.5
    rho = rank_correlation(a, b)
    assert math.isnan(float(rho[3])) and torch.isfinite(rho[torch.arange(7) != 3]).all()
    parts = torch.cat([rank_correlation(x, y) for x, y in zip(a.split(2), b.split(2), strict=True)])
    torch.testing.assert_close(parts, rho, equal_nan=True, rtol=0, atol=1e-12)


MONOTONE = {
    "affine": lambda x: 3 * x + 7,
    "cube": lambda x: x**3,
    "exp": torch.exp,
    "shifted-log": lambda x: torch.log(x + 100),
}


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(1, 3),
    data=st.data(),
    transform=st.sampled_from(sorted(MONOTONE)),
)
def test_rank_correlation_invariant_to_monotone_transforms(rows, data, transform):
    length = data.draw(st.integers(2, 25))
    values = st.lists(st.integers(-6, 6), min_size=rows * length, max_size=rows * length)
    a = torch.tensor(data.draw(values), dtype=torch.float64).reshape(rows, length)
    b = torch.tensor(data.draw(values), dtype=torch.float64).reshape(rows, length)
    f = MONOTONE[transform]
    rho = rank_correlation(a, b)
    torch.testing.assert_close(rank_correlation(f(a), b), rho, equal_nan=True, rtol=0, atol=1e-12)
    torch.testing.assert_close(rank_correlation(a, f(b)), rho, equal_nan=True, rtol=0, atol=1e-12)
    defined = ~torch.isnan(rho)
    torch.testing.assert_close(rank_correlation(a, a)[defined], torch.ones(int(defined.sum()), dtype=torch.float64))


def test_shift_intervals_bootstrap_the_images():
    """Each image's per-cluster contributions average to the shifts; the bootstrap bounds hold
    the measured shifts' range and are [0, 0] for a version against itself
    (docs/methods.md, "Intervals and decisions")."""
    images, seg, obj, decoy = make_scene(n=12)
    attr_a = attribution_maps(seg, obj, decoy, obj_level=1.0, decoy_level=0.3, background=0.1, seed=1)
    attr_b = attribution_maps(seg, obj, decoy, obj_level=0.6, decoy_level=1.5, background=0.05, seed=2)
    result = attribution_drift(attr_a, attr_b, images, keep=2, clusters=3)
    torch.testing.assert_close(result.image_shifts().mean(dim=0), result.shift.shift.double(), rtol=0, atol=1e-12)
    bounds = result.shift_intervals(generator=torch.Generator().manual_seed(0), resamples=400)
    low, high = bounds["max_abs_shift"]
    assert 0 <= low <= high and low <= result.max_abs_shift + 1e-12
    again = result.shift_intervals(generator=torch.Generator().manual_seed(0), resamples=400)
    assert again == bounds  # seeded
    same = attribution_drift(attr_a, attr_a, images, keep=2, clusters=3)
    assert same.shift_intervals(generator=torch.Generator().manual_seed(0)) == {
        "max_abs_shift": (0.0, 0.0),
        "mean_abs_shift": (0.0, 0.0),
    }


def test_rank_correlation_is_spearmans_with_tie_averaged_ranks() -> None:
    generator = torch.Generator().manual_seed(9)
    a = (torch.rand(5, 6, 7, generator=generator) * 4).round()  # many ties
    b = (torch.rand(5, 6, 7, generator=generator) * 3).round()
    torch.testing.assert_close(rank_correlation(a, b), spearman(a, b), rtol=0, atol=1e-12)
