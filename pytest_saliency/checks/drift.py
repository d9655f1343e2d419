"""``drift`` checks: attribution drift between two model versions, by clusters of salient segments.

IMACS (Schoop et al., "IMACS: Image Model Attribution Comparison Summaries", Google, 2022;
docs/methods.md#attribution-drift-imacs), with the stages of :mod:`pytest_saliency.metrics.drift`. Per attribution
method, version **A** is the reference (``against``: other weights, a whole other model, or a
stored snapshot) and version **B** the spec's own model, the version under test:

1. both versions attribute the same images for the same targets (the spec's ``target``);
2. each image is cut into ``patch × patch`` segments, a segment scores its summed
   ``|attribution|``, and each image keeps its ``keep`` best segments under A and under B;
3. the kept segments are embedded by one fixed embedder (below) and clustered by k-means fitted
   on A's kept segments (seeded with the spec's ``seed``, on the engine's device);
4. per cluster, the share of each image's attribution under A and under B (every image weighs
   the same): ``max_shift`` bounds the largest ``|share_B - share_A|``, ``mean_shift`` the mean
   over non-empty clusters, ``min_rank_correlation`` the mean per-image Spearman correlation of
   the segment scores.

Steps 1-2 and the embeddings run per shard (:func:`statistics`: each image's segment scores, kept
segments and their embeddings, which segments lie on each mask); k-means and the shares run on
the merged rows (:func:`decide`).

Embedding (this project's choice): ``activations`` pools a layer of the **reference** model over
each segment (default: its last ``Conv2d``), so A's and B's segments are described in one
feature space; ``colour_texture`` is a descriptor of the pixels alone.

Stored snapshots: the reference model is not available when comparing with a snapshot, so the
snapshot (:mod:`pytest_saliency.baselines.drift`) stores, beside A's segment scores and the
k-means centres, what the embedder needs; comparing with a snapshot then uses exactly the
embedder a comparison with the weights would use. Which segments are kept depends on A's scores,
which only the snapshot holds (read in :func:`decide`: a shard does not know where the run keeps
its snapshots), so against a snapshot a shard gives every segment's colour/texture embedding,
and with ``activations`` none (the snapshot's table embeds every segment).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from ..baselines.reference import drift_reference, obtained_summary, sample_digests
from ..errors import (
    Location,
    SpecRuntimeError,
    did_you_mean,
    first_line,
)
from ..loaders.models import ModelUnderTest
from ..metrics.drift import (
    DriftResult,
    Embedder,
    activation_embedder,
    colour_texture_embeddings,
    drift_from_kept,
    drift_from_scores,
    embed_segments,
    kept_segments,
    patch_segments,
    segment_attribution,
)
from ..report.results import BaselineEntry, DriftRegion, DriftSettings, EmbeddingSettings, OutcomeExtra
from ..spec.schema import DriftCheck, Threshold
from ..streaming import Shard
from ..targets import ScoreModel
from .aggregation import measure
from .kind import CheckKind
from .outcome import Measurement, Outcome
from .request import CheckRequest, config_location

if TYPE_CHECKING:
    from ..engine import SpecEngine

CLUSTERS_SHOWN = 5
REPRESENTATIVES_SHOWN = 3
GROUND_TRUTH = "ground_truth"
ON_MASK = "on:"
"""The prefix of the statistics that say which segments lie on a mask (``on:decoy``, ``on:ground_truth``)."""


# --------------------------------------------------------------------------------------------
# Per shard
# --------------------------------------------------------------------------------------------


def statistics(shard: Shard, config: DriftCheck, method: str | None) -> dict[str, Tensor]:
    """Per image (``S`` segments, ``M = 2 min(keep, S)`` kept, ``D`` embedding features):

    - ``scores_b (B, S)``: B's segment scores; ``size (B, 2)``: the image's height and width;
    - ``on:<mask> (B, S) bool`` for each extra mask of the data and ``on:ground_truth``: the
      segments that lie on it;
    - against another version: ``scores_a (B, S)``, ``kept (B, M)`` the kept segment ids
      (sorted; one best under both versions appears twice) and ``embeddings (B, M, D)``;
    - against a snapshot: ``digest (B, 32) uint8`` (the image's and label's SHA-256, for the data
      hash) and, with ``colour_texture``, ``segment_embeddings (B, S, D)`` of every segment.
    """
    assert method is not None, "a kind with attributions has a method"
    location = config_location(shard, config)
    images = shard.images
    height, width = images.shape[2], images.shape[3]
    segments = patch_segments(height, width, config.segments.patch, device=shard.device)
    count = int(segments.max()) + 1
    scores_b = segment_attribution(shard.attributions(method), segments)
    out = {
        "scores_b": scores_b,
        "size": torch.tensor([height, width]).expand(len(shard), 2),
        **_on_masks(shard, segments),
    }
    if config.against.stored is not None:
        out["digest"] = sample_digests(images, shard.batch.labels)
        if config.embedding.kind == "colour_texture":
            every = torch.arange(count, device=shard.device).expand(len(shard), count)
            embed = _colour_texture(shard.worker.batch_size)
            out["segment_embeddings"] = embed_segments(embed, images, segments, every, count)
        return out
    where = location + ("against",)
    reference = shard.worker.reference_model(config.against, where)
    scores_a = segment_attribution(shard.attributions_of(reference, method), segments)
    kept = kept_segments(scores_a, scores_b, config.keep)
    embed = _colour_texture(shard.worker.batch_size)
    if config.embedding.kind == "activations":
        embed = shard.worker.cached(
            ("drift-embedder", location, config.against.model_dump_json(), config.embedding.model_dump_json()),
            lambda: _reference_embedder(
                reference if shard.target is None else shard.scored(reference),
                config,
                location,
                shard.worker.batch_size,
            ),
        )
    out.update(scores_a=scores_a, kept=kept, embeddings=embed_segments(embed, images, segments, kept, count))
    return out


def _on_masks(shard: Shard, segments: Tensor) -> dict[str, Tensor]:
    """``on:<name> (B, S) bool`` for each extra mask of the shard's data (e.g. ``decoy``) and for
    the ground-truth masks: the segments that lie on the image's mask, i.e. whose overlap with it
    is at least half of the segment or half of the mask (so a patch split across segments counts
    in each half)."""
    sizes = torch.bincount(segments.reshape(-1).long()).to(torch.float64)
    masks = [*sorted(shard.batch.regions.items()), (GROUND_TRUTH, shard.masks)]
    out = {}
    for name, mask in masks:
        pixels = mask.to(segments.device).double()
        overlap = segment_attribution(pixels, segments, sizes.numel())  # (B, S) pixel counts, float64
        totals = pixels.sum(dim=(1, 2))
        out[ON_MASK + name] = (overlap > 0) & (overlap >= 0.5 * torch.minimum(sizes[None, :], totals[:, None]))
    return out


def _reference_embedder(
    model: ModelUnderTest | ScoreModel, config: DriftCheck, location: Location, batch_size: int
) -> Embedder:
    """The activation embedder of ``model``'s embedding layer, its errors at the check's
    ``location`` (built once per worker and check)."""
    layer = _layer(model, config, location)
    return _guarded(activation_embedder(model, f"network.{layer}", batch_size=batch_size), layer, location)


# --------------------------------------------------------------------------------------------
# The merged rows
# --------------------------------------------------------------------------------------------


def decide(request: CheckRequest[DriftCheck]) -> Outcome:
    config = request.config
    assert request.method is not None, "a kind with attributions has a method"
    engine = request.engine
    statistics = request.statistics
    snapshot: BaselineEntry | None = None
    notes: list[str] = []
    if config.against.stored is not None:
        result, against, snapshot, notes = _against_snapshot(request, config, statistics)
    else:
        result, against = _against_version(request, config, statistics)
    result = _with_settings(result, config)
    measurements = _measurements(config, result, engine.spec.seed)
    regions, region_lines = _regions(statistics, result)
    width = int(statistics["size"][0, 1])
    undefined = int(((result.scores_a.sum(dim=1) <= 0) | (result.scores_b.sum(dim=1) <= 0)).sum())
    details = [f"A = {against} (reference); B = {_version_b(engine)} (under test)"]
    details += _cluster_lines(result, regions, config.segments.patch, width)
    details += region_lines
    rho = result.rank_correlation[~torch.isnan(result.rank_correlation)]
    if rho.numel():
        constant = result.rank_correlation.numel() - rho.numel()
        details.append(
            f"segment rank correlation A vs B: mean {float(rho.mean()):.2f}, min {float(rho.min()):.2f}"
            + (f" ({constant} images with constant scores left out)" if constant else "")
        )
    details += notes
    extra: OutcomeExtra = {
        "against": against,
        "drift": result.to_dict(),
        "regions": regions,
    }
    outcome = Outcome(
        measurements, samples=int(result.scores_a.shape[0]), undefined=undefined, details=details, extra=extra
    )
    if snapshot is None:
        return outcome
    obtained = obtained_summary(snapshot, request, outcome)
    if isinstance(obtained, str):  # the summary could not be written: a note, the outcome stands
        return outcome.extended([obtained], {"baseline": snapshot})
    if obtained is None:
        return outcome.extended(extra={"baseline": snapshot})  # the results' key for the snapshot entry
    written: BaselineEntry = {**snapshot, "obtained": str(obtained)}
    return outcome.extended(
        [f"obtained drift summary written to {obtained}"], {"artifacts": [str(obtained)], "baseline": written}
    )


def _with_settings(result: DriftResult, config: DriftCheck) -> DriftResult:
    """``result`` with the check's settings (segments, keep, clusters, seed, embedding) recorded."""
    embedding: EmbeddingSettings = {"kind": config.embedding.kind, "layer": config.embedding.layer}
    settings: DriftSettings = {"segments": {"patch": config.segments.patch}, **result.settings}
    return replace(result, settings={**settings, "embedding": embedding})


