"""Sanity checks of the explanation (docs/methods.md, "Parameter randomisation and random logit"):
similarities on hand vectors and against scipy / scikit-image, eMPRT's entropy against numpy,
and the randomisation machinery (the model under test untouched, seeding, BatchNorm)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator
from copy import deepcopy

import numpy as np
import pytest
import scipy.stats
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from torch import nn

from pytest_saliency.metrics.sanity import (
    Order,
    average_ranks,
    efficient_mprt_score,
    histogram_entropy,
    other_classes,
    parameterised_layers,
    randomised_models,
    randomised_state,
    randomised_steps,
    reinitialise,
    self_similarity,
    similarity,
    similarity_to,
    spearman,
    spearman_abs,
    ssim,
)
from pytest_saliency.spec.schema import SanityCheck

# --- similarities on hand vectors --------------------------------------------------------------


def test_spearman_of_identical_maps_is_one_and_of_reversed_ranks_minus_one() -> None:
    a = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0], [0.3, -2.0, 7.0, 1.0, 0.0]])
    reversed_ranks = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0], [-0.3, 2.0, -7.0, -1.0, 0.0]])
    assert spearman(a, a).tolist() == pytest.approx([1.0, 1.0])
    assert spearman(a, reversed_ranks).tolist() == pytest.approx([-1.0, -1.0])
    assert spearman(a, a**3 + 10).tolist() == pytest.approx([1.0, 1.0])  # only the order counts


def test_spearman_with_ties_uses_average_ranks() -> None:
    # Ranks of [1, 2, 2, 3] are [1, 2.5, 2.5, 4]; with [1, 2, 3, 4]: rho = 4.5 / sqrt(4.5 * 5).
    a = torch.tensor([[1.0, 2.0, 2.0, 3.0]])
    b = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    assert average_ranks(a).tolist() == [[1.0, 2.5, 2.5, 4.0]]
    assert spearman(a, b).item() == pytest.approx(4.5 / math.sqrt(4.5 * 5.0))


def test_spearman_abs_ignores_signs_and_spearman_does_not() -> None:
    a = torch.tensor([[1.0, -2.0, 3.0, -4.0]])
    b = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    assert spearman_abs(a, b).item() == pytest.approx(1.0)
    assert spearman(a, b).item() == pytest.approx(-0.4)  # ranks [3, 2, 4, 1] vs [1, 2, 3, 4]


def test_a_constant_map_has_no_rank_correlation() -> None:
    a = torch.zeros(2, 4, 4)
    b = torch.rand(2, 4, 4, generator=torch.Generator().manual_seed(0))
    assert torch.isnan(spearman(a, b)).all()
    assert torch.isnan(spearman(b, a)).all()


def test_spearman_equals_scipy_on_maps_with_ties() -> None:
    generator = torch.Generator().manual_seed(3)
    a = (torch.rand(6, 9, 11, generator=generator) * 5).round()  # many ties
    b = torch.rand(6, 9, 11, generator=generator)
    b[0, :4] = 0.0
    expected = [scipy.stats.spearmanr(x.flatten(), y.flatten())[0] for x, y in zip(a.numpy(), b.numpy(), strict=True)]
    np.testing.assert_allclose(spearman(a, b).numpy(), expected, rtol=0, atol=1e-12)
    ranks = [scipy.stats.rankdata(x.flatten()) for x in a.numpy()]
    np.testing.assert_array_equal(average_ranks(a).numpy(), np.stack(ranks))


def test_ssim_of_identical_maps_is_one_and_equals_scikit_image() -> None:
    skimage = pytest.importorskip("skimage.metrics")
    generator = torch.Generator().manual_seed(5)
    a = torch.rand(4, 12, 10, generator=generator)
    b = a + 0.3 * torch.rand(4, 12, 10, generator=generator)
    assert ssim(a, a).tolist() == pytest.approx([1.0] * 4)
    expected = []
    for x, y in zip(a.double().numpy(), b.double().numpy(), strict=True):
        spread = float(max(x.max(), y.max()) - min(x.min(), y.min()))
        expected.append(skimage.structural_similarity(x, y, data_range=spread))
    np.testing.assert_allclose(ssim(a, b).numpy(), expected, rtol=0, atol=1e-12)


def test_ssim_of_a_constant_map_or_one_holding_nan_is_undefined() -> None:
    """Without it a constant map would score near 0, the best possible random-logit result."""
    maps = torch.rand(4, 9, 9, generator=torch.Generator().manual_seed(6))
    others = maps.flip(2)
    maps[0], others[1] = 0.5, 0.0  # constant on either side
    maps[2, 3, 4], others[3, 0, 0] = math.nan, math.nan
    assert torch.isnan(ssim(maps, others)).all()
    assert torch.isnan(ssim(others, maps)).all()
    assert not torch.isnan(ssim(maps[1:2], others[0:1])).any()  # both maps vary, no NaN


def test_ssim_refuses_maps_smaller_than_its_window() -> None:
    with pytest.raises(ValueError, match="at least 7x7"):
        ssim(torch.rand(1, 6, 20), torch.rand(1, 6, 20))


def test_similarity_by_name() -> None:
    a = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(1))
    assert similarity("spearman", a, -a).tolist() == pytest.approx([-1.0] * 3)
    assert similarity("spearman_abs", a, -a).tolist() == pytest.approx([1.0] * 3)
    assert similarity("ssim", a, a).tolist() == pytest.approx([1.0] * 3)
    with pytest.raises(ValueError, match="unknown similarity"):
        similarity("hog", a, a)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["spearman", "spearman_abs", "ssim"])
def test_a_fixed_reference_gives_the_pairwise_similarity(name: str) -> None:
    generator = torch.Generator().manual_seed(4)
    reference = (torch.rand(4, 9, 9, generator=generator) * 3).round() - 1
    compare = similarity_to(name, reference)  # type: ignore[arg-type]
    for _ in range(2):  # the reference's ranks are reused
        maps = torch.rand(4, 9, 9, generator=generator) - 0.5
        torch.testing.assert_close(compare(maps), similarity(name, reference, maps))  # type: ignore[arg-type]


def test_self_similarity_is_one_except_for_constant_maps() -> None:
    maps = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0))
    maps[1] = 0.25
    expected = [1.0, math.nan, 1.0]
    assert self_similarity(maps).tolist() == pytest.approx(expected, nan_ok=True)
    for name in ("spearman", "spearman_abs", "ssim"):
        assert similarity(name, maps, maps).tolist() == pytest.approx(expected, nan_ok=True)  # type: ignore[arg-type]


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**16), split=st.integers(1, 6))
def test_similarities_are_per_sample_whatever_the_batch(seed: int, split: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    a = (torch.rand(7, 8, 8, generator=generator) * 4).round()
    b = torch.rand(7, 8, 8, generator=generator) - 0.5
    for function in (spearman, spearman_abs, ssim):
        whole = function(a, b)
        parts = torch.cat([function(a[:split], b[:split]), function(a[split:], b[split:])])
        torch.testing.assert_close(whole, parts, equal_nan=True)
        assert ((whole >= -1 - 1e-12) & (whole <= 1 + 1e-12)).all()


# --- eMPRT -----------------------------------------------------------------------------------


def test_histogram_entropy_equals_numpy_histogram_and_scipy_entropy() -> None:
    generator = torch.Generator().manual_seed(2)
    maps = torch.rand(5, 16, 16, generator=generator) ** 3
    maps[1] = (maps[1] * 7).round()  # values exactly on bin edges
    expected = [scipy.stats.entropy(np.histogram(m, bins=100)[0]) for m in maps.double().numpy()]
    np.testing.assert_allclose(histogram_entropy(maps).numpy(), expected, rtol=0, atol=1e-12)
    expected = [scipy.stats.entropy(np.histogram(m, bins=10)[0]) for m in maps.double().numpy()]
    np.testing.assert_allclose(histogram_entropy(maps, bins=10).numpy(), expected, rtol=0, atol=1e-12)


def test_entropy_of_hand_maps() -> None:
    uniform = torch.arange(100.0).view(1, 10, 10)  # one value per bin: ln(100)
    two_levels = torch.tensor([[0.0, 0.0, 1.0, 1.0]])  # two full bins: ln(2)
    assert histogram_entropy(uniform).item() == pytest.approx(math.log(100))
    assert histogram_entropy(two_levels).item() == pytest.approx(math.log(2))
    assert histogram_entropy(torch.full((2, 3, 3), 4.0)).tolist() == [0.0, 0.0]


def test_empr_score_is_the_relative_entropy_rise_and_undefined_for_a_one_bin_map() -> None:
    trained = torch.tensor([[0.0, 0.0, 1.0, 1.0], [2.0, 2.0, 2.0, 2.0]])
    randomised = torch.tensor([[0.0, 1.0, 2.0, 3.0], [0.0, 1.0, 2.0, 3.0]])  # ln(4)
    score = efficient_mprt_score(trained, randomised)
    assert score[0].item() == pytest.approx((math.log(4) - math.log(2)) / math.log(2))
    assert math.isnan(score[1].item())


def test_a_map_holding_nan_has_no_entropy_and_no_empr_score() -> None:
    maps = torch.tensor([[0.0, 1.0, 2.0, 3.0], [0.0, math.nan, 2.0, 3.0], [math.nan] * 4])
    entropy = histogram_entropy(maps)
    assert entropy[0].item() == pytest.approx(math.log(4)) and torch.isnan(entropy[1:]).all()
    assert torch.isnan(efficient_mprt_score(maps, maps[[0, 0, 0]])[1:]).all()  # not -1
    assert torch.isnan(efficient_mprt_score(maps[[0, 0, 0]], maps)[1:]).all()


# --- randomisation -----------------------------------------------------------------------------


def small_net(batch_norm: bool = False) -> nn.Module:
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Conv2d(3, 4, 3, padding=1)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(4))
    layers += [
        nn.ReLU(),
        nn.Conv2d(4, 6, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 3),
    ]
    return nn.Sequential(*layers).eval()


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.clone() for key, value in model.state_dict().items()}


def changed(before: dict[str, torch.Tensor], model: nn.Module) -> set[str]:
    """The modules (state_dict key prefixes) of ``model`` whose tensors differ from ``before``."""
    return {key.rsplit(".", 1)[0] for key, value in model.state_dict().items() if not torch.equal(value, before[key])}


def test_default_layers_are_the_parameterised_modules_top_down() -> None:
    assert parameterised_layers(small_net()) == ["6", "2", "0"]
    assert parameterised_layers(small_net(batch_norm=True)) == ["7", "3", "1", "0"]


def test_cascading_randomises_cumulatively_and_independent_one_layer_at_a_time() -> None:
    model = small_net()
    trained = snapshot(model)
    layers = parameterised_layers(model)
    cascade = [changed(trained, copy) for _, copy in randomised_models(model, layers, "cascading", seed=0)]
    assert cascade == [{"6"}, {"6", "2"}, {"6", "2", "0"}]
    alone = [changed(trained, copy) for _, copy in randomised_models(model, layers, "independent", seed=0)]
    assert alone == [{"6"}, {"2"}, {"0"}]


def test_the_model_under_test_is_untouched() -> None:
    model = small_net(batch_norm=True)
    model.get_submodule("1").running_mean.fill_(0.5)  # trained statistics that a reset would lose
    trained = snapshot(model)
    parameters = [id(p) for p in model.parameters()]
    for order in ("cascading", "independent"):
        for _, copy in randomised_models(model, parameterised_layers(model), order, seed=3):
            assert copy is not model
            assert all(id(p) not in parameters for p in copy.parameters())
    assert changed(trained, model) == set()
    assert [id(p) for p in model.parameters()] == parameters


def test_layers_of_one_type_and_shape_get_identical_random_weights() -> None:
    # Every layer is re-drawn right after manual_seed(seed + 1), as Quantus does (docs/methods.md).
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4))
    *_, (_, randomised) = randomised_models(model, ["2", "0"], "cascading", seed=5)
    assert torch.equal(randomised[0].weight, randomised[2].weight)
    assert not torch.equal(model[0].weight, randomised[0].weight)


def test_reinitialisation_restores_every_cuda_device_not_only_the_models(monkeypatch: pytest.MonkeyPatch) -> None:
    # manual_seed re-seeds every CUDA device: with CUDA in use, a CPU model must still fork them all.
    forked: list[list[int]] = []

    @contextlib.contextmanager
    def fork_rng(devices: Iterable[int]) -> Iterator[None]:
        forked.append(list(devices))
        yield

    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.random, "fork_rng", fork_rng)
    monkeypatch.setattr(torch, "manual_seed", torch.default_generator.manual_seed)  # no CUDA here
    reinitialise(small_net(), seed=0)
    assert forked == [[0, 1]]


def test_randomisation_is_seeded_and_leaves_the_callers_random_state_alone() -> None:
    model = small_net()
    layers = parameterised_layers(model)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = [snapshot(copy) for _, copy in randomised_models(model, layers, "cascading", seed=7)]
    assert torch.equal(torch.get_rng_state(), state)
    again = [snapshot(copy) for _, copy in randomised_models(model, layers, "cascading", seed=7)]
    other = [snapshot(copy) for _, copy in randomised_models(model, layers, "cascading", seed=8)]
    for a, b, c in zip(first, again, other, strict=True):
        assert all(torch.equal(a[key], b[key]) for key in a)
        assert not all(torch.equal(a[key], c[key]) for key in a)
    # A layer draws the same weights whichever order it is randomised in.
    alone = [snapshot(copy) for _, copy in randomised_models(model, layers, "independent", seed=7)]
    assert torch.equal(alone[1]["2.weight"], first[1]["2.weight"])


def test_a_layer_drawn_alone_gets_the_weights_it_gets_inside_the_model() -> None:
    model = small_net(batch_norm=True)
    inside = deepcopy(model)
    reinitialise(inside.get_submodule("3"), seed=4)
    alone = randomised_state(model, "3", seed=4)
    assert alone.keys() == inside.get_submodule("3").state_dict().keys()
    assert all(torch.equal(value, inside.get_submodule("3").state_dict()[key]) for key, value in alone.items())


@pytest.mark.parametrize("order", ["cascading", "independent"])
def test_a_working_copy_used_before_steps_like_a_fresh_one(order: Order) -> None:
    """A worker keeps one working copy and the drawn layers for every shard: a copy left fully
    randomised by an earlier shard gives the same steps as a fresh deep copy."""
    model = small_net()
    layers = parameterised_layers(model)
    states = [randomised_state(model, layer, seed=2) for layer in layers]
    working = deepcopy(model)
    for _ in randomised_steps(model, working, layers, states, "cascading"):
        pass
    fresh = [snapshot(step) for _, step in randomised_models(model, layers, order, seed=2)]
    reused = [snapshot(step) for _, step in randomised_steps(model, working, layers, states, order)]
    for a, b in zip(fresh, reused, strict=True):
        assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


def test_batch_norm_is_reset_to_the_identity_without_nan() -> None:
    model = small_net(batch_norm=True)
    norm = model.get_submodule("1")
    with torch.no_grad():
        norm.running_mean.uniform_(-1, 1)
        norm.running_var.uniform_(0.5, 2)
        norm.weight.uniform_(-1, 1)
    images = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    for layer, copy in randomised_models(model, parameterised_layers(model), "cascading", seed=0):
        logits = copy(images)
        assert torch.isfinite(logits).all(), layer
    reset = copy.get_submodule("1")
    assert reset.running_mean.eq(0).all() and reset.running_var.eq(1).all()
    assert reset.weight.eq(1).all() and reset.bias.eq(0).all()


def test_a_module_without_reset_parameters_is_named() -> None:
    class Scale(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.factor = nn.Parameter(torch.ones(1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.factor

    model = nn.Sequential(nn.Linear(2, 2), Scale())
    with pytest.raises(TypeError, match=r"module '1' \(Scale\) has parameters but no reset_parameters"):
        reinitialise(model, seed=0)


def test_other_classes_are_seeded_uniform_draws_among_the_others() -> None:
    targets = torch.arange(5).repeat(400)
    indices = range(len(targets))
    others = other_classes(targets, 5, 0, indices)
    assert (others != targets).all() and others.min() >= 0 and others.max() <= 4
    assert torch.equal(others, other_classes(targets, 5, 0, indices))
    assert not torch.equal(others, other_classes(targets, 5, 1, indices))
    counts = torch.bincount(others[targets == 2], minlength=5)
    assert counts[2] == 0 and counts.min().item() == 0 and (counts[[0, 1, 3, 4]] > 70).all()  # 100 each expected
    with pytest.raises(ValueError, match="at least 2 classes"):
        other_classes(torch.zeros(3, dtype=torch.long), 1, 0, range(3))


@given(st.integers(0, 40), st.integers(1, 60), st.integers(2, 9))
def test_a_samples_other_class_depends_on_its_index_not_its_batch(start: int, size: int, classes: int) -> None:
    """Any slice of the samples draws what those samples draw among all of them."""
    targets = torch.arange(100) % classes
    everything = other_classes(targets, classes, 3, range(100))
    part = other_classes(targets[start : start + size], classes, 3, range(start, min(start + size, 100)))
    assert torch.equal(part, everything[start : start + size])


# --- the spec block ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ({"test": "cascading"}, "give at least one of final, every_step, per_layer"),
        ({"test": "efficient", "final": "<= 0.3"}, "test efficient needs score"),
        ({"test": "efficient", "score": ">= 0", "final": "<= 0.3"}, "test efficient takes score and bins, not final"),
        ({"final": "<= 0.3", "score": ">= 0"}, "score and bins go with test: efficient"),
        ({"test": "random_logit", "final": "<= 0.3", "layers": ["0"]}, "test random_logit takes final"),
        (
            {"final": "<= 0.3", "layers": ["classifier"], "per_layer": {"clasifier": "<= 0.5"}},
            "did you mean 'classifier'",
        ),
        ({"final": "<= 0.3", "similarity": "hog"}, "spearman"),
    ],
)
def test_sanity_block_errors(block: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SanityCheck.model_validate(block)


def test_sequential_layer_indices_may_be_written_as_numbers() -> None:
    check = SanityCheck.model_validate({"layers": [10, "features.3"], "per_layer": {10: "<= 0.5"}})
    assert check.layers == ["10", "features.3"] and list(check.per_layer or {}) == ["10"]


def test_sanity_defaults() -> None:
    check = SanityCheck.model_validate({"final": "<= 0.3"})
    assert (check.test, check.layers, check.similarity_name, check.bins) == ("cascading", None, "spearman_abs", 100)
    assert SanityCheck.model_validate({"test": "random_logit", "final": "<= 0.5"}).similarity_name == "ssim"
