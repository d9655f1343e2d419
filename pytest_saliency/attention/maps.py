"""Attention rollout and attention relevance maps of a model on a batch of images."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..tokens import GridLayout, infer_layout, patch_size
from .capture import captured_attention, readout_rows
from .relevance import relevance
from .rollout import HeadFusion, rollout


def attention_map(
    model: nn.Module,
    network: nn.Module,
    images: Tensor,
    targets: Tensor,
    *,
    gradient_weighted: bool,
    head_fusion: HeadFusion = "mean",
    discard_ratio: float = 0.0,
    prefix_tokens: int | None = None,
    grid: tuple[int, int] | None = None,
) -> Tensor:
    """``(N, 1, h, w)`` patch-token maps of ``model`` (whose transformer is ``network``) for
    ``(N, C, H, W)`` images: the readout rows (:func:`~.capture.readout_rows`) of attention
    rollout, or with ``gradient_weighted`` of the attention relevance for the ``(N,)`` targets'
    logits. Raises :class:`~.capture.AttentionError` or
    :class:`~pytest_saliency.tokens.LayoutError`."""
    inputs = images.detach().clone().requires_grad_(gradient_weighted)
    with captured_attention(network) as attentions:
        if gradient_weighted:
            with torch.enable_grad():
                scores = model(inputs).gather(1, targets.view(-1, 1).to(inputs.device)).sum()
                found = torch.autograd.grad(scores, attentions, allow_unused=True)
            gradients = [torch.zeros_like(a) if g is None else g for a, g in zip(attentions, found, strict=True)]
            tokens = relevance([a.detach() for a in attentions], gradients)
        else:
            with torch.no_grad():
                model(inputs)
            tokens = rollout(attentions, head_fusion, discard_ratio)
    shape = (tokens.shape[0], tokens.shape[1], tokens.shape[2])
    layout = infer_layout(
        shape, (images.shape[2], images.shape[3]), patch_size(network), network, prefix_tokens=prefix_tokens, grid=grid
    )
    return read_rows(tokens, layout, readout_rows(network, layout.prefix))


def read_rows(tokens: Tensor, layout: GridLayout, rows: tuple[int, ...]) -> Tensor:
    """``(N, 1, h, w)``: the mean of the ``rows`` of ``(N, T, T)`` token relations (all patch
    rows when ``rows`` is empty) over the patch columns, as the layout's grid."""
    chosen = tokens[:, list(rows)] if rows else tokens[:, layout.prefix :]
    patches = chosen.mean(dim=1)[:, layout.prefix :]
    return patches.reshape(tokens.shape[0], 1, *layout.grid)