# --------------------------------------------------------------------------------------------
# A: another model version
# --------------------------------------------------------------------------------------------


def _against_version(
    request: CheckRequest[DriftCheck], config: DriftCheck, statistics: dict[str, Tensor]
) -> tuple[DriftResult, str]:
    device = request.engine.device
    result = drift_from_kept(
        statistics["scores_a"].to(device), statistics["scores_b"].to(device),
        statistics["kept"].to(device), statistics["embeddings"].to(device),
        keep=config.keep, clusters=config.clusters, seed=request.engine.spec.seed, sample_index=request.result.indices,
    )  # fmt: skip
    against = config.against
    if against.weights is not None:
        shown = f"weights {against.weights}"
    else:
        assert against.model is not None
        model = against.model
        shown = f"model {model.factory or model.torchscript}" + (
            f" with weights {model.weights}" if model.weights else ""
        )
    return result, shown


def _layer(model: ModelUnderTest | ScoreModel, config: DriftCheck, location: Location) -> str:
    """The embedding layer's dotted name in ``model.network``: as given, or the last Conv2d."""
    network = model.network
    names = [name for name, _ in network.named_modules() if name]
    if config.embedding.layer is not None:
        if config.embedding.layer not in names:
            hint = did_you_mean(config.embedding.layer, names)
            raise SpecRuntimeError(
                location + ("embedding", "layer"), f"the model has no layer {config.embedding.layer!r}{hint}"
            )
        return config.embedding.layer
    convs: list[str] = [
        name
        for name, module in network.named_modules()
        if name and (isinstance(module, nn.Conv2d) or getattr(module, "original_name", None) == "Conv2d")
    ]
    if not convs:
        raise SpecRuntimeError(
            location + ("embedding",),
            "the model has no Conv2d layer to embed segments with: name one with embedding.layer, "
            "or use embedding: {kind: colour_texture}",
        )
    return convs[-1]


