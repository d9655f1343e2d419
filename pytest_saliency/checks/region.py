"""``region`` checks: how much a named region (a decoy patch, a ruler, a box) drives the target.

The check runs once per spec (it uses no attribution). Per sample with region ``R`` (the data's
named extra mask, or the spec's ``box`` on every image), ground-truth mask ``G`` and target class
``t`` (the spec's ``target``: label or predicted), it measures the scores of
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

from typing import Any

import torch
from torch import Tensor

from ..errors import Location, SpecRuntimeError, did_you_mean
from ..memory import run_with_half_batch_retry
from ..metrics.decomposition import UnsupportedLayerError
from ..metrics.region import cd_region_scores, nonempty, occlusion_scores
from ..spec.schema import RegionCheck
from .base import CheckRequest, Outcome, score_outcome

__all__ = ["evaluate"]


def evaluate(request: CheckRequest) -> Outcome:
    config = request.check.config
    assert isinstance(config, RegionCheck)
    engine = request.engine
    location: Location = ("checks", engine.spec.checks.index(request.check), "region")
    regions = _regions(request, config, location)
    scores = _scores(request, config, regions, location)
    empty = int((~nonempty(regions[request.selection])).sum())
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


def _thresholds(config: RegionCheck) -> dict[str, dict[str, Any]]:
    return {name: value for name in ("share", "interaction") if (value := getattr(config, name)) is not None}


def _describe(config: RegionCheck) -> str:
    if config.mask is not None:
        return f"region mask {config.mask!r}"
    top, left, bottom, right = config.box or (0, 0, 0, 0)
    return f"region box [{top}:{bottom}, {left}:{right}]"


def _regions(request: CheckRequest, config: RegionCheck, location: Location) -> Tensor:
    """``(N, H, W) bool``: the named mask, or the box on every image."""
    data = request.engine.data
    n, _, height, width = data.images.shape
    if config.mask is not None:
        if config.mask not in data.regions:
            named = ", ".join(repr(name) for name in data.regions) or "none"
            raise SpecRuntimeError(
                location + ("mask",),
                f"the data has no region mask {config.mask!r}{did_you_mean(config.mask, data.regions)}; "
                f"its extra masks: {named}",
            )
        return data.regions[config.mask].bool()
    assert config.box is not None
    top, left, bottom, right = config.box
    if not (top < bottom <= height and left < right <= width):
        raise SpecRuntimeError(
            location + ("box",),
            f"box [top, left, bottom, right] = {config.box} must satisfy top < bottom <= {height} and "
            f"left < right <= {width} (the images are {height}x{width}, ends exclusive)",
        )
    box = torch.zeros(height, width, dtype=torch.bool)
    box[top:bottom, left:right] = True
    return box.expand(n, height, width)


def _scores(request: CheckRequest, config: RegionCheck, regions: Tensor, location: Location) -> dict[str, Tensor]:
    """Per-sample ``(N,)`` scores on the CPU, batched by the engine's batch size (halved once
    when that runs out of memory)."""
    engine = request.engine
    model = engine.model
    targets = engine.targets

    def scores(batch_size: int) -> dict[str, Tensor]:
        parts: dict[str, list[Tensor]] = {}
        for part in engine.batches(batch_size=batch_size):
            images = engine.data.images[part].to(engine.device)
            if config.method == "occlusion":
                batch = occlusion_scores(model, images, regions[part], targets[part])
            else:
                truth = engine.data.masks[part] if config.interaction is not None else None
                with torch.inference_mode():
                    inputs = model.normalize(images)
                try:
                    batch = cd_region_scores(model.network, inputs, regions[part], targets[part], truth)
                except UnsupportedLayerError as error:
                    raise SpecRuntimeError(location + ("method",), _unsupported(error)) from None
            for name, values in batch.items():
                parts.setdefault(name, []).append(values.float().cpu())
        return {name: torch.cat(values) for name, values in parts.items()}

    return run_with_half_batch_retry(scores, engine.batch_size, location, "data.batch_size")


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
