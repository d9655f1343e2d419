"""How the reports show values (pytest_saliency.report.format)."""

from __future__ import annotations

from pytest_saliency.report.format import fixed, percent, signed, significant, with_interval
from pytest_saliency.report.terminal import failure_text


def test_formatters_show_undefined_values_as_the_caller_asks() -> None:
    assert fixed(0.33012) == "0.3301" and fixed(None) == "—" and fixed(None, undefined="undefined") == "undefined"
    assert fixed("circle") == "circle" and fixed(True) == "True"  # labels and flags as they are
    assert significant(1.23456e-5) == "1.235e-05" and significant(None) == "undefined"
    assert signed(0.125) == "+0.125" and signed(-0.5, 1) == "-0.5" and signed(None) == "—"
    assert percent(0.125) == "12.5 %" and percent(None) == "—"
    measurement = {"value": 0.33012, "interval": 0.02101}
    assert with_interval(measurement) == "0.3301 ± 0.0210"
    assert with_interval(measurement, 4, 3) == "0.3301 ± 0.021"
    assert with_interval({"value": 0.5, "interval": None}) == "0.5000"
    assert with_interval({"value": None, "interval": 0.1}, undefined="—") == "—"


def test_failure_text_reads_nan_as_undefined() -> None:
    """An outcome's own dict (not yet JSON-safe) may carry NaN: the text shows no ``± nan``."""
    nan = float("nan")
    result = {
        "samples": 1,
        "undefined": 0,
        "measurements": [
            {"name": "gtc.mean", "value": 0.25, "threshold": ">= 0.5", "passed": False, "interval": nan},
            {
                "name": "iou.mean",
                "value": 0.25,
                "threshold": ">= 0.2",
                "passed": False,
                "interval": nan,
                "lower": nan,
                "upper": nan,
                "inconclusive": True,
                "needed_samples": None,
            },
        ],
        "details": [],
    }
    text = failure_text("s.saliency.yaml:3", "check 'c' failed", result)
    assert "nan" not in text
    assert "gtc.mean = 0.25 (want >= 0.5)" in text
    assert "iou.mean = 0.25, no interval for >= 0.2: it needs at least 2 samples" in text
    assert result["measurements"][0]["interval"] != result["measurements"][0]["interval"]  # the input is left as it was