def _guarded(embed: Embedder, layer: str, location: Location) -> Embedder:
    """``embed``, with a layer it cannot use (wrong output shape, not called by the model, a
    TorchScript module without hooks) reported as a spec-level error at ``embedding``."""

    def guarded(*, images: Tensor, segments: Tensor, indices: Tensor) -> Tensor:
        try:
            return embed(images=images, segments=segments, indices=indices)
        except (RuntimeError, ValueError) as error:
            raise SpecRuntimeError(
                location + ("embedding",),
                f"cannot embed segments with the activations of layer {layer!r}: {first_line(error)}",
            ) from error

    return guarded


def _colour_texture(batch_size: int) -> Embedder:
    """The colour/texture descriptor, computed ``batch_size`` images at a time (it holds a float64
    copy of the images it describes)."""

    def embed(*, images: Tensor, segments: Tensor, indices: Tensor) -> Tensor:
        parts = [
            colour_texture_embeddings(images[start : start + batch_size], segments, indices[start : start + batch_size])
            for start in range(0, images.shape[0], batch_size)
        ]
        return torch.cat(parts) if parts else images.new_zeros(0, 2 * images.shape[1] + 1)

    return embed


# --------------------------------------------------------------------------------------------
# A: a stored snapshot
# --------------------------------------------------------------------------------------------


