"""The attention probabilities ``(N, heads, T, T)`` of every global self-attention block, on
the autograd graph, from torchvision's, timm's and Hugging Face's vision transformers.

Fused kernels never materialise the probabilities, so while :func:`captured_attention` is open
each library takes its explicit path: timm's ``Attention`` with ``fused_attn`` off (the output
of its ``attn_drop`` is captured), Hugging Face's attention modules with the eager
implementation (their second output), and ``nn.MultiheadAttention`` (torchvision's
``EncoderBlock`` asks it for no weights, and its weights are off the graph) recomputed explicitly
from its own parameters. Everything is restored on exit.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class AttentionError(ValueError):
    """The network has no global self-attention whose probabilities can be captured."""


WINDOWED = (
    "WindowAttention",
    "SwinAttention",
    "SwinSelfAttention",
    "Swinv2Attention",
    "Swinv2SelfAttention",
    "RelativePositionalMultiHeadAttention",
)
"""Parts of the class names of windowed attention (Swin V1 and V2 of torchvision, timm and
Hugging Face, whose transformers 5 merged ``SwinSelfAttention`` into ``SwinAttention``; MaxViT's
block and grid attention), which has no attention between all tokens."""


@contextmanager
def captured_attention(network: nn.Module) -> Iterator[list[Tensor]]:
    """While open, every forward pass of ``network`` appends each block's ``(N, heads, T, T)``
    attention probabilities, in call order, to the yielded list. Raises :class:`AttentionError`
    for windowed attention (Swin) and for a network with no attention it knows."""
    windowed = [type(m).__name__ for m in network.modules() if any(part in type(m).__name__ for part in WINDOWED)]
    if windowed:
        raise AttentionError(
            f"{windowed[0]} attends within windows, so there is no attention between all tokens to roll out: "
            "use LayerGradCam with layer: auto"
        )
    sink: list[Tensor] = []
    with ExitStack() as stack:
        patched = 0
        for module in network.modules():
            if isinstance(module, nn.MultiheadAttention):
                stack.enter_context(_explicit_multihead(module, sink))
            elif "fused_attn" in module.__dict__ and isinstance(getattr(module, "attn_drop", None), nn.Module):
                stack.enter_context(_timm_attention(module, sink))
            elif type(module).__name__.endswith("Attention") and hasattr(
                module.__dict__.get("config"), "_attn_implementation"
            ):
                stack.enter_context(_eager_attention(module, sink))
            else:
                continue
            patched += 1
        if not patched:
            raise AttentionError(
                "has no self-attention this method can read (torchvision, timm or Hugging Face ViT and DeiT)"
            )
        yield sink


@contextmanager
def _timm_attention(module: nn.Module, sink: list[Tensor]) -> Iterator[None]:
    attributes = module.__dict__  # fused_attn is a plain attribute
    fused = attributes["fused_attn"]
    attributes["fused_attn"] = False

    def keep(_module: nn.Module, _inputs: object, output: Tensor) -> None:
        sink.append(output)

    handle = module.attn_drop.register_forward_hook(keep)  # type: ignore[union-attr]  # checked by the caller
    try:
        yield
    finally:
        handle.remove()
        attributes["fused_attn"] = fused


@contextmanager
def _eager_attention(module: nn.Module, sink: list[Tensor]) -> Iterator[None]:
    config = module.__dict__["config"]  # a plain attribute, shared by the model's modules
    implementation = config._attn_implementation
    config._attn_implementation = "eager"

    def keep(_module: nn.Module, _inputs: object, output: object) -> None:
        if isinstance(output, tuple) and len(output) > 1 and isinstance(output[1], Tensor) and output[1].dim() == 4:
            if not sink or sink[-1] is not output[1]:
                sink.append(output[1])

    handle = module.register_forward_hook(keep)
    try:
        yield
    finally:
        handle.remove()
        config._attn_implementation = implementation


@contextmanager
def _explicit_multihead(attention: nn.MultiheadAttention, sink: list[Tensor]) -> Iterator[None]:
    """``attention.forward`` replaced by an explicit self-attention over its own parameters."""
    if not attention._qkv_same_embed_dim or attention.bias_k is not None or attention.add_zero_attn:
        raise AttentionError("has an nn.MultiheadAttention with separate key/value sizes or extra keys; not supported")

    def forward(
        query: Tensor, key: Tensor, value: Tensor, *args: object, need_weights: bool = True, **kwargs: object
    ) -> tuple[Tensor, Tensor | None]:
        if not (query is key is value) or args or any(v is not None and v is not False for v in kwargs.values()):
            raise AttentionError("has an nn.MultiheadAttention called with masks or cross-attention; not supported")
        tokens = query if attention.batch_first else query.transpose(0, 1)
        count, length, width = tokens.shape
        heads = attention.num_heads
        projected = F.linear(tokens, attention.in_proj_weight, attention.in_proj_bias)
        q, k, v = projected.view(count, length, 3, heads, width // heads).permute(2, 0, 3, 1, 4)
        probabilities = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(width // heads), dim=-1)
        sink.append(probabilities)
        mixed = (probabilities @ v).transpose(1, 2).reshape(count, length, width)
        output = attention.out_proj(mixed)
        output = output if attention.batch_first else output.transpose(0, 1)
        return output, probabilities.mean(dim=1) if need_weights else None

    attention.forward = forward  # type: ignore[method-assign]  # an instance attribute, deleted on exit
    try:
        yield
    finally:
        del attention.forward


def readout_rows(network: nn.Module, prefix: int) -> tuple[int, ...]:
    """The token rows the classifier reads: the class token ``(0,)``; a distilled DeiT's class
    and distillation tokens ``(0, 1)`` (its head averages both); ``()`` for a ViT with no prefix
    token or with global pooling, read as the mean over the patch rows."""
    if prefix == 0:
        return ()
    for module in network.modules():
        pool = getattr(module, "global_pool", None)
        if isinstance(pool, str) and hasattr(module, "num_prefix_tokens"):  # timm's ViTs
            if pool not in ("token", ""):
                return ()
            return (0, 1) if getattr(module, "dist_token", None) is not None else (0,)
    if any(type(module).__name__.endswith("WithTeacher") for module in network.modules()):
        return (0, 1)
    return (0,)
