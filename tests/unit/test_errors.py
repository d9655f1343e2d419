"""Every error pickles with its attributes (a Ray worker's error reaches the driver as itself)."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from pytest_saliency.errors import (
    ClusterUnavailable,
    MissingSnapshotError,
    SaliencyError,
    SpecError,
    SpecProblem,
    SpecRuntimeError,
)
from pytest_saliency.metrics.decomposition import UnsupportedLayerError

ERRORS = [
    SpecRuntimeError(("checks", 0, "fidelity"), "the model failed"),
    SpecError([SpecProblem("x.saliency.yaml", 3, 5, "unknown key 'parms'")]),
    MissingSnapshotError("production", Path("baselines/x"), "pytest --saliency-update-baselines"),
    UnsupportedLayerError("layer1", Path, operation="torch.tanh"),
    ClusterUnavailable("--saliency-ray: no worker"),
]


@pytest.mark.parametrize("error", ERRORS, ids=lambda error: type(error).__name__)
def test_an_error_survives_pickling_as_itself(error: SaliencyError) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert copy.args == error.args
    assert vars(copy) == vars(error)


def test_a_pickled_spec_runtime_error_keeps_its_location() -> None:
    copy = pickle.loads(pickle.dumps(SpecRuntimeError(("data", "npz"), "cannot read")))
    assert (copy.location, copy.message) == (("data", "npz"), "cannot read")


def test_every_warning_of_the_package_has_one_root() -> None:
    import inspect

    from pytest_saliency import errors

    warnings = [value for _, value in inspect.getmembers(errors, inspect.isclass) if issubclass(value, Warning)]
    assert {warning.__name__ for warning in warnings} >= {
        "SaliencyWarning",
        "SnapshotEnvironmentWarning",
        "SpecDeprecationWarning",
    }
    assert all(issubclass(warning, errors.PytestSaliencyWarning) for warning in warnings)
    assert issubclass(errors.SpecDeprecationWarning, FutureWarning)  # still shown by default, as before