def _against_snapshot(
    request: CheckRequest[DriftCheck], config: DriftCheck, statistics: dict[str, Tensor]
) -> tuple[DriftResult, str, BaselineEntry, list[str]]:
    """A's side from the stored snapshot the baselines give (:func:`drift_reference`)."""
    location = request.location

    def table() -> tuple[Tensor, str]:
        return _snapshot_table(request.engine, config, location)

    reference = drift_reference(request, config, statistics, table)
    device = request.engine.device
    tensors = reference.tensors
    embeddings = (
        tensors["embeddings"].float() if config.embedding.kind == "activations" else statistics["segment_embeddings"]
    )
    result = drift_from_scores(
        tensors["scores_a"].to(device), statistics["scores_b"].to(device),
        keep=config.keep, embed=embeddings.to(device), clusters=config.clusters, seed=request.engine.spec.seed,
        centres=tensors["centres"].to(device),
    )  # fmt: skip
    result = replace(result, sample_index=request.result.indices)
    return result, reference.shown, reference.entry, reference.notes


def _snapshot_table(engine: SpecEngine, config: DriftCheck, location: Location) -> tuple[Tensor, str]:
    """``((N, S, D), layer)``: every segment of every image embedded by the spec's own model's
    embedding layer, what an ``activations`` snapshot stores. Only an update needs it: the data
    is read once more, shard by shard, on the engine's device (a forward pass, no attributions)."""
    layer = _layer(engine.model, config, location)
    embed = _guarded(
        activation_embedder(engine.model, f"network.{layer}", batch_size=engine.batch_size), layer, location
    )
    parts = []
    for batch in engine.source.stream(engine.shards()):
        images = batch.images.to(engine.device)
        segments = patch_segments(images.shape[2], images.shape[3], config.segments.patch, device=engine.device)
        count = int(segments.max()) + 1
        every = torch.arange(count, device=engine.device).expand(len(batch), count)
        parts.append(embed_segments(embed, images, segments, every, count).cpu())
    return torch.cat(parts), layer


# --------------------------------------------------------------------------------------------
# Measurements and messages
# --------------------------------------------------------------------------------------------


def _measurements(config: DriftCheck, result: DriftResult, seed: int) -> list[Measurement]:
    """The thresholds' measurements, each with its 95 % interval over the images."""
    measurements = []
    images = int(result.scores_a.shape[0])
    bounds = result.shift_intervals(generator=torch.Generator().manual_seed(seed))
    if config.max_shift is not None:
        measurements.append(
            Measurement.compare(
                "max |shift|", result.max_abs_shift, Threshold("<=", config.max_shift),
                bounds=bounds["max_abs_shift"], samples=images,
            )
        )  # fmt: skip
    if config.mean_shift is not None:
        measurements.append(
            Measurement.compare(
                "mean |shift|", result.mean_abs_shift, Threshold("<=", config.mean_shift),
                bounds=bounds["mean_abs_shift"], samples=images,
            )
        )  # fmt: skip
    if config.min_rank_correlation is not None:
        rho = result.rank_correlation[~torch.isnan(result.rank_correlation)]
        measurements.append(
            measure("rank correlation mean", rho, "mean", Threshold(">=", config.min_rank_correlation), seed)
        )
    return measurements


