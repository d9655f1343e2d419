"""The per-image stages of attribution drift (IMACS; docs/methods.md#attribution-drift-imacs):
segments, their attribution scores, each image's kept segments, their embeddings, and the
per-image rank correlation of two versions' segment scores.

Everything here treats each image on its own, so a shard of the data gives the same rows as the
whole data set would: these are what a drift check computes per shard.
"""

from __future__ import annotations

import math
from typing import Literal, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...tokens import LayoutError, infer_layout, patch_size
from ..sanity import average_ranks

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


def segment_count(segments: Tensor, num_segments: int | None) -> int:
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


def as_float(tensor: Tensor) -> Tensor:
    """``tensor`` in float64 if it is, else in float32 (the dtype the drift stages compute in)."""
    return tensor if tensor.dtype == torch.float64 else tensor.float()


def segment_attribution(attributions: Tensor, segments: Tensor, num_segments: int | None = None) -> Tensor:
    """Sum of ``|attribution|`` over each segment: ``(N, C, H, W)`` or ``(N, H, W)`` → ``(N, S)``.

    Channels are summed after the absolute value, so a segment's score counts evidence for and
    against the target alike (IMACS scores segments by attribution magnitude). ``S`` is
    ``num_segments`` or ``segments.max() + 1``; an id with no pixels scores 0. The scores of an
    image sum to its total ``|attribution|``. Summed in float64 (see :func:`_segment_sums`) and
    returned in the attributions' float dtype; bit-identical for identical inputs on any device.
    """
    maps = as_float(attributions).abs()
    if maps.dim() == 4:
        maps = maps.sum(dim=1)
    if maps.dim() != 3:
        raise ValueError(f"attributions must be (N, C, H, W) or (N, H, W), got {tuple(attributions.shape)}")
    if tuple(maps.shape[1:]) != tuple(segments.shape):
        raise ValueError(f"attributions are {tuple(maps.shape[1:])} but segments are {tuple(segments.shape)}")
    count = segment_count(segments, num_segments)
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


def kept_segments(scores_a: Tensor, scores_b: Tensor, keep: int, segments_from: SegmentsFrom = "union") -> Tensor:
    """Each image's candidate segments ``(N, M) long``, sorted by id: its ``keep`` best under A
    together with its ``keep`` best under B (``"union"``, ``M = 2 min(keep, S)``), or A's only
    (``"a"``, ``M = min(keep, S)``). A segment best under both appears twice, side by side;
    :func:`first_occurrences` marks the first of each. Per image, so the same in any batch."""
    if scores_a.dim() != 2 or scores_a.shape != scores_b.shape:
        raise ValueError(f"scores must share an (N, S) shape, got {tuple(scores_a.shape)} and {tuple(scores_b.shape)}")
    if segments_from not in ("union", "a"):
        raise ValueError(f"segments_from must be 'union' or 'a', got {segments_from!r}")
    top_a = top_segments(scores_a, keep)
    candidates = (
        torch.cat([top_a, top_segments(scores_b.to(scores_a.device), keep)], dim=1)
        if segments_from == "union"
        else top_a
    )
    return torch.sort(candidates, dim=1).values


def first_occurrences(candidates: Tensor) -> Tensor:
    """``(N, M) bool``: True at the first of equal ids in each row of sorted ``candidates``."""
    valid = torch.ones_like(candidates, dtype=torch.bool)
    valid[:, 1:] = candidates[:, 1:] != candidates[:, :-1]
    return valid


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
    count = segment_count(segments, None)
    indices = _check_indices(indices, images, count)
    x = as_float(images)
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
    counts as ``1 × 1``; tokens ``(N, T, D)`` and channels-last maps become grids by
    :func:`~pytest_saliency.tokens.infer_layout`). Each segment's embedding is the average of the feature map over the
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
    count = segment_count(segments, None)
    indices = _check_indices(indices, images, count)
    layer = model.get_submodule(layer_name)
    captured: list[Tensor] = []

    def hook(
        _module: nn.Module, _inputs: tuple[object, ...], output: Tensor | tuple[Tensor, ...] | list[Tensor]
    ) -> None:
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
                try:
                    size = (images.shape[2], images.shape[3])
                    layout = infer_layout(tuple(features.shape), size, patch_size(model), layer)
                except LayoutError as error:
                    raise ValueError(f"layer {layer_name!r} {error}") from None
                features = layout.to_grid(features)
                if weights is None:
                    weights = _footprint_weights(
                        segments.to(features.device), count, features.shape[2], features.shape[3]
                    )
                flat = as_float(features).flatten(2).transpose(1, 2)  # (n, h*w, D)
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
