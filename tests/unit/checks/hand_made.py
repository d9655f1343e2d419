"""A check item's request built from hand-made per-sample statistics, for the kinds' ``decide``
(no model, no data set: the pass's merged result is written out)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor

from pytest_saliency.checks.outcome import Measurement, Outcome
from pytest_saliency.checks.registry import KINDS
from pytest_saliency.checks.request import CheckRequest
from pytest_saliency.spec.schema import CheckSpec
from pytest_saliency.streaming import Need, PassResult


def request(
    kind: str,
    block: dict[str, Any],
    statistics: dict[str, Tensor],
    *,
    labels: list[int] | None = None,
    predictions: list[int] | None = None,
    method: str | None = "grad",
    class_index: int | None = None,
    network: Any = None,
) -> CheckRequest[Any]:
    """The request of the only check of a spec, ``{kind: block}``, over ``statistics`` ``(N, ...)``
    of samples 10, 11, ...; labels and predictions 0 unless given (classes ``a``, ``b``)."""
    check = CheckSpec.model_validate({"id": f"the-{kind}", kind: block})
    n = next(iter(statistics.values())).shape[0]
    label = torch.tensor(labels if labels is not None else [0] * n)
    predicted = torch.tensor(predictions if predictions is not None else [0] * n)
    spec = SimpleNamespace(
        checks=[check],
        seed=0,
        target="label",
        task="classification",
        data=SimpleNamespace(classes=["a", "b"]),
        saliency=SimpleNamespace(channels="abs_sum"),
    )
    engine = SimpleNamespace(spec=spec, device=torch.device("cpu"), model=SimpleNamespace(network=network))
    result = PassResult(torch.arange(10, 10 + n), label, predicted, label, {}, 2, {Need(0, method): statistics})
    return CheckRequest(engine, check, KINDS[kind].config_of(check), method, class_index, result)  # type: ignore[arg-type]


def decided(kind: str, block: dict[str, Any], statistics: dict[str, Tensor], **options: Any) -> Outcome:
    """The kind's outcome of :func:`request`."""
    return KINDS[kind].decide(request(kind, block, statistics, **options))


def by_key(outcome: Outcome) -> dict[str, Measurement]:
    """The outcome's measurements by key (what a program matches, not the label)."""
    return {measurement.key: measurement for measurement in outcome.measurements}