def _regions(statistics: dict[str, Tensor], result: DriftResult) -> tuple[dict[str, DriftRegion], list[str]]:
    """For each extra mask of the data (e.g. ``decoy``): which cluster holds the kept segments
    that lie on it (:func:`_on_masks`), and their attribution share under A and B; for the
    ground-truth masks (``ground_truth``), the share only. Each with its line for the details."""
    out: dict[str, DriftRegion] = {}
    lines: list[str] = []
    k = int(result.shift.count.shape[0])
    n = int(result.scores_a.shape[0])
    for key, on in statistics.items():
        if not key.startswith(ON_MASK):
            continue
        name = key[len(ON_MASK) :]
        held = on.to(result.point_image.device)[result.point_image, result.point_segment]
        count = int(held.sum())
        what = "ground-truth" if name == GROUND_TRUTH else name
        if count == 0:
            out[name] = {"segments": 0}
            lines.append(f"{what}: no kept segment lies on the {what} mask (neither version attends to it)")
            continue
        share_a = float(result.share_a[held].double().sum()) / n
        share_b = float(result.share_b[held].double().sum()) / n
        if name == GROUND_TRUTH:  # objects vary: their segments spread over clusters, the share is what counts
            out[name] = {"segments": count, "share_a": round(share_a, 6), "share_b": round(share_b, 6)}
            lines.append(
                f"ground truth: the {count} kept segments on the ground-truth mask hold share {share_a:.2f} → {share_b:.2f}"
            )
            continue
        per_cluster = torch.bincount(result.assignment[held].cpu(), minlength=k)
        top = int(torch.sort(per_cluster, descending=True, stable=True).indices[0])
        fraction = float(per_cluster[top]) / count
        out[name] = {
            "segments": count,
            "cluster": top,
            "fraction": round(fraction, 6),
            "per_cluster": per_cluster.tolist(),
            "share_a": round(share_a, 6),
            "share_b": round(share_b, 6),
        }
        lines.append(
            f"{name}: cluster {top} holds {100 * fraction:.0f} % of the {count} kept segments on the {name} "
            f"mask; their share {share_a:.2f} → {share_b:.2f}"
        )
    return out, lines


def _cluster_lines(result: DriftResult, regions: dict[str, DriftRegion], patch: int, width: int) -> list[str]:
    columns = math.ceil(width / patch)
    kept = int(result.assignment.shape[0])
    lines = [
        f"clusters by |shift| ({kept} kept segments of {result.shift.num_images} images; "
        "share = fraction of each image's |attribution|, averaged over the images):"
    ]
    described = result.shift.describe()
    order = [index for index in result.shift.order() if int(result.shift.count[index]) > 0]
    for index, line in list(zip(order, described, strict=False))[:CLUSTERS_SHOWN]:
        tags = [f"holds the {name}" for name, region in regions.items() if region.get("cluster") == index]
        examples = []
        for image, segment in result.representative_segments(index)[:REPRESENTATIVES_SHOWN]:
            row, column = divmod(segment, columns)
            examples.append(
                f"image {image} [{row * patch}:{(row + 1) * patch}, {column * patch}:{(column + 1) * patch}]"
            )
        suffix = (f" [{', '.join(tags)}]" if tags else "") + (f"; e.g. {', '.join(examples)}" if examples else "")
        lines.append(f"  {line}{suffix}")
    if len(order) > CLUSTERS_SHOWN:
        lines.append(f"  … {len(order) - CLUSTERS_SHOWN} more clusters (all in the JSON result)")
    return lines


def _version_b(engine: SpecEngine) -> str:
    model = engine.spec.model
    if model.weights is not None:
        return f"this spec's model (weights {model.weights})"
    return f"this spec's model ({model.torchscript or model.factory})"


KIND = CheckKind("drift", DriftCheck, statistics, decide)
