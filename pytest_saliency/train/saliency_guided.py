"""Saliency guided training.

Source: A. A. Ismail, H. Corrada Bravo, S. Feizi, "Improving Deep Learning Interpretability by
Saliency Guided Training", NeurIPS 2021, and the authors' code
(github.com/ayaabdelsalam91/saliency_guided_training). See docs/methods.md#saliency-guided-training.

Per batch:

1. ``g = ∂ log p(y | x) / ∂x``, the gradient of the target's log-probability w.r.t. the input
   (absolute value by default, signed with ``absolute=False``);
2. the ``k = floor(fraction · C · H · W)`` input features with the lowest ``g`` of each sample are
   replaced (uniform noise in ``[min(x), max(x)]`` of that sample, or the sample's per-channel
   mean), giving ``x̃``, which is detached;
3. ``loss = CE(f(x), y) + λ · KL(f(x) ‖ f(x̃))`` with ``KL(p ‖ q) = Σ_c p_c (log p_c − log q_c)``,
   ``p = softmax(f(x))``, ``q = softmax(f(x̃))``, averaged over the batch. This is the direction
   the paper writes; ``torch.nn.functional.kl_div(input, target)`` computes
   ``KL(target ‖ input)``, so it is called as ``kl_div(log q, log p, log_target=True)``.

Everything is vectorised over the batch (``topk`` + ``scatter``); the clean forward pass is shared
by the saliency gradient and the cross-entropy, so a step costs two forward passes.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal, TypedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "input_saliency",
    "lowest_saliency_mask",
    "mask_lowest_saliency",
    "saliency_guided_loss",
    "saliency_guided_step",
    "saliency_guided_terms",
]

Fill = Literal["uniform", "channel_mean"]


def _check_targets(targets: Tensor, n: int, device: torch.device) -> Tensor:
    t = torch.as_tensor(targets, device=device, dtype=torch.long)
    if t.shape != (n,):
        raise ValueError(f"targets must be ({n},) class indices, got shape {tuple(t.shape)}")
    return t


def input_saliency(
    model: nn.Module, inputs: Tensor, targets: Tensor, *, absolute: bool = True
) -> tuple[Tensor, Tensor]:
    """Gradient of the target's log-probability w.r.t. the input, and the logits of that pass.

    ``inputs``: ``(N, ...)``; ``targets``: ``(N,)``. Returns ``(saliency, logits)``: ``saliency``
    has the inputs' shape and no graph; ``logits`` ``(N, K)`` keeps its graph to the model's
    parameters so the caller can reuse the forward pass for its loss.
    """
    x = inputs.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        t = _check_targets(targets, logits.shape[0], logits.device)
        log_p = F.log_softmax(logits, dim=1).gather(1, t.unsqueeze(1)).sum()
        (grad,) = torch.autograd.grad(log_p, x, retain_graph=True)
    return (grad.abs() if absolute else grad), logits


def lowest_saliency_mask(saliency: Tensor, fraction: float) -> Tensor:
    """Bool mask, True at the ``floor(fraction · D)`` lowest values of each sample's saliency.

    ``saliency``: ``(N, ...)`` with ``D`` features per sample. Returns a bool tensor of the same
    shape. Ties are broken by ``torch.topk``.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    flat = saliency.flatten(1)
    k = math.floor(fraction * flat.shape[1])
    mask = torch.zeros_like(flat, dtype=torch.bool)
    if k > 0:
        idx = flat.topk(k, dim=1, largest=False).indices
        mask.scatter_(1, idx, True)
    return mask.view_as(saliency)


