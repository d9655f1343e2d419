"""``region`` checks: how much a named region (a decoy patch, a ruler, a box) drives the target.

The check uses no attribution: :func:`statistics` scores each shard's samples and :func:`decide`
thresholds the merged per-sample scores. Per sample with region ``R`` (the data's named extra
mask, or the spec's ``box`` on every image), ground-truth mask ``G`` and target class ``t`` (the
spec's ``target``: label or predicted), it measures the scores of
:mod:`pytest_saliency.metrics.region` on centred logits:

- ``method: contextual_decomposition``: :func:`~pytest_saliency.metrics.region.cd_region_scores`
  on the user's network (``model.network``) with the *normalised* input ``normalize(x)`` (the
  spec's ``model.normalize``; the stored image when there is none);
- ``method: occlusion``: :func:`~pytest_saliency.metrics.region.occlusion_scores` on the whole
  model (normalisation included). ``interaction`` needs CD (the schema refuses it here).

Undefined samples (an empty region or ground truth) are left out of every aggregate and counted.
A model that CD cannot walk (a layer without a rule, a custom ``forward``, TorchScript) is a
one-line spec error at ``region.method`` suggesting ``method: occlusion``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import Location, SpecRuntimeError, did_you_mean
from ..metrics.decomposition import UnsupportedLayerError
from ..metrics.region import cd_region_scores, nonempty, occlusion_scores
from ..spec.schema import RegionCheck, Threshold
from ..streaming import Shard
from ..targets import OwnColumn
from .kind import CheckKind
from .outcome import Outcome
from .request import CheckRequest, config_location, run_in_batches
from .scores import score_outcome

EMPTY = "empty_region"
"""The statistic that marks a sample whose region is empty (counted in the details)."""


def statistics(shard: Shard, config: RegionCheck, method: str | None) -> dict[str, Tensor]:
    """``share``, ``signed_share`` (and ``interaction`` when thresholded), ``(B,)`` float, NaN
    where undefined; ``empty_region`` ``(B,)`` bool."""
    location = config_location(shard, config)
    regions = _regions(shard, config, location)
    return {**_scores(shard, config, regions, location), EMPTY: ~nonempty(regions)}


def decide(request: CheckRequest[RegionCheck]) -> Outcome:
    config = request.config
    statistics = request.statistics
    scores = {name: values for name, values in statistics.items() if name != EMPTY}
    empty = int(statistics[EMPTY][request.selection].sum())
    return score_outcome(
        request,
        scores,
        _thresholds(config),
        f"{_describe(config)}, {_METHOD_NAMES[config.method]}",
        {"region": {"method": config.method, "mask": config.mask, "box": config.box}},
        names=_COLUMNS,
        counted=f", {empty} with an empty region",
    )


_METHOD_NAMES = {"contextual_decomposition": "contextual decomposition", "occlusion": "occlusion"}


def _thresholds(config: RegionCheck) -> dict[str, dict[str, Threshold]]:
    given = {"share": config.share, "interaction": config.interaction}
    return {name: value for name, value in given.items() if value is not None}


def _describe(config: RegionCheck) -> str:
    if config.mask is not None:
        return f"region mask {config.mask!r}"
    top, left, bottom, right = config.box or (0, 0, 0, 0)
    return f"region box [{top}:{bottom}, {left}:{right}]"


def _regions(shard: Shard, config: RegionCheck, location: Location) -> Tensor:
    """``(B, H, W) bool`` on the shard's device: the named mask, or the box on every image."""
    n, _, height, width = shard.images.shape
    regions = shard.batch.regions
    if config.mask is not None:
        if config.mask not in regions:
            named = ", ".join(repr(name) for name in regions) or "none"
            raise SpecRuntimeError(
                location + ("mask",),
                f"the data has no region mask {config.mask!r}{did_you_mean(config.mask, regions)}; "
                f"its extra masks: {named}",
            )
        return regions[config.mask].bool()
    assert config.box is not None
    top, left, bottom, right = config.box
    if not (top < bottom <= height and left < right <= width):
        raise SpecRuntimeError(
            location + ("box",),
            f"box [top, left, bottom, right] = {config.box} must satisfy top < bottom <= {height} and "
            f"left < right <= {width} (the images are {height}x{width}, ends exclusive)",
        )
    box = torch.zeros(height, width, dtype=torch.bool, device=shard.device)
    box[top:bottom, left:right] = True
    return box.expand(n, height, width)


def _scores(shard: Shard, config: RegionCheck, regions: Tensor, location: Location) -> dict[str, Tensor]:
    """Per-sample ``(B,)`` float scores, batched by ``data.batch_size`` (halved once when that
    runs out of memory)."""
    model = shard.model
    targets = shard.targets

    def scores(batch_size: int) -> dict[str, Tensor]:
        parts: dict[str, list[Tensor]] = {}
        for part in shard.batches(batch_size):
            images = shard.images[part]
            if config.method == "occlusion" and shard.target is not None:
                own = OwnColumn(shard.scored(model), targets[part])
                batch = occlusion_scores(own, images, regions[part], torch.zeros_like(targets[part]))
            elif config.method == "occlusion":
                batch = occlusion_scores(model, images, regions[part], targets[part])
            elif shard.target is not None:
                raise SpecRuntimeError(
                    location + ("method",),
                    f"contextual decomposition splits a classifier's logits; task: {shard.spec.task} "
                    "takes method: occlusion",
                )
            else:
                truth = shard.masks[part] if config.interaction is not None else None
                with torch.inference_mode():
                    inputs = model.normalize(images)
                try:
                    batch = cd_region_scores(model.network, inputs, regions[part], targets[part], truth)
                except UnsupportedLayerError as error:
                    raise SpecRuntimeError(location + ("method",), _unsupported(error)) from None
            for name, values in batch.items():
                parts.setdefault(name, []).append(values.float())
        return {name: torch.cat(values) for name, values in parts.items()}

    return run_in_batches(shard, config, None, scores)


def _unsupported(error: UnsupportedLayerError) -> str:
    type_name = f"{error.module_type.__module__}.{error.module_type.__qualname__}"
    if type_name.startswith("torch.nn.modules."):
        type_name = f"nn.{error.module_type.__qualname__}"
    where = "the model" if error.path == "<model>" else f"layer {error.path!r}"
    what = f" for {error.operation}" if error.operation else ""
    return (
        f"contextual decomposition cannot walk {where} ({type_name}): it has no CD rule{what} "
        "(register one with pytest_saliency.metrics.decomposition.register_rule), or use method: occlusion"
    )


_COLUMNS = {"signed_share": "signed"}


KIND = CheckKind("region", RegionCheck, statistics, decide)
