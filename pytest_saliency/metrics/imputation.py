"""Noisy linear imputation of removed pixels (ROAD).

Rong, Leemann, Borisov, Kasneci, Kasneci: "A Consistent and Efficient Evaluation Strategy for
Attribution Methods", ICML 2022 (ROAD: RemOve And Debias), and the authors' code
(``road/imputations.py``, class ``NoisyLinearImputer``, github.com/tleemann/road_evaluation).

Every removed pixel ``i`` is set to the weighted mean of its 8 neighbours ``j``: weight 1/6 for
the 4 direct neighbours, 1/12 for the 4 diagonal ones. Known neighbours contribute their values;
removed neighbours are unknowns of the same linear system, so a hole is filled by a smooth
(discrete harmonic) interpolation of its rim. Neighbours outside the image are dropped and the
remaining weights renormalised, exactly as in the authors' code: their system matrix has the
diagonal ``-(1 - sum of the weights of the out-of-image neighbours)``, i.e. the equation of a
removed pixel ``i`` is

    S_i * x_i - sum_{j removed, in image} w_ij * x_j = sum_{j known, in image} w_ij * v_j,
    S_i = sum_{j in image} w_ij   (1 inside the image, less on the border),

which says ``x_i = weighted mean of its in-image neighbours``. Then ``N(0, noise_std^2)`` noise
is added to the imputed pixels only (the authors' default ``noise=0.01``, absolute units). The
system depends only on the mask, so every channel is solved with the same matrix.

The authors build one scipy sparse matrix per image and call ``spsolve``. Here the whole batch
(every image and channel) is solved at once, in torch, on the inputs' device: the matrix above is
symmetric (the neighbour weights are symmetric) and positive definite as soon as the image keeps
one known pixel (every hole then touches a known pixel), so a matrix-free conjugate-gradient
solver converges to the same solution. The operator is the 3x3 neighbour stencil (zero outside the
image) restricted to the removed pixels. Iteration stops when, for every system, the residual
norm is at most ``tol`` (default ``1e-6``) times the norm of its right-hand side, or after
``max_iter`` iterations (default ``4 * (H + W) + 50``; CG needs about one iteration per pixel of
hole diameter). Compared with scipy's ``spsolve`` on the same system the solution agrees to about
``1e-5`` in float32 (see ``tests/unit/metrics/test_fidelity_quantus.py``).

Edge case: when every pixel of an image is removed the authors' system is singular. Here its
right-hand side is zero, CG started at zero stays at zero, and the imputed image is ``0 + noise``:
finite, and documented rather than an exception.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["NEIGHBOUR_WEIGHTS", "linear_impute", "noisy_linear_impute", "neighbour_sum"]

#: ``((row offset, column offset), weight)`` of the 8 neighbours, as in the ROAD authors' code.
NEIGHBOUR_WEIGHTS: tuple[tuple[tuple[int, int], float], ...] = (
    ((1, 1), 1 / 12),
    ((0, 1), 1 / 6),
    ((-1, 1), 1 / 12),
    ((1, -1), 1 / 12),
    ((0, -1), 1 / 6),
    ((-1, -1), 1 / 12),
    ((1, 0), 1 / 6),
    ((-1, 0), 1 / 6),
)


def _box121(values: Tensor) -> Tensor:
    """``[1, 2, 1]^T [1, 2, 1]`` sum over each pixel's 3 x 3 window, zero outside the image.

    Separable shifted in-place adds on ``(..., H, W)``: on CPU several times faster than a
    one-channel ``conv2d``.
    """
    rows = values * 2.0
    rows[..., 1:] += values[..., :-1]
    rows[..., :-1] += values[..., 1:]
    out = rows * 2.0
    out[..., 1:, :] += rows[..., :-1, :]
    out[..., :-1, :] += rows[..., 1:, :]
    return out


def neighbour_sum(values: Tensor) -> Tensor:
    """``sum_j w_j * values[i + d_j]`` over the 8 neighbours, zero outside the image.

    ``values``: ``(..., H, W)``. The stencil ``[[1, 2, 1], [2, 0, 2], [1, 2, 1]] / 12`` is
    ``([1, 2, 1]^T [1, 2, 1] - 4 * centre) / 12``.
    """
    return _box121(values).sub_(values, alpha=4.0).mul_(1.0 / 12.0)


def linear_impute(
    images: Tensor,
    removed: Tensor,
    *,
    tol: float = 1e-6,
    max_iter: int | None = None,
) -> Tensor:
    """Noise-free ROAD linear imputation of a batch (see the module docstring).

    Args:
        images: ``(N, C, H, W)`` floating-point tensor.
        removed: ``(N, H, W)`` bool tensor, True where a pixel (all its channels) is removed.
        tol: stop when ``||r|| <= tol * ||b||`` for every image and channel.
        max_iter: cap on CG iterations; default ``4 * (H + W) + 50``.

    Returns:
        ``(N, C, H, W)`` tensor in the images' dtype and on their device: known pixels unchanged,
        removed pixels the solution of the ROAD linear system.
    """
    if images.dim() != 4:
        raise ValueError(f"images must be (N, C, H, W), got {tuple(images.shape)}")
    n, c, h, w = images.shape
    if tuple(removed.shape) != (n, h, w):
        raise ValueError(f"removed must be (N, H, W) = {(n, h, w)}, got {tuple(removed.shape)}")
    if not images.is_floating_point():
        raise TypeError("images must be a floating-point tensor")
    removed = removed.to(device=images.device, dtype=torch.bool)
    if n == 0 or not bool(removed.any()):
        return images.clone()
    dtype = images.dtype
    work = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    m = n * c
    values = images.to(work).reshape(m, h, w)
    unknown = removed.unsqueeze(1).expand(n, c, h, w).reshape(m, h, w).to(work)
    known_values = values * (1.0 - unknown)
    # S_i: the sum of the weights of the in-image neighbours. With the unscaled stencil
    # B = [1,2,1]^T [1,2,1]:  A v = U * (S v - (B v - 4 v) / 12) = coef * v - uq * B v.
    weight_sum = neighbour_sum(torch.ones(1, h, w, dtype=work, device=images.device))
    coef = unknown * (weight_sum + 1.0 / 3.0)
    uq = unknown * (1.0 / 12.0)

    def apply(v: Tensor) -> Tensor:
        return torch.mul(coef, v).addcmul_(uq, _box121(v), value=-1.0)

    def dot(a: Tensor, b: Tensor) -> Tensor:
        products: Tensor = torch.linalg.vecdot(a.view(m, -1), b.view(m, -1))
        return products.view(m, 1, 1)

    b = neighbour_sum(known_values).mul_(unknown)
    x = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rr = dot(r, r)
    threshold = rr * (tol * tol)
    zero = torch.zeros((), dtype=work, device=images.device)
    limit = max_iter if max_iter is not None else 4 * (h + w) + 50
    check_every = 1 if images.device.type == "cpu" else 8
    # A system stops (alpha = beta = 0) once its residual is below its threshold, so each system
    # takes exactly the iterations it would take alone: the result does not depend on which
    # other images share the batch. An empty system (no removed pixel, rr = 0) never starts.
    live = rr > threshold
    for iteration in range(limit):
        if iteration % check_every == 0 and not bool(live.any()):
            break
        ap = apply(p)
        pap = dot(p, ap)
        active = live & (pap > 0)
        alpha = torch.where(active, rr / pap, zero)
        x.addcmul_(alpha, p)
        r.addcmul_(alpha, ap, value=-1.0)
        rr_new = dot(r, r)
        beta = torch.where(active, rr_new / rr, zero)
        p.mul_(beta).add_(r)
        rr = rr_new
        live = active & (rr > threshold)
    out = known_values.add_(x)
    return out.reshape(n, c, h, w).to(dtype)


def noisy_linear_impute(
    images: Tensor,
    removed: Tensor,
    noise_std: float = 0.01,
    generator: torch.Generator | None = None,
) -> Tensor:
    """ROAD noisy linear imputation (Rong et al., ICML 2022) of a whole batch at once.

    Args:
        images: ``(N, C, H, W)`` floating-point tensor.
        removed: ``(N, H, W)`` bool tensor, True where the pixel (all channels) is removed.
        noise_std: standard deviation of the Gaussian noise added to the imputed pixels (absolute
            units; ROAD's default 0.01). 0 gives the plain linear imputation.
        generator: optional ``torch.Generator`` for the noise, on the images' device.

    Returns:
        ``(N, C, H, W)``: known pixels unchanged; each removed pixel the weighted mean of its
        in-image 8 neighbours (1/6 direct, 1/12 diagonal, renormalised at the border as in the
        authors' code), solved jointly over each hole with batched conjugate gradients, plus
        ``N(0, noise_std^2)`` noise. See the module docstring for the system and the solver.
    """
    out = linear_impute(images, removed)
    if noise_std:
        noise = torch.randn(out.shape, generator=generator, device=out.device, dtype=out.dtype)
        mask = removed.to(device=out.device, dtype=torch.bool).unsqueeze(1)
        out = torch.where(mask, out + noise_std * noise, out)
    return out