def mask_lowest_saliency(
    inputs: Tensor,
    saliency: Tensor,
    fraction: float = 0.1,
    *,
    fill: Fill = "uniform",
    generator: torch.Generator | None = None,
) -> Tensor:
    """Replace each sample's lowest-saliency features; returns ``x̃`` (detached, inputs' shape).

    ``inputs``, ``saliency``: ``(N, C, H, W)`` (or ``(N, ...)`` for ``fill="uniform"``).
    ``fill="uniform"``: uniform noise in ``[min(x_n), max(x_n)]`` of each sample;
    ``fill="channel_mean"``: the sample's mean of that channel over the spatial dimensions.
    ``generator`` seeds the noise (it must live on the inputs' device).
    """
    if saliency.shape != inputs.shape:
        raise ValueError(f"saliency shape {tuple(saliency.shape)} differs from inputs shape {tuple(inputs.shape)}")
    x = inputs.detach()
    mask = lowest_saliency_mask(saliency, fraction)
    if fill == "uniform":
        flat = x.flatten(1)
        low = flat.amin(dim=1).view(-1, *([1] * (x.dim() - 1)))
        high = flat.amax(dim=1).view(-1, *([1] * (x.dim() - 1)))
        noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        replacement = low + (high - low) * noise
    elif fill == "channel_mean":
        if x.dim() < 3:
            raise ValueError("fill='channel_mean' needs (N, C, ...) inputs with spatial dimensions")
        replacement = x.mean(dim=tuple(range(2, x.dim())), keepdim=True).expand_as(x)
    else:
        raise ValueError(f"fill must be 'uniform' or 'channel_mean', got {fill!r}")
    return torch.where(mask, replacement, x)


def saliency_guided_terms(
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    *,
    fraction: float = 0.1,
    fill: Fill = "uniform",
    absolute: bool = True,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """The two terms of the saliency guided loss: ``(CE(f(x), y), KL(f(x) ‖ f(x̃)))``.

    ``inputs``: ``(N, C, H, W)``; ``targets``: ``(N,)`` class indices. Both terms are scalars
    (batch means) with gradients to the model's parameters. With ``fraction`` so small that no
    feature is masked, ``x̃ = x`` and the KL term is exactly 0 (no second forward pass runs).
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    n_features = inputs[0].numel() if inputs.shape[0] else 0
    if math.floor(fraction * n_features) == 0:
        logits = model(inputs)
        t = _check_targets(targets, logits.shape[0], logits.device)
        ce = F.cross_entropy(logits, t)
        return ce, ce.new_zeros(())
    saliency, logits = input_saliency(model, inputs, targets, absolute=absolute)
    t = _check_targets(targets, logits.shape[0], logits.device)
    ce = F.cross_entropy(logits, t)
    masked = mask_lowest_saliency(inputs, saliency, fraction, fill=fill, generator=generator)
    masked_logits = model(masked)
    # kl_div(input, target) = KL(target ‖ input): input = log q = log f(x̃), target = log p = log f(x).
    kl = F.kl_div(
        F.log_softmax(masked_logits, dim=1), F.log_softmax(logits, dim=1), reduction="batchmean", log_target=True
    )
    return ce, kl


def saliency_guided_loss(
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    *,
    fraction: float = 0.1,
    kl_weight: float = 1.0,
    fill: Fill = "uniform",
    absolute: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Saliency guided training loss ``CE(f(x), y) + kl_weight · KL(f(x) ‖ f(x̃))`` (a scalar).

    ``inputs``: ``(N, C, H, W)``; ``targets``: ``(N,)``. ``fraction``: share of the
    ``C · H · W`` input features masked per sample (the paper's default 0.1); ``fill``,
    ``absolute``, ``generator``: see :func:`mask_lowest_saliency` and :func:`input_saliency`.
    The model's train/eval mode is left as it is.
    """
    if kl_weight == 0:
        fraction = 0.0
    ce, kl = saliency_guided_terms(
        model, inputs, targets, fraction=fraction, fill=fill, absolute=absolute, generator=generator
    )
    return ce + kl_weight * kl


class LossOptions(TypedDict, total=False):
    """The keywords of :func:`saliency_guided_loss`, which :func:`saliency_guided_step` passes on."""

    fraction: float
    kl_weight: float
    fill: Fill
    absolute: bool
    generator: torch.Generator | None


def saliency_guided_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    inputs: Tensor,
    targets: Tensor,
    **options: Unpack[LossOptions],
) -> float:
    """One optimiser step on :func:`saliency_guided_loss` (``options`` are its keywords).

    Returns the loss before the step, as a float.
    """
    optimizer.zero_grad(set_to_none=True)
    loss = saliency_guided_loss(model, inputs, targets, **options)
    loss.backward()  # type: ignore[no-untyped-call]  # torch leaves Tensor.backward unannotated
    optimizer.step()
    return float(loss.detach())
