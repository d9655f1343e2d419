"""The typed result dicts mirror report/results.schema.json, key for key."""

from __future__ import annotations

from pytest_saliency.checks.outcome import Measurement, measurement_key
from pytest_saliency.report.results import ItemResult, MeasurementResult, schema
from pytest_saliency.spec.schema import Threshold


def test_an_item_result_has_the_schemas_keys_and_requires_what_it_requires() -> None:
    result = schema()["$defs"]["result"]
    assert ItemResult.__required_keys__ | ItemResult.__optional_keys__ == set(result["properties"])
    assert ItemResult.__required_keys__ == set(result["required"])


def test_a_measurement_result_has_the_schemas_keys() -> None:
    measurement = schema()["$defs"]["measurement"]
    assert MeasurementResult.__required_keys__ | MeasurementResult.__optional_keys__ == set(measurement["properties"])
    assert MeasurementResult.__required_keys__ == set(measurement["required"])


def test_a_measurement_keeps_its_threshold_object_and_a_key_apart_from_its_label() -> None:
    measurement = Measurement.compare("gap (AUC LIF - AUC MIF)", 0.25, Threshold(">=", 0.1), 0.05, samples=8)
    assert measurement.threshold.wants_high and measurement.key == "gap"
    assert measurement.to_dict()["threshold"] == ">= 0.1" and measurement.to_dict()["name"].startswith("gap (")
    assert [measurement_key(name) for name in ("iou.mean", "fraction distractor", "max |shift|", "mif AUC")] == [
        "iou.mean",
        "fraction_distractor",
        "max_shift",
        "mif_auc",
    ]
