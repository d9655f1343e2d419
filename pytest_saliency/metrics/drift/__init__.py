"""Attribution drift between two model versions, summarised by clusters of salient segments.

Follows IMACS (Schoop et al., "IMACS: Image Model Attribution Comparison Summaries", Google,
2022; docs/methods.md#attribution-drift-imacs): attribute both versions on the same inputs, cut
every image into segments, keep each image's most salient segments, embed the kept segments,
cluster the embeddings, and report per cluster how much of the attribution each version puts
there. A cluster whose share moves is a kind of input feature the two versions treat differently.

The paper's code is not public, so **every stage's default here is this project's choice**, and
every stage is a separate function that can be swapped. The stages, by where they run:

* per image (:mod:`.segments`; a drift check runs these per shard): a fixed ``patch × patch``
  grid of segments (:func:`patch_segments`; any ``(H, W)`` map of segment ids works in its
  place); a segment's score, the sum of ``|attribution|`` over its pixels and channels
  (:func:`segment_attribution`); the kept segments, the ``keep`` best of each image under A
  **and** under B (:func:`kept_segments`); their embeddings, a colour/texture descriptor
  (:func:`colour_texture_embeddings`) or pooled activations of a named layer
  (:func:`activation_embeddings`); the per-image Spearman correlation (:func:`rank_correlation`);
* over all images (:mod:`.clusters`): k-means with greedy k-means++ seeding (:func:`kmeans`),
  fitted on the segments kept under the *reference* version A only, so the centres can be stored
  in a snapshot and reused; representatives; the per-cluster shift of attribution share, every
  image weighing the same (:func:`cluster_shift`);
* the merge (:mod:`.result`): :func:`drift_from_kept` from every image's kept segments and their
  embeddings; :func:`drift_from_scores` and :func:`attribution_drift` on tensors held at once.

Everything is batched tensor code on the inputs' device: no loop over pixels or images (the only
loops are over k-means iterations, k-means++ centres and model forward chunks).
"""

from __future__ import annotations

from .clusters import ClusterShift, KMeansResult, assign, cluster_shift, kmeans, representatives
from .result import DriftResult, EmbedSpec, attribution_drift, drift_from_kept, drift_from_scores, embed_segments
from .segments import (
    Embedder,
    activation_embedder,
    activation_embeddings,
    colour_texture_embeddings,
    first_occurrences,
    kept_segments,
    patch_segments,
    rank_correlation,
    segment_attribution,
    top_segments,
)

__all__ = [
    "ClusterShift",
    "DriftResult",
    "EmbedSpec",
    "Embedder",
    "KMeansResult",
    "activation_embedder",
    "activation_embeddings",
    "assign",
    "attribution_drift",
    "cluster_shift",
    "colour_texture_embeddings",
    "drift_from_kept",
    "drift_from_scores",
    "embed_segments",
    "first_occurrences",
    "kept_segments",
    "kmeans",
    "patch_segments",
    "rank_correlation",
    "representatives",
    "segment_attribution",
    "top_segments",
]
