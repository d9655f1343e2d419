"""``agreement`` checks: do two attribution methods agree on where the evidence is? Thresholds on
aggregates of the per-sample Spearman rank correlation of the item's method's map with the map of
``reference`` (docs/methods.md, "Agreement"). The example kind of docs/checks.md."""

from __future__ import annotations

from torch import Tensor

from ..errors import SpecRuntimeError, did_you_mean
from ..metrics.saliency import reduce_channels
from ..metrics.sanity import spearman
from ..spec.schema import AgreementCheck
from ..streaming import Shard
from .kind import CheckKind
from .outcome import Outcome
from .request import CheckRequest, config_location
from .scores import score_outcome


def statistics(shard: Shard, config: AgreementCheck, method: str | None) -> dict[str, Tensor]:
    """``rank_correlation`` ``(B,)`` float64, NaN where either map is constant."""
    assert method is not None, "a kind with attributions has a method"
    attributions = shard.spec.attributions
    if config.reference not in attributions:
        raise SpecRuntimeError(
            (*config_location(shard, config), "reference"),
            f"no attribution named {config.reference!r}{did_you_mean(config.reference, attributions)}",
        )
    channels = config.channels or shard.spec.saliency.channels
    maps = reduce_channels(shard.attributions(method), channels)
    reference = reduce_channels(shard.attributions(config.reference), channels)
    return {"rank_correlation": spearman(maps, reference)}


def decide(request: CheckRequest[AgreementCheck]) -> Outcome:
    config = request.config
    heading = f"Spearman rank correlation of each {request.method} map with its {config.reference} map"
    return score_outcome(request, request.statistics, {"rank_correlation": config.rank_correlation}, heading)


KIND = CheckKind("agreement", AgreementCheck, statistics, decide)
