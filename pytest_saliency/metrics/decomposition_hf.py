"""Contextual decomposition of Hugging Face's ``ViTForImageClassification``, which ``torch.fx``
cannot trace: module rules that follow its forward (embeddings with the class token and position
embeddings, pre-norm blocks of eager softmax attention and a GELU MLP, the final norm, the class
token's logits) with the rules of :mod:`.decomposition`. Registered when ``transformers`` is
imported (:func:`register_hugging_face_rules`)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .decomposition import (
    DecompositionContext,
    UnsupportedLayerError,
    attention_parts,
    overall_share,
    propagate_elementwise_activation,
    register_rule,
    registered_types,
    split_bias,
)

Parts = tuple[Tensor, Tensor]


def _classification_rule(module: nn.Module, beta: Tensor, gamma: Tensor, ctx: DecompositionContext) -> Parts:
    """``ViTForImageClassification``: the ViT, then the classifier on the class token; conserves its logits."""
    vit = module.get_submodule("vit")
    blocks = getattr(vit, "layers", None)
    if not isinstance(blocks, nn.ModuleList) or getattr(vit, "pooler", None) is not None:
        raise UnsupportedLayerError(ctx.path or "<model>", type(module), "CD follows transformers 5's ViT layout only")
    inner = DecompositionContext(f"{ctx.path}.vit" if ctx.path else "vit")
    beta, gamma = _embeddings(vit.get_submodule("embeddings"), beta, gamma, inner)
    for index, block in enumerate(blocks):
        beta, gamma = _block(block, beta, gamma, DecompositionContext(f"{inner.path}.layers.{index}"))
    beta, gamma = inner.propagate(vit.get_submodule("layernorm"), beta, gamma, "layernorm")
    return ctx.propagate(module.get_submodule("classifier"), beta[:, 0], gamma[:, 0], "classifier")


def _embeddings(embeddings: nn.Module, beta: Tensor, gamma: Tensor, ctx: DecompositionContext) -> Parts:
    """Patch projection, the class token in front (split by the overall share), position
    embeddings added (split as a bias)."""
    projection = embeddings.get_submodule("patch_embeddings.projection")
    beta, gamma = ctx.propagate(projection, beta, gamma, "embeddings.patch_embeddings.projection")
    beta, gamma = (part.flatten(2).transpose(1, 2) for part in (beta, gamma))
    share = overall_share(beta, gamma)
    token = embeddings.get_parameter("cls_token").expand(beta.shape[0], -1, -1)
    beta, gamma = torch.cat((token * share, beta), dim=1), torch.cat((token * (1 - share), gamma), dim=1)
    position = embeddings.get_parameter("position_embeddings")
    if position.shape[1] != beta.shape[1]:
        raise UnsupportedLayerError(
            ctx.path, type(embeddings), "CD needs images of the size the position embeddings were made for"
        )
    return split_bias(beta, gamma, position)


def _block(block: nn.Module, beta: Tensor, gamma: Tensor, ctx: DecompositionContext) -> Parts:
    """``x + attention(layernorm_before(x))``, then ``x + mlp(layernorm_after(x))``."""
    normed = ctx.propagate(block.get_submodule("layernorm_before"), beta, gamma, "layernorm_before")
    attended = _attention(block.get_submodule("attention"), *normed, ctx)
    beta, gamma = beta + attended[0], gamma + attended[1]
    mlp = block.get_submodule("mlp")
    hidden = ctx.propagate(
        mlp.get_submodule("fc1"),
        *ctx.propagate(block.get_submodule("layernorm_after"), beta, gamma, "layernorm_after"),
        "mlp.fc1",
    )
    activation = mlp.get_submodule("activation_fn")
    if activation(torch.zeros(1, dtype=beta.dtype, device=beta.device)).abs().item() != 0:
        raise UnsupportedLayerError(f"{ctx.path}.mlp.activation_fn", type(activation), "CD needs f(0) = 0")
    hidden = propagate_elementwise_activation(*hidden, activation)
    out = ctx.propagate(mlp.get_submodule("fc2"), *hidden, "mlp.fc2")
    return beta + out[0], gamma + out[1]


def _attention(attention: nn.Module, beta: Tensor, gamma: Tensor, ctx: DecompositionContext) -> Parts:
    """Softmax attention with weights from the whole input, values decomposed, the output projection."""
    heads = int(attention.__dict__["num_attention_heads"])  # plain attributes of the module
    scaling = float(attention.__dict__["scaling"])

    def by_head(t: Tensor) -> Tensor:
        return t.reshape(t.shape[0], t.shape[1], heads, -1).transpose(1, 2)

    whole = beta + gamma
    query, key = (by_head(attention.get_submodule(name)(whole)) for name in ("q_proj", "k_proj"))
    value = ctx.propagate(attention.get_submodule("v_proj"), beta, gamma, "attention.v_proj")
    mixed = attention_parts(query, key, by_head(value[0]), by_head(value[1]), scaling)
    merged = [part.transpose(1, 2).reshape(beta.shape[0], beta.shape[1], -1) for part in mixed]
    return ctx.propagate(attention.get_submodule("o_proj"), merged[0], merged[1], "attention.o_proj")


def register_hugging_face_rules() -> None:
    """Registers the rule of ``ViTForImageClassification`` (once; an earlier registration wins)."""
    from transformers import ViTForImageClassification

    if ViTForImageClassification not in registered_types():
        register_rule(ViTForImageClassification, _classification_rule)
