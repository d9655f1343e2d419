"""CDEP: Contextual Decomposition Explanation Penalization.

Source: L. Rieger, C. Singh, W. J. Murdoch, B. Yu, "Interpretations are useful: penalizing
explanations to align neural networks with prior knowledge", ICML 2020, and the authors' code
(github.com/laura-rieger/deep-explanation-penalization). See docs/methods.md#cdep-penalty.

The training loss is ``cross_entropy + λ · cdep_penalty(model, x, region)``, where the region is
an input area the model must NOT use (a decoy patch, a ruler, a watermark). The penalty is the
mean over samples and classes of ``softmax([β_c, γ_c])[0] = sigmoid(β_c - γ_c)``, with ``(β, γ)``
the contextual decomposition (:mod:`pytest_saliency.metrics.decomposition`) of the logits into
the region's part and the rest.

That is the paper's form (``form="softmax"``). It has a loophole a network finds readily: softmax
over the classes ignores a shift common to all logits, while ``sigmoid(β_c − γ_c)`` does not, so
adding the same large amount to every logit's ``γ`` part drives the penalty to 0 and leaves the
shortcut in place (on the shipped shapes data the CDEP-trained model did exactly this; see the
README's "Remedies"). ``form="centred"`` closes it. It decomposes with the *complement* of the
region as the feature group, so ``γ`` holds what the pixels outside the region cannot explain on
their own: the region and all its interactions with the rest (CD's ReLU rule books the
interactions to ``γ``). It penalises the mean over classes of ``γ̃_c²``, the squared class-centred
``γ``: the part of the logits that moves the softmax and needs the region. A common shift cancels
in the centring, and reading the region through an interaction is penalised too.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from pytest_saliency.metrics.decomposition import contextual_decomposition

__all__ = ["cdep_penalty", "decoy_corner_masks"]

Reduction = Literal["mean", "sum", "none"]
Form = Literal["softmax", "centred"]


def cdep_penalty(
    model: nn.Module, inputs: Tensor, region_mask: Tensor, *, reduction: Reduction = "mean", form: Form = "softmax"
) -> Tensor:
    """The CDEP explanation penalty of ``region_mask`` (differentiable w.r.t. the parameters).

    Args:
        model: a model contextual decomposition supports (its train/eval mode is respected).
        inputs: ``(N, C, H, W)`` images.
        region_mask: the region that must not matter, ``(H, W)``, ``(N, H, W)`` or
            ``(N, C, H, W)``, bool or float.
        reduction: ``"mean"`` (over samples and classes, the paper's loss), ``"sum"`` (of the
            per-sample values) or ``"none"``.
        form: ``"softmax"``, the paper's ``softmax([β_c, γ_c])[0]``; or ``"centred"``, ``γ̃_c²``
            of the decomposition by the region's complement (module docs). The centred form is
            in squared logit units: its weight wants to be about ten times smaller (10 where the
            paper's form takes 100).

    Returns:
        A scalar, or ``(N,)`` per-sample means over classes.

    An empty region carries no importance by definition, so a sample whose region is empty
    contributes exactly 0. (Taken literally the formula would give ``softmax([0, γ_c])[0] =
    sigmoid(-γ_c)`` there, which is not 0 and would push the logits around for a region that does
    not exist.) Under ``"mean"`` such samples still count in the denominator.
    """
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if form not in ("softmax", "centred"):
        raise ValueError(f"form must be 'softmax' or 'centred', got {form!r}")
    mask = torch.as_tensor(region_mask, device=inputs.device)
    if form == "softmax":
        beta, gamma = contextual_decomposition(model, inputs, mask, differentiable=True)
        share = torch.softmax(torch.stack([beta, gamma], dim=0), dim=0)[0]  # (N, K)
        per_sample = share.flatten(1).mean(dim=1)
    else:
        _, outside_cannot_explain = contextual_decomposition(model, inputs, mask.eq(0), differentiable=True)
        centred = outside_cannot_explain - outside_cannot_explain.mean(dim=1, keepdim=True)
        per_sample = centred.pow(2).flatten(1).mean(dim=1)
    if mask.dim() >= inputs.dim() - 1:  # (N, H, W) or (N, C, H, W): one region per sample
        nonempty = mask.flatten(1).ne(0).any(dim=1)
    else:  # (H, W): one region for the batch
        nonempty = mask.ne(0).any().reshape(1)
    per_sample = torch.where(nonempty.expand(per_sample.shape[0]), per_sample, torch.zeros_like(per_sample))
    if reduction == "none":
        return per_sample
    if reduction == "sum":
        return per_sample.sum()
    return per_sample.mean()


def decoy_corner_masks(height: int, width: int, patch: int = 5, *, separate: bool = False) -> Tensor:
    """The four ``patch × patch`` corners of an ``height × width`` image (the Decoy-MNIST recipe).

    Returns ``(H, W)`` bool, True in all four corners (one region penalised as a group), or with
    ``separate=True`` a ``(4, H, W)`` stack (top-left, top-right, bottom-left, bottom-right), as
    the CDEP authors penalise each corner on its own and sum the penalties.
    """
    if patch < 1 or patch > min(height, width):
        raise ValueError(f"patch must be in [1, {min(height, width)}], got {patch}")
    corners = torch.zeros(4, height, width, dtype=torch.bool)
    corners[0, :patch, :patch] = True
    corners[1, :patch, width - patch :] = True
    corners[2, height - patch :, :patch] = True
    corners[3, height - patch :, width - patch :] = True
    return corners if separate else corners.any(dim=0)
