"""ROAD noisy linear imputation (Rong et al., ICML 2022): exactness, edge cases, batching."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_saliency.metrics.imputation import (
    NEIGHBOUR_WEIGHTS,
    linear_impute,
    neighbour_sum,
    noisy_linear_impute,
)


def _reference_impute(image: torch.Tensor, removed: torch.Tensor) -> torch.Tensor:
    """The authors' system built explicitly (one dense matrix per image) and solved directly.

    Follows ``NoisyLinearImputer.setup_sparse_system`` of the ROAD code: diagonal
    ``-(1 - weights of out-of-image neighbours)``, ``+w`` for removed in-image neighbours,
    ``-w * value`` of known in-image neighbours on the right-hand side.
    """
    c, h, w = image.shape
    flat = removed.flatten()
    unknowns = torch.nonzero(flat).flatten().tolist()
    var = {p: i for i, p in enumerate(unknowns)}
    a = torch.zeros(len(unknowns), len(unknowns), dtype=torch.float64)
    b = torch.zeros(len(unknowns), c, dtype=torch.float64)
    img = image.to(torch.float64).reshape(c, -1)
    for i, p in enumerate(unknowns):
        row, col = divmod(p, w)
        total = 1.0
        for (dr, dc), weight in NEIGHBOUR_WEIGHTS:
            r, q = row + dr, col + dc
            if not (0 <= r < h and 0 <= q < w):
                total -= weight
                continue
            other = r * w + q
            if flat[other]:
                a[i, var[other]] = weight
            else:
                b[i] -= weight * img[:, other]
        a[i, i] = -total
    out = img.clone()
    if unknowns:
        out[:, unknowns] = torch.linalg.solve(a, b).T
    return out.reshape(c, h, w)


def _hole(h: int, w: int, rows: slice, cols: slice) -> torch.Tensor:
    removed = torch.zeros(h, w, dtype=torch.bool)
    removed[rows, cols] = True
    return removed


def test_neighbour_weights_are_the_authors() -> None:
    weights = dict(NEIGHBOUR_WEIGHTS)
    assert len(weights) == 8
    assert all(weights[o] == pytest.approx(1 / 6) for o in [(0, 1), (0, -1), (1, 0), (-1, 0)])
    assert all(weights[o] == pytest.approx(1 / 12) for o in [(1, 1), (1, -1), (-1, 1), (-1, -1)])
    assert sum(weights.values()) == pytest.approx(1.0)


def test_neighbour_sum_matches_the_stencil_with_zero_outside() -> None:
    values = torch.arange(12.0).view(1, 3, 4)
    out = neighbour_sum(values)
    padded = torch.nn.functional.pad(values, (1, 1, 1, 1))
    expected = torch.zeros(1, 3, 4)
    for (dr, dc), weight in NEIGHBOUR_WEIGHTS:
        expected += weight * padded[:, 1 + dr : 4 + dr, 1 + dc : 5 + dc]
    torch.testing.assert_close(out, expected)


def test_constant_image_is_reproduced_at_an_interior_hole() -> None:
    images = torch.full((1, 1, 12, 12), 0.7)
    removed = _hole(12, 12, slice(3, 9), slice(2, 10)).unsqueeze(0)
    out = noisy_linear_impute(images, removed, noise_std=0.0)
    torch.testing.assert_close(out, images, atol=1e-5, rtol=0)


@pytest.mark.parametrize("channels", [1, 3])
def test_linear_ramp_is_reproduced_at_interior_holes(channels: int) -> None:
    h, w = 16, 20
    rows = torch.arange(h, dtype=torch.float32).view(h, 1)
    cols = torch.arange(w, dtype=torch.float32).view(1, w)
    ramps = [0.1 + 0.03 * rows - 0.02 * cols, 0.5 - 0.01 * rows + 0.04 * cols, 0.02 * rows + 0.02 * cols]
    images = torch.stack(ramps[:channels]).unsqueeze(0).expand(2, channels, h, w).contiguous()
    removed = torch.stack(
        [
            _hole(h, w, slice(2, 12), slice(3, 15)),  # one large block
            torch.rand(h, w, generator=torch.Generator().manual_seed(1)) < 0.6,  # scattered
        ]
    )
    removed[:, 0, :] = removed[:, -1, :] = False  # interior holes: the border is known
    removed[:, :, 0] = removed[:, :, -1] = False
    out = noisy_linear_impute(images, removed, noise_std=0.0)
    torch.testing.assert_close(out, images, atol=1e-5, rtol=0)


def test_known_pixels_are_untouched() -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(3, 3, 9, 11, generator=generator)
    removed = torch.rand(3, 9, 11, generator=generator) < 0.4
    for noise in (0.0, 0.05):
        out = noisy_linear_impute(images, removed, noise_std=noise, generator=torch.Generator().manual_seed(2))
        keep = (~removed).unsqueeze(1).expand_as(images)
        assert torch.equal(out[keep], images[keep])


def test_matches_the_authors_system_including_border_renormalisation() -> None:
    generator = torch.Generator().manual_seed(3)
    images = torch.rand(4, 2, 7, 6, generator=generator)
    removed = torch.rand(4, 7, 6, generator=generator) < 0.5
    removed[1] = False  # nothing removed
    removed[2, :3, :] = True  # a hole along the top border and into the corners
    out = linear_impute(images, removed)
    for i in range(4):
        torch.testing.assert_close(out[i], _reference_impute(images[i], removed[i]).float(), atol=1e-5, rtol=0)


def test_border_holes_and_fully_removed_images_are_finite() -> None:
    images = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    removed = torch.zeros(3, 8, 8, dtype=torch.bool)
    removed[0, :, :3] = True  # a band along the left border
    removed[1] = True  # the whole image: singular for the authors' solver
    removed[2, 2:6, 2:6] = True  # a fully removed interior region
    out = noisy_linear_impute(images, removed, noise_std=0.0)
    assert torch.isfinite(out).all()
    assert torch.equal(out[1], torch.zeros(3, 8, 8))  # documented: 0 (+ noise)
    noisy = noisy_linear_impute(images, removed, noise_std=0.01, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(noisy).all()
    # A hole in a smooth region stays inside the range of its rim values.
    assert out[2].amin() >= images[2].amin() - 1e-6 and out[2].amax() <= images[2].amax() + 1e-6


def test_each_image_is_solved_independently_of_the_batch() -> None:
    generator = torch.Generator().manual_seed(5)
    images = torch.rand(6, 2, 10, 9, generator=generator)
    removed = torch.rand(6, 10, 9, generator=generator) < torch.linspace(0.0, 1.0, 6).view(6, 1, 1)
    together = linear_impute(images, removed)
    alone = torch.cat([linear_impute(images[i : i + 1], removed[i : i + 1]) for i in range(6)])
    assert torch.equal(together, alone)


def test_noise_has_the_requested_scale_and_is_seeded() -> None:
    images = torch.full((2, 1, 40, 40), 0.5)
    removed = torch.zeros(2, 40, 40, dtype=torch.bool)
    removed[:, 5:35, 5:35] = True
    a = noisy_linear_impute(images, removed, noise_std=0.02, generator=torch.Generator().manual_seed(7))
    b = noisy_linear_impute(images, removed, noise_std=0.02, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    residual = (a - images)[removed.unsqueeze(1)]
    assert residual.std().item() == pytest.approx(0.02, rel=0.1)
    assert abs(residual.mean().item()) < 0.002


def test_half_precision_inputs_keep_their_dtype() -> None:
    images = torch.rand(1, 1, 8, 8).to(torch.bfloat16)
    removed = _hole(8, 8, slice(2, 6), slice(2, 6)).unsqueeze(0)
    out = linear_impute(images, removed)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        linear_impute(torch.zeros(3, 4, 4), torch.zeros(3, 4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="removed must be"):
        linear_impute(torch.zeros(1, 1, 4, 4), torch.zeros(1, 4, 5, dtype=torch.bool))
    with pytest.raises(TypeError, match="floating"):
        linear_impute(torch.zeros(1, 1, 4, 4, dtype=torch.long), torch.zeros(1, 4, 4, dtype=torch.bool))


@settings(max_examples=25, deadline=None)
@given(
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    level=st.floats(-5, 5),
    seed=st.integers(0, 2**16),
)
def test_any_mask_on_a_constant_image_gives_the_constant(h: int, w: int, level: float, seed: int) -> None:
    removed = torch.rand(1, h, w, generator=torch.Generator().manual_seed(seed)) < 0.7
    if bool(removed.all()):
        removed[0, 0, 0] = False  # keep one known pixel, else the documented 0 fill applies
    images = torch.full((1, 2, h, w), level)
    torch.testing.assert_close(linear_impute(images, removed), images, atol=1e-4, rtol=1e-5)
