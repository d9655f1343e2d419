"""The table of check kinds (pytest_saliency.checks.registry) and the interface each kind fills in
(pytest_saliency.checks.kind)."""

from __future__ import annotations

import pytest

from pytest_saliency.checks import registry
from pytest_saliency.checks.fidelity import KIND as FIDELITY
from pytest_saliency.checks.kind import CheckKind
from pytest_saliency.spec.schema import CHECK_KINDS, CheckSpec, FidelityCheck, SharedInterestCheck


def test_every_key_of_the_language_is_a_registered_kind_of_its_config_type() -> None:
    assert list(registry.KINDS) == list(CHECK_KINDS) == list(CheckSpec.kinds())
    for name, config_type in CheckSpec.kinds().items():
        kind = registry.KINDS[name]
        assert isinstance(kind, CheckKind) and kind.name == name and kind.config_type is config_type


def test_a_kind_module_whose_kind_does_not_fit_its_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import pytest_saliency.checks.fidelity as module

    monkeypatch.setattr(
        module, "KIND", CheckKind("fidelity", SharedInterestCheck, FIDELITY.statistics, FIDELITY.decide)
    )
    with pytest.raises(TypeError, match=r"checks.fidelity.KIND must be CheckKind\('fidelity', FidelityCheck, ...\)"):
        registry._load("fidelity", FidelityCheck)


def test_a_kind_gives_a_check_its_own_config_and_refuses_another_kind() -> None:
    check = CheckSpec.model_validate({"id": "faithful", "fidelity": {"gap": ">= 0.1"}})
    assert registry.kind_of(check) is FIDELITY
    config: FidelityCheck = FIDELITY.config_of(check)
    assert config.gap is not None and str(config.gap) == ">= 0.1"
    other = CheckSpec.model_validate({"id": "cov", "shared_interest": {"iou": {"mean": ">= 0.1"}}})
    with pytest.raises(TypeError, match="check 'cov' is a shared_interest check, not a fidelity check"):
        FIDELITY.config_of(other)
