"""Image operations: the Gaussian blur and the Sobel edge map."""

from __future__ import annotations

import pytest
import torch

from pytest_saliency.metrics.image import edge_map, gaussian_blur


@pytest.mark.parametrize("size", [3, 5, 16])  # smaller and larger than the kernel radius
def test_gaussian_blur_preserves_a_constant_image(size: int) -> None:
    constant = torch.full((2, 3, size, size), 0.37)
    blurred = gaussian_blur(constant)
    assert blurred.shape == constant.shape
    torch.testing.assert_close(blurred, constant)


def test_gaussian_blur_spreads_an_impulse_symmetrically() -> None:
    impulse = torch.zeros(1, 1, 21, 21)
    impulse[0, 0, 10, 10] = 1.0
    blurred = gaussian_blur(impulse, sigma=1.5)[0, 0]
    assert blurred.sum().item() == pytest.approx(1.0, abs=1e-5)  # the kernel is normalised
    assert blurred.argmax().item() == 10 * 21 + 10
    torch.testing.assert_close(blurred, blurred.flip(0))
    torch.testing.assert_close(blurred, blurred.t())


def test_edge_map_is_the_sobel_magnitude() -> None:
    images = torch.zeros(1, 2, 6, 6)
    images[:, 0, :, 3:] = 1.0  # a vertical step between columns 2 and 3 in channel 0
    edges = edge_map(images)
    assert edges.shape == images.shape
    assert edges[0, 1].eq(0).all()  # a constant channel has no edges
    assert edges[0, 0, :, [2, 3]].eq(4.0).all()  # Sobel x response to a unit step: 1 + 2 + 1
    assert edges[0, 0, :, [0, 1, 4, 5]].eq(0).all()
