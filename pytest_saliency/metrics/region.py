"""How much a named region (a decoy patch, a ruler, a box) drives the target: the scores of the
``region`` check, as plain functions of tensors.

Sources: contextual decomposition (CD) as in :mod:`pytest_saliency.metrics.decomposition`
(Murdoch et al. 2018; Singh, Murdoch, Yu 2019; Rieger et al. 2020; docs/methods.md#contextual-decomposition), and
occlusion as the model-agnostic fallback.

Per sample with region ``R``, ground-truth mask ``G`` and target class ``t``:

**Centred logits.** Softmax is blind to a shift common to every class, so a logit's size says
little about the decision: a model can shift every logit by the same large amount, and then any
part of a logit looks small next to the rest. (A model trained with the CDEP penalty does exactly
this to hide a shortcut from it.) Every score below is therefore taken on the logits centred over
the classes, ``z̃_c = z_c − mean_k z_k`` (no centring with a single logit). Centring is linear,
so CD's parts centre the same way: ``β̃ + γ̃ = z̃`` exactly.

- :func:`cd_region_scores` (contextual decomposition) runs on the network's own input ``u`` (the
  ``region`` check passes the spec's normalised image): the region splits what the network sees,
  ``β = R ⊙ u`` and ``γ = (1 − R) ⊙ u`` at the input, ``β + γ`` = the logits at the output.

  - ``share = |β̃_t| / (|β̃_t| + |γ̃_t|)``, in ``[0, 1]``: the region's part of the target's
    centred logit, for or against the target, relative to both parts. ``0``: the region
    contributes nothing; ``1``: the logit is all region. It is unsigned so that a region used
    against the target counts as used and a mean cannot cancel; failure details show the sign.
  - ``interaction = (β̃_t(R ∪ G) − β̃_t(R) − β̃_t(G)) / (|β̃_t(R ∪ G)| + |γ̃_t(R ∪ G)|)``,
    signed: the CD interaction of the region with the ground truth (Singh et al. 2019, §3),
    relative to the size of the union's decomposition (usually within ``[-1, 1]``; not bounded
    in general). Positive: region and ground truth together give the target more than apart.

- :func:`occlusion_scores`. The region's pixels (every channel) are replaced by the image's
  per-channel mean over the pixels *outside* the region (0 when the region is the whole image),
  giving ``x̃``. With ``d = z̃_t(x) − z̃_t(x̃)`` the change of the target's centred logit,
  ``share = |d| / (|d| + |z̃_t(x̃)|)``: the same form as CD's, ``d`` in the role of ``β̃_t`` and
  the occluded logit in the role of ``γ̃_t``. The model runs as a whole (normalisation
  included); a per-channel mean fill commutes with a per-channel normalisation, so the fill is
  the same in either space. ``interaction`` needs CD.

A sample whose region is empty (or, for ``interaction``, whose ground truth is empty), or whose
two parts are both exactly 0, has an undefined value (NaN), never 0.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .decomposition import contextual_decomposition

__all__ = ["cd_region_scores", "centre", "nonempty", "occlusion_scores", "relative_share"]


def relative_share(part: Tensor, rest: Tensor) -> Tensor:
    """``part / (|part| + |rest|)`` elementwise (signed, in ``[-1, 1]``), NaN where both are 0."""
    scale = part.abs() + rest.abs()
    return torch.where(scale > 0, part / scale.clamp(min=torch.finfo(scale.dtype).tiny), torch.nan)


def centre(logits: Tensor) -> Tensor:
    """``(N, K)`` logits minus their mean over the classes (unchanged when ``K == 1``)."""
    return logits - logits.mean(dim=1, keepdim=True) if logits.shape[1] > 1 else logits


def _at(scores: Tensor, target: Tensor) -> Tensor:
    return scores.gather(1, target.view(-1, 1)).squeeze(1)


def nonempty(masks: Tensor) -> Tensor:
    """``(N, H, W)`` masks -> ``(N,)`` bool: whether each has a pixel."""
    return masks.flatten(1).any(dim=1)


def cd_region_scores(
    network: nn.Module,
    inputs: Tensor,
    region: Tensor,
    target: Tensor,
    ground_truth: Tensor | None = None,
) -> dict[str, Tensor]:
    """CD scores of one batch: ``share`` (unsigned), ``signed_share`` (the same with the sign of
    ``β̃_t``) and, when ``ground_truth`` is given, ``interaction``.

    ``network``: a model CD can walk, in eval mode; ``inputs``: ``(N, C, H, W)`` as the network
    takes them (already normalised); ``region``, ``ground_truth``: ``(N, H, W)`` bool;
    ``target``: ``(N,)`` long. Returns ``(N,)`` float tensors on the inputs' device, NaN where
    undefined (see the module docs). Raises ``UnsupportedLayerError``.
    """
    region = region.to(inputs.device)
    target = target.to(inputs.device)
    beta, gamma = contextual_decomposition(network, inputs, region)
    beta_t, gamma_t = _at(centre(beta), target), _at(centre(gamma), target)
    has_region = nonempty(region)
    signed = torch.where(has_region, relative_share(beta_t, gamma_t), torch.nan)
    scores = {"share": signed.abs(), "signed_share": signed}
    if ground_truth is not None:
        ground_truth = ground_truth.to(inputs.device)
        union_beta, union_gamma = contextual_decomposition(network, inputs, region | ground_truth)
        truth_beta, _ = contextual_decomposition(network, inputs, ground_truth)
        union_t = _at(centre(union_beta), target)
        joint = union_t - beta_t - _at(centre(truth_beta), target)
        scale = union_t.abs() + _at(centre(union_gamma), target).abs()
        value = torch.where(scale > 0, joint / scale.clamp(min=torch.finfo(scale.dtype).tiny), torch.nan)
        scores["interaction"] = torch.where(has_region & nonempty(ground_truth), value, torch.nan)
    return scores


def occlusion_scores(model: nn.Module, images: Tensor, region: Tensor, target: Tensor) -> dict[str, Tensor]:
    """Occlusion scores of one batch: ``share = |d| / (|d| + |z̃_t(x̃)|)`` and ``signed_share``
    (the same with the sign of ``d``), ``d = z̃_t(x) − z̃_t(x̃)``.

    ``model``: the whole model (normalisation included), in eval mode; ``images``:
    ``(N, C, H, W)``; ``region``: ``(N, H, W)`` bool; ``target``: ``(N,)`` long. ``x̃`` has the
    region's pixels replaced by the per-channel mean of the pixels outside it (0 if none).
    Returns ``(N,)`` tensors, NaN for an empty region.
    """
    region = region.to(images.device)
    target = target.to(images.device)
    outside = (~region).unsqueeze(1).to(images.dtype)
    count = outside.sum(dim=(2, 3), keepdim=True)
    fill = (images * outside).sum(dim=(2, 3), keepdim=True) / count.clamp(min=1)
    occluded = torch.where(region.unsqueeze(1), fill.expand_as(images), images)
    with torch.inference_mode():
        clean = _at(centre(model(images)), target)
        rest = _at(centre(model(occluded)), target)
    signed = torch.where(nonempty(region), relative_share(clean - rest, rest), torch.nan)
    return {"share": signed.abs(), "signed_share": signed}
