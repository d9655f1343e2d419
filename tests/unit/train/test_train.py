"""Training remedies: saliency guided training (Ismail et al. 2021) and the CDEP penalty."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pytest_saliency.metrics.decomposition import contextual_decomposition
from pytest_saliency.train import (
    cdep_penalty,
    decoy_corner_masks,
    mask_lowest_saliency,
    saliency_guided_loss,
    saliency_guided_step,
    saliency_guided_terms,
)
from pytest_saliency.train.saliency_guided import input_saliency, lowest_saliency_mask


def _tiny_model(seed: int = 0, batch_norm: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Conv2d(1, 4, 3, padding=1)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(4))
    layers += [nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 4 * 4, 3)]
    return nn.Sequential(*layers)


def _data(n: int = 16, seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 8, 8, generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    x[torch.arange(n), 0, 2 * y, 2 * y] += 2.0  # a learnable signal
    return x, y


# --------------------------------------------------------------------------------------------
# Saliency guided training


def test_lowest_saliency_mask_picks_the_k_lowest_per_sample() -> None:
    sal = torch.stack([torch.arange(20.0), torch.arange(20.0).flip(0)]).view(2, 1, 4, 5)
    mask = lowest_saliency_mask(sal, 0.26)  # floor(0.26 * 20) = 5
    assert mask.shape == sal.shape and mask.dtype == torch.bool
    assert mask.flatten(1).sum(dim=1).tolist() == [5, 5]
    assert torch.equal(mask.flatten(1)[0], torch.arange(20) < 5)
    assert torch.equal(mask.flatten(1)[1], torch.arange(20) >= 15)
    assert not lowest_saliency_mask(sal, 0.0).any()
    assert lowest_saliency_mask(sal, 1.0).all()
    with pytest.raises(ValueError):
        lowest_saliency_mask(sal, 1.5)


@pytest.mark.parametrize("fill", ["uniform", "channel_mean"])
def test_mask_lowest_saliency_fills(fill: str) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 6, 6, generator=g) * torch.tensor([1.0, 2.0, 3.0, 4.0]).view(4, 1, 1, 1)
    sal = torch.rand(4, 3, 6, 6, generator=g)
    out = mask_lowest_saliency(x, sal, 0.25, fill=fill, generator=torch.Generator().manual_seed(1))  # type: ignore[arg-type]
    mask = lowest_saliency_mask(sal, 0.25)
    assert torch.equal(out[~mask], x[~mask])
    assert mask.flatten(1).sum(1).tolist() == [27] * 4
    if fill == "uniform":
        low = x.flatten(1).amin(1).view(4, 1, 1, 1).expand_as(x)
        high = x.flatten(1).amax(1).view(4, 1, 1, 1).expand_as(x)
        assert torch.all(out[mask] >= low[mask]) and torch.all(out[mask] <= high[mask])
        assert not torch.equal(out[mask], x[mask])
    else:
        means = x.mean(dim=(2, 3), keepdim=True).expand_as(x)
        torch.testing.assert_close(out[mask], means[mask])
    # vectorised over the batch: one sample alone gives the same result (deterministic fill)
    if fill == "channel_mean":
        alone = mask_lowest_saliency(x[2:3], sal[2:3], 0.25, fill="channel_mean")
        torch.testing.assert_close(alone[0], out[2])


def test_input_saliency_is_the_gradient_of_the_target_log_probability() -> None:
    model = _tiny_model().double()
    x, y = _data(4)
    x = x.double()
    sal, logits = input_saliency(model, x, y, absolute=False)
    xr = x.clone().requires_grad_(True)
    lp = F.log_softmax(model(xr), dim=1)[torch.arange(4), y].sum()
    (expected,) = torch.autograd.grad(lp, xr)
    torch.testing.assert_close(sal, expected)
    assert logits.requires_grad
    abs_sal, _ = input_saliency(model, x, y)
    torch.testing.assert_close(abs_sal, expected.abs())


def test_kl_term_is_zero_when_fraction_is_zero() -> None:
    model = _tiny_model()
    x, y = _data()
    ce, kl = saliency_guided_terms(model, x, y, fraction=0.0)
    assert kl.item() == 0.0
    assert torch.equal(saliency_guided_loss(model, x, y, fraction=0.0), ce)
    torch.testing.assert_close(ce, F.cross_entropy(model(x), y))


def test_kl_direction_is_kl_of_clean_against_masked() -> None:
    model = _tiny_model().double()
    x, y = _data(8)
    x = x.double()
    ce, kl = saliency_guided_terms(model, x, y, fraction=0.3, generator=torch.Generator().manual_seed(5))
    sal, _ = input_saliency(model, x, y)
    masked = mask_lowest_saliency(x, sal, 0.3, generator=torch.Generator().manual_seed(5))
    p = F.softmax(model(x), dim=1)
    q = F.softmax(model(masked), dim=1)
    expected = (p * (p.log() - q.log())).sum(dim=1).mean()  # KL(f(x) ‖ f(x̃))
    reverse = (q * (q.log() - p.log())).sum(dim=1).mean()
    torch.testing.assert_close(kl, expected)
    assert not math.isclose(kl.item(), reverse.item(), rel_tol=1e-6)
    loss = saliency_guided_loss(model, x, y, fraction=0.3, kl_weight=2.5, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(loss, ce + 2.5 * kl)


def test_kl_term_gradient_reaches_the_parameters() -> None:
    model = _tiny_model()
    x, y = _data()
    _, kl = saliency_guided_terms(model, x, y, fraction=0.5, generator=torch.Generator().manual_seed(0))
    kl.backward()
    assert kl.item() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("fill", ["uniform", "channel_mean"])
def test_saliency_guided_steps_decrease_the_loss(fill: str) -> None:
    model = _tiny_model(batch_norm=True)
    x, y = _data(32)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    options = {"fraction": 0.2, "fill": fill}

    model.train()  # batch statistics throughout, so the loss before and after is comparable

    def evaluate() -> float:
        return saliency_guided_loss(model, x, y, generator=torch.Generator().manual_seed(0), **options).item()  # type: ignore[arg-type]

    before = evaluate()
    losses = [
        saliency_guided_step(model, optimizer, x, y, generator=torch.Generator().manual_seed(i), **options)
        for i in range(8)
    ]
    assert all(isinstance(v, float) and math.isfinite(v) for v in losses)
    after = evaluate()
    assert after < before


# --------------------------------------------------------------------------------------------
# CDEP


def test_decoy_corner_masks() -> None:
    m = decoy_corner_masks(28, 28, patch=5)
    assert m.shape == (28, 28) and m.dtype == torch.bool
    assert m.sum().item() == 4 * 25
    assert m[0, 0] and m[0, 27] and m[27, 0] and m[27, 27] and not m[14, 14] and not m[5, 5]
    sep = decoy_corner_masks(10, 12, patch=3, separate=True)
    assert sep.shape == (4, 10, 12)
    assert sep.flatten(1).sum(1).tolist() == [9, 9, 9, 9]
    assert torch.equal(sep.any(0), decoy_corner_masks(10, 12, patch=3))
    assert sep[1, 0, 11] and sep[2, 9, 0] and sep[3, 9, 11]
    with pytest.raises(ValueError):
        decoy_corner_masks(4, 4, patch=5)


def test_cdep_penalty_value() -> None:
    model = _tiny_model().double().eval()
    x, _ = _data(6)
    x = x.double()
    region = decoy_corner_masks(8, 8, patch=2)
    beta, gamma = contextual_decomposition(model, x, region)
    expected = torch.sigmoid(beta - gamma).mean(dim=1)
    torch.testing.assert_close(cdep_penalty(model, x, region, reduction="none"), expected)
    torch.testing.assert_close(cdep_penalty(model, x, region), expected.mean())
    torch.testing.assert_close(cdep_penalty(model, x, region, reduction="sum"), expected.sum())


def test_centred_cdep_penalty_value() -> None:
    model = _tiny_model().double().eval()
    x, _ = _data(6)
    x = x.double()
    region = decoy_corner_masks(8, 8, patch=2)
    _, gamma = contextual_decomposition(model, x, ~region)  # what the rest cannot explain alone
    expected = (gamma - gamma.mean(dim=1, keepdim=True)).pow(2).mean(dim=1)
    torch.testing.assert_close(cdep_penalty(model, x, region, reduction="none", form="centred"), expected)
    torch.testing.assert_close(cdep_penalty(model, x, region, form="centred"), expected.mean())
    with pytest.raises(ValueError, match="form must be 'softmax' or 'centred'"):
        cdep_penalty(model, x, region, form="centered")  # type: ignore[arg-type]


def test_a_common_logit_shift_evades_the_softmax_form_but_not_the_centred_one() -> None:
    """The loophole the centred form closes: softmax ignores a shift of every logit, so a network
    may add the same large amount to every logit. Fed from the features of the whole image, the
    shift lands mostly in ``γ`` and drives the paper's penalty towards 0 without changing a
    single prediction."""
    model = _tiny_model().double().eval()
    x, _ = _data(6)
    x = x.double()
    region = decoy_corner_masks(8, 8, patch=2)
    with torch.no_grad():  # (CD splits a bias by the sizes of the parts, which the shift changes)
        model[-1].bias.zero_()
    before = {form: cdep_penalty(model, x, region, form=form).item() for form in ("softmax", "centred")}
    predictions = model(x).argmax(dim=1)
    with torch.no_grad():
        model[-1].weight += 5.0  # every class gains 5 x the sum of the features
    assert torch.equal(model(x).argmax(dim=1), predictions)
    assert cdep_penalty(model, x, region, form="softmax").item() < 0.01 < before["softmax"]
    assert cdep_penalty(model, x, region, form="centred").item() == pytest.approx(before["centred"], rel=1e-9)
    assert before["centred"] > 0


@pytest.mark.parametrize("form", ["softmax", "centred"])
@pytest.mark.parametrize("batch_norm", [False, True])
def test_cdep_penalty_is_differentiable(batch_norm: bool, form: str) -> None:
    model = _tiny_model(batch_norm=batch_norm).train()
    x, _ = _data()
    penalty = cdep_penalty(model, x, decoy_corner_masks(8, 8, patch=2), form=form)  # type: ignore[arg-type]
    assert penalty.requires_grad and penalty.item() > 0
    assert form == "centred" or penalty.item() < 1
    penalty.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    assert any(p.grad.abs().sum() > 0 for p in model.parameters())  # type: ignore[union-attr]


@pytest.mark.parametrize("form", ["softmax", "centred"])
def test_cdep_penalty_is_exactly_zero_for_an_empty_region(form: str) -> None:
    model = _tiny_model()
    x, _ = _data(4)
    empty = torch.zeros(8, 8, dtype=torch.bool)
    penalty = cdep_penalty(model, x, empty, form=form)  # type: ignore[arg-type]
    assert penalty.item() == 0.0
    penalty.backward()  # still part of the graph
    assert all(p.grad is not None and p.grad.abs().sum() == 0 for p in model.parameters())
    per_sample = torch.zeros(4, 8, 8, dtype=torch.bool)
    per_sample[1, :2, :2] = True
    values = cdep_penalty(model, x, per_sample, reduction="none", form=form)  # type: ignore[arg-type]
    assert values.shape == (4,)
    assert values[0].item() == values[2].item() == values[3].item() == 0.0
    assert values[1].item() > 0
    with pytest.raises(ValueError):
        cdep_penalty(model, x, empty, reduction="max")  # type: ignore[arg-type]


@pytest.mark.parametrize("form", ["softmax", "centred"])
def test_training_on_the_cdep_penalty_decreases_it(form: str) -> None:
    model = _tiny_model()
    x, _ = _data(16)
    region = decoy_corner_masks(8, 8, patch=2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = cdep_penalty(model, x, region, form=form).item()  # type: ignore[arg-type]
    for _ in range(10):
        optimizer.zero_grad()
        cdep_penalty(model, x, region, form=form).backward()  # type: ignore[arg-type]
        optimizer.step()
    after = cdep_penalty(model, x, region, form=form).item()  # type: ignore[arg-type]
    assert after < before
