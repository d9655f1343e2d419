"""Contextual decomposition (CD) of an image classifier's logits into a region part and the rest.

Sources:

- W. J. Murdoch, P. J. Liu, B. Yu, "Beyond Word Importance: Contextual Decomposition to Extract
  Interactions from LSTMs", ICLR 2018 (the decomposition and its linear-layer rule).
- C. Singh, W. J. Murdoch, B. Yu, "Hierarchical interpretations for neural network
  predictions", ICLR 2019 (CD for CNNs: convolution, ReLU and max-pool rules; interactions) and
  the authors' code ``acd/scores/cd_propagate.py`` (github.com/csinva/hierarchical-dnn-interpretations).
- L. Rieger, C. Singh, W. J. Murdoch, B. Yu, "Interpretations are useful: penalizing
  explanations to align neural networks with prior knowledge", ICML 2020 (CDEP; batch norm and
  residual blocks in the authors' code, github.com/laura-rieger/deep-explanation-penalization).

The input is split into ``beta = mask * x`` (the region) and ``gamma = (1 - mask) * x`` (the
rest) and both parts are pushed through the network layer by layer (REFERENCE.md §4):

- Conv/Linear with bias ``b``: ``r = W beta``, ``i = W gamma``;
  ``beta' = r + b * |r| / (|r| + |i|)``, ``gamma' = i + b * |i| / (|r| + |i|)``. The authors add a
  tiny epsilon to both ``|r|`` and ``|i|``; this module uses the epsilon-free limit of that rule:
  the same ratio wherever ``|r| + |i| > 0``; where both are exactly zero (a unit whose whole
  input is zero, e.g. behind dead ReLUs) the authors' epsilon splits the bias evenly, and this
  module instead uses the sample's overall share of ``|r|`` at that layer (see
  :func:`split_bias`). Both are completeness-preserving; this choice keeps the two textbook
  identities exact: a mask of ones gives ``gamma = 0`` and a mask of zeros gives ``beta = 0``.
- ReLU (and LeakyReLU): ``beta' = f(beta)``, ``gamma' = f(beta + gamma) - f(beta)``.
- MaxPool: the argmax positions of ``pool(beta + gamma)``, with ``beta`` and ``gamma`` gathered
  there.
- AvgPool, AdaptiveAvgPool, Flatten, Identity, Dropout: applied to each part separately (dropout
  in training mode draws one mask and applies it to both parts).
- BatchNorm: its affine part ``s * x + t`` (running statistics in eval mode; in training mode the
  batch statistics of ``beta + gamma``, without updating the running ones) is treated like a
  biased linear layer, and ``gamma' = BN(beta + gamma) - beta'``.
- Residual blocks (torchvision ``BasicBlock``/``Bottleneck``): branch and shortcut (including the
  downsample) are propagated separately, added, then the ReLU rule.
- ``nn.Sequential`` recursively, and torchvision ``ResNet`` as a known composite.

By construction ``beta + gamma`` equals the model's output at every layer (up to rounding).

Only the module types in the rule registry are understood. A module without a rule, or a custom
module that computes in its own ``forward`` (whose functional operations CD cannot see), raises
:class:`UnsupportedLayerError` naming the module's path; nothing is ever skipped silently. Add a
rule for your own layer with :func:`register_rule`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "DecompositionContext",
    "Rule",
    "UnsupportedLayerError",
    "contextual_decomposition",
    "interaction",
    "propagate",
    "propagate_affine",
    "propagate_elementwise_activation",
    "propagate_linear",
    "region_importance",
    "register_rule",
    "registered_types",
    "split_bias",
]

Target = Union[int, Tensor]


class UnsupportedLayerError(TypeError):
    """Contextual decomposition met a module it has no rule for.

    Attributes: ``path`` (the module's dotted name inside the model, ``"<model>"`` for the
    model itself) and ``module_type`` (its class).
    """

    def __init__(self, path: str, module_type: type, reason: str | None = None) -> None:
        self.path = path
        self.module_type = module_type
        supported = ", ".join(sorted({_type_name(t) for t in _RULES}))
        detail = f" ({reason})" if reason else ""
        super().__init__(
            f"contextual decomposition has no rule for layer {path!r} ({_type_name(module_type)}){detail}; "
            f"register one with pytest_saliency.metrics.decomposition.register_rule; supported: {supported}"
        )


class Rule(Protocol):
    """A propagation rule: ``rule(module, beta, gamma, ctx) -> (beta', gamma')``.

    ``beta`` and ``gamma`` are the two parts of the module's input (same shape); the rule returns
    the two parts of its output, whose sum must equal ``module(beta + gamma)``. A rule for a
    composite module propagates through its children with ``ctx.propagate(child, beta, gamma,
    name)`` so that errors name the right path.
    """

    def __call__(self, module: nn.Module, beta: Tensor, gamma: Tensor, ctx: DecompositionContext) -> tuple[Tensor, Tensor]: ...


@dataclass(frozen=True)
class DecompositionContext:
    """Where the propagation is: ``path`` is the dotted name of the current module."""

    path: str = ""

    def propagate(self, module: nn.Module, beta: Tensor, gamma: Tensor, name: str | None = None) -> tuple[Tensor, Tensor]:
        """Propagate ``(beta, gamma)`` through ``module``, a child called ``name`` of the current one."""
        if name is None:
            path = self.path
        else:
            path = f"{self.path}.{name}" if self.path else name
        return _dispatch(module, beta, gamma, DecompositionContext(path))


_RULES: dict[type, Rule] = {}
_BUILTINS_LOADED = False


def register_rule(module_type: type[nn.Module], fn: Rule) -> None:
    """Register (or replace) the CD rule for ``module_type``.

    The rule also applies to subclasses of ``module_type`` that do not override ``forward``; a
    subclass with its own ``forward`` needs its own rule.

    Example, a normalising wrapper ``Normalize(mean, std)`` followed by an inner model::

        def normalize_rule(module, beta, gamma, ctx):
            scale = 1 / module.std.view(1, -1, 1, 1)
            beta, gamma = propagate_affine(beta, gamma, scale, -module.mean.view(1, -1, 1, 1) * scale)
            return ctx.propagate(module.inner, beta, gamma, "inner")

        register_rule(Normalize, normalize_rule)
    """
    if not (isinstance(module_type, type) and issubclass(module_type, nn.Module)):
        raise TypeError(f"module_type must be an nn.Module subclass, got {module_type!r}")
    _ensure_builtins()
    _RULES[module_type] = fn


def registered_types() -> tuple[type, ...]:
    """The module types that have a CD rule."""
    _ensure_builtins()
    return tuple(_RULES)


def _type_name(t: type) -> str:
    module = t.__module__ or ""
    if module.startswith("torch.nn.modules"):
        return f"nn.{t.__qualname__}"
    if module.startswith("torchvision.models"):
        return f"torchvision.{t.__qualname__}"
    return f"{module}.{t.__qualname__}" if module else t.__qualname__


def _find_rule(module: nn.Module) -> Rule | None:
    cls = type(module)
    for base in cls.__mro__:
        rule = _RULES.get(base)
        if rule is not None:
            # A subclass that changes forward computes something the rule does not know about.
            if getattr(cls, "forward", None) is not getattr(base, "forward", None):
                return None
            return rule
    return None


def _dispatch(module: nn.Module, beta: Tensor, gamma: Tensor, ctx: DecompositionContext) -> tuple[Tensor, Tensor]:
    rule = _find_rule(module)
    if rule is None:
        has_children = next(module.children(), None) is not None
        reason = "a custom module whose forward CD cannot see into" if has_children else None
        raise UnsupportedLayerError(ctx.path or "<model>", type(module), reason)
    return rule(module, beta, gamma, ctx)


def propagate(module: nn.Module, beta: Tensor, gamma: Tensor, *, path: str = "") -> tuple[Tensor, Tensor]:
    """Propagate the two parts ``(beta, gamma)`` of ``module``'s input to its output.

    ``beta``, ``gamma``: tensors of the module's input shape. Returns ``(beta', gamma')`` of the
    output shape with ``beta' + gamma' == module(beta + gamma)``. Gradients flow unless the
    caller disables them. Raises :class:`UnsupportedLayerError` for unknown modules.
    """
    _ensure_builtins()
    return _dispatch(module, beta, gamma, DecompositionContext(path))


# --------------------------------------------------------------------------------------------
# Building blocks for rules


def split_bias(r: Tensor, i: Tensor, bias: Tensor) -> tuple[Tensor, Tensor]:
    """Share ``bias`` between the two parts in proportion to ``|r|`` and ``|i|``.

    ``r``, ``i``: ``(N, ...)`` the layer's bias-free output for each part; ``bias`` broadcasts
    against them. Returns ``(r + bias * s, i + bias * (1 - s))`` with ``s = |r| / (|r| + |i|)``.
    Where ``|r| + |i| == 0`` (a unit whose whole input is exactly zero, common after a ReLU) the
    ratio is undefined; there ``s`` is the sample's overall share ``Σ|r| / (Σ|r| + Σ|i|)`` over
    the layer (``1/2`` if that is undefined too), so a region covering everything gets the whole
    bias and an empty region none. Differentiable everywhere (no NaN gradients at the zero set).
    """
    abs_r = r.abs()
    total = abs_r + i.abs()
    tiny = torch.finfo(total.dtype).tiny
    dims = tuple(range(1, total.dim()))
    if dims:
        mass_r = abs_r.sum(dim=dims, keepdim=True)
        mass = total.sum(dim=dims, keepdim=True)
        fallback = torch.where(mass > 0, mass_r / mass.clamp(min=tiny), torch.full_like(mass, 0.5))
    else:
        fallback = torch.full_like(total, 0.5)
    share = torch.where(total > 0, abs_r / total.clamp(min=tiny), fallback)
    return r + bias * share, i + bias * (1 - share)


def propagate_linear(beta: Tensor, gamma: Tensor, linear_map: Callable[[Tensor], Tensor], bias: Tensor | None) -> tuple[Tensor, Tensor]:
    """CD rule of a biased linear layer ``x -> linear_map(x) + bias``.

    ``linear_map`` must be linear (no bias) and act on each sample separately; ``bias``
    broadcasts against its output (``None`` for no bias).
    """
    r = linear_map(beta)
    i = linear_map(gamma)
    if bias is None:
        return r, i
    return split_bias(r, i, bias)


def propagate_affine(beta: Tensor, gamma: Tensor, scale: Tensor, shift: Tensor) -> tuple[Tensor, Tensor]:
    """CD rule of an elementwise affine map ``x -> scale * x + shift`` (``scale``/``shift`` broadcast)."""
    return split_bias(scale * beta, scale * gamma, shift)


def propagate_elementwise_activation(beta: Tensor, gamma: Tensor, fn: Callable[[Tensor], Tensor]) -> tuple[Tensor, Tensor]:
    """The ReLU rule for an elementwise ``fn`` with ``fn(0) = 0``: ``(fn(b), fn(b + g) - fn(b))``."""
    rel = fn(beta)
    return rel, fn(beta + gamma) - rel


def _separately(fn: Callable[[Tensor], Tensor], beta: Tensor, gamma: Tensor) -> tuple[Tensor, Tensor]:
    return fn(beta), fn(gamma)


# --------------------------------------------------------------------------------------------
# Built-in rules


def _conv_rule(module: nn.Module, beta: Tensor, gamma: Tensor, ctx: DecompositionContext) -> tuple[Tensor, Tensor]:
    conv: nn.modules.conv._ConvNd = module  # type: ignore[assignment]
    bias = conv.bias
    if conv.padding_mode == "zeros":
        functional = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[len(conv.kernel_size)]

        def linear_map(x: Tensor) -> Tensor:
            return functional(x, conv.weight, None, conv.stride, conv.padding, conv.dilation, conv.groups)

    else:  # reflect/replicate/circular padding is linear too: subtract the bias from the full conv

        def linear_map(x: Tensor) -> Tensor:
            out = conv(x)
            return out if bias is None else out - bias.view(1, -1, *([1] * (out.dim() - 2)))

    b = None if bias is None else bias.view(1, -1, *([1] * (beta.dim() - 2)))
    return propagate_linear(beta, gamma, linear_map, b)


def _linear_rule(module: nn.Module, beta: Tensor, gamma: Tensor, ctx: DecompositionContext) -> tuple[Tensor, Tensor]:
    lin: nn.Linear = module  # type: ignore[assignment]
    return propagate_linear(beta, gamma, lambda x: F.linear(x, lin.weight), lin.bias)


def _relu_rule(module: nn.Module, beta: Tensor, gamma: Tensor, ctx: DecompositionContext) -> tuple[Tensor, Tensor]:
    return propagate_elementwise_activation(beta, gamma, F.relu)  # never in place


def _leaky_relu_rule(module: nn.Module, beta: Tensor, gamma: Tensor, ctx: DecompositionContext) -> tuple[Tensor, Tensor]:
    slope = module.negative_slope  # type: ignore[attr-defined]
    return propagate_elementwise_activation(beta, gamma, lambda x: F.leaky_relu(x, slope))


_MAX_POOL = {
    nn.MaxPool1d: F.max_pool1d,
    nn.MaxPool2d: F.max_pool2d,
    nn.MaxPool3d: F.max_pool3d,
}
_ADAPTIVE_MAX_POOL = {
    nn.AdaptiveMaxPool1d: F.adaptive_max_pool1d,
    nn.AdaptiveMaxPool2d: F.adaptive_max_pool2d,
    nn.AdaptiveMaxPool3d: F.adaptive_max_pool3d,
}
_POOL_DIMS = {
    nn.MaxPool1d: 1, nn.MaxPool2d: 2, nn.MaxPool3d: 3,
    nn.AdaptiveMaxPool1d: 1, nn.AdaptiveMaxPool2d: 2, nn.AdaptiveMaxPool3d: 3,
}


def _gather_at(indices: Tensor, beta: Tensor, gamma: Tensor, spatial: int) -> tuple[Tensor, Tensor]:
    """Gather both parts at ``indices`` (flat positions over the last ``spatial`` dims, as pools return)."""
    flat_idx = indices.flatten(start_dim=indices.dim() - spatial)

    def gather(x: Tensor) -> Tensor:
        return x.flatten(start_dim=x.dim() - spatial).gather(-1, flat_idx).view(indices.shape)

    return gather(beta), gather(gamma)


def _max_pool_rule(module: nn.Module, beta: Tensor, gamma: Tensor, ctx: DecompositionContext) -> tuple[Tensor, Tensor]:
    cls = next(c for c in type(module).__mro__ if c in _MAX_POOL)
    pool = module
    _, indices = _MAX_POOL[cls](
        beta + gamma,
        pool.kernel_size,  # type: ignore[attr-defined]
        pool.stride,  # type: ignore[attr-defined]
        pool.padding,  # type: ignore[attr-defined]
        pool.dilation,  # type: ignore[attr-defined]
        ceil_mode=pool.ceil_mode,  # type: ignore[attr-defined]
        return_indices=True,
    )
    return _gather_at(indices, beta, gamma, _POOL_DIMS[cls])


def _adaptive_max_pool_rule(module: nn.Module, beta: Tensor, gamma: Tensor, ctx: DecompositionContext) -> tuple[Tensor, Tensor]:
    cls = next(c for c in type(module).__mro__ if c in _ADAPTIVE_MAX_POOL)
    _, indices = _ADAPTIVE_MAX_POOL[cls](beta + gamma, module.output_size, return_indices=True)  # type: ignore[attr-defined]
    return _gather_at(indices, beta, gamma, _POOL_DIMS[cls])


def _separate_rule(module: nn.Module, beta: Tensor, gamma: Tensor, ctx: DecompositionContext) -> tuple[Tensor, Tensor]:
    """Linear, bias-free, per-sample modules: apply to each part."""
    return _separately(module, beta, gamma)


def _dropout_rule(module: nn.Module, beta: Tensor, gamma: Tensor, ctx: DecompositionContext) -> tuple[Tensor, Tensor]:
    if not module.training or module.p == 0:  # type: ignore[attr-defined]
        return beta, gamma
    keep = module(torch.ones_like(beta))  # one mask (scaled by 1/(1-p)) shared by both parts
    return beta * keep, gamma * keep


def _batch_norm_rule(module: nn.Module, beta: Tensor, gamma: Tensor, ctx: DecompositionContext) -> tuple[Tensor, Tensor]:
    bn: nn.modules.batchnorm._BatchNorm = module  # type: ignore[assignment]
    total = beta + gamma
    use_batch_stats = bn.training or bn.running_mean is None or bn.running_var is None
    shape = (1, -1) + (1,) * (total.dim() - 2)
    if use_batch_stats:
        dims = [0] + list(range(2, total.dim()))
        mean = total.mean(dim=dims)
        var = total.var(dim=dims, unbiased=False)
    else:
        mean, var = bn.running_mean, bn.running_var
    scale = torch.rsqrt(var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    scale, shift = scale.view(shape), shift.view(shape)
    # gamma' = BN(beta + gamma) - beta'; written as scale*gamma + (1 - share)*shift, which is the
    # same up to rounding and keeps gamma' exactly 0 when gamma is 0.
    return propagate_affine(beta, gamma, scale, shift)


def _sequential_rule(module: nn.Module, beta: Tensor, gamma: Tensor, ctx: DecompositionContext) -> tuple[Tensor, Tensor]:
    for name, child in module.named_children():
        beta, gamma = ctx.propagate(child, beta, gamma, name)
    return beta, gamma


def _basic_block_rule(module: nn.Module, beta: Tensor, gamma: Tensor, ctx: DecompositionContext) -> tuple[Tensor, Tensor]:
    block = module
    b, g = ctx.propagate(block.conv1, beta, gamma, "conv1")
    b, g = ctx.propagate(block.bn1, b, g, "bn1")
    b, g = ctx.propagate(block.relu, b, g, "relu")
    b, g = ctx.propagate(block.conv2, b, g, "conv2")
    b, g = ctx.propagate(block.bn2, b, g, "bn2")
    return _residual_add(block, beta, gamma, b, g, ctx)


def _bottleneck_rule(module: nn.Module, beta: Tensor, gamma: Tensor, ctx: DecompositionContext) -> tuple[Tensor, Tensor]:
    block = module
    b, g = ctx.propagate(block.conv1, beta, gamma, "conv1")
    b, g = ctx.propagate(block.bn1, b, g, "bn1")
    b, g = ctx.propagate(block.relu, b, g, "relu")
    b, g = ctx.propagate(block.conv2, b, g, "conv2")
    b, g = ctx.propagate(block.bn2, b, g, "bn2")
    b, g = ctx.propagate(block.relu, b, g, "relu")
    b, g = ctx.propagate(block.conv3, b, g, "conv3")
    b, g = ctx.propagate(block.bn3, b, g, "bn3")
    return _residual_add(block, beta, gamma, b, g, ctx)


def _residual_add(
    block: nn.Module, beta: Tensor, gamma: Tensor, b: Tensor, g: Tensor, ctx: DecompositionContext
) -> tuple[Tensor, Tensor]:
    downsample = getattr(block, "downsample", None)
    if downsample is not None:
        beta, gamma = ctx.propagate(downsample, beta, gamma, "downsample")
    return ctx.propagate(block.relu, b + beta, g + gamma, "relu")


def _resnet_rule(module: nn.Module, beta: Tensor, gamma: Tensor, ctx: DecompositionContext) -> tuple[Tensor, Tensor]:
    for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool"):
        beta, gamma = ctx.propagate(getattr(module, name), beta, gamma, name)
    beta, gamma = torch.flatten(beta, 1), torch.flatten(gamma, 1)
    return ctx.propagate(module.fc, beta, gamma, "fc")


def _ensure_builtins() -> None:
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    _BUILTINS_LOADED = True
    builtin: dict[type, Rule] = {
        nn.Conv1d: _conv_rule,
        nn.Conv2d: _conv_rule,
        nn.Conv3d: _conv_rule,
        nn.Linear: _linear_rule,
        nn.ReLU: _relu_rule,
        nn.LeakyReLU: _leaky_relu_rule,
        nn.BatchNorm1d: _batch_norm_rule,
        nn.BatchNorm2d: _batch_norm_rule,
        nn.BatchNorm3d: _batch_norm_rule,
        nn.AvgPool1d: _separate_rule,
        nn.AvgPool2d: _separate_rule,
        nn.AvgPool3d: _separate_rule,
        nn.AdaptiveAvgPool1d: _separate_rule,
        nn.AdaptiveAvgPool2d: _separate_rule,
        nn.AdaptiveAvgPool3d: _separate_rule,
        nn.Flatten: _separate_rule,
        nn.Unflatten: _separate_rule,
        nn.Identity: _separate_rule,
        nn.Dropout: _dropout_rule,
        nn.Dropout1d: _dropout_rule,
        nn.Dropout2d: _dropout_rule,
        nn.Dropout3d: _dropout_rule,
        nn.Sequential: _sequential_rule,
    }
    builtin.update({cls: _max_pool_rule for cls in _MAX_POOL})
    builtin.update({cls: _adaptive_max_pool_rule for cls in _ADAPTIVE_MAX_POOL})
    try:
        from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet
    except ImportError:  # pragma: no cover - torchvision is a dependency
        pass
    else:
        builtin.update({BasicBlock: _basic_block_rule, Bottleneck: _bottleneck_rule, ResNet: _resnet_rule})
    for cls, rule in builtin.items():
        _RULES.setdefault(cls, rule)  # a user's earlier registration wins


# --------------------------------------------------------------------------------------------
# Public entry points


def _expand_mask(mask: Tensor, inputs: Tensor) -> Tensor:
    mask = torch.as_tensor(mask, device=inputs.device)
    if inputs.dim() == 4 and mask.dim() in (2, 3):  # (H, W) or (N, H, W): same mask for every channel
        mask = mask.unsqueeze(0) if mask.dim() == 2 else mask
        mask = mask.unsqueeze(1)
    try:
        torch.broadcast_shapes(mask.shape, inputs.shape)
    except RuntimeError:
        raise ValueError(
            f"mask of shape {tuple(mask.shape)} does not fit inputs of shape {tuple(inputs.shape)}; "
            "expected (H, W), (N, H, W) or (N, C, H, W)"
        ) from None
    if torch.broadcast_shapes(mask.shape, inputs.shape) != inputs.shape:
        raise ValueError(f"mask of shape {tuple(mask.shape)} is larger than inputs of shape {tuple(inputs.shape)}")
    return mask.to(inputs.dtype)


def contextual_decomposition(
    model: nn.Module, inputs: Tensor, mask: Tensor, *, differentiable: bool = False
) -> tuple[Tensor, Tensor]:
    """Decompose ``model(inputs)`` into the part due to the masked region and the rest.

    Args:
        model: a module built from registered types (see :func:`registered_types`). Its
            train/eval mode is respected: call ``model.eval()`` for scoring. Rules read the
            modules' parameters and buffers directly; forward hooks are not run.
        inputs: ``(N, C, H, W)`` float images (any shape the model takes works if ``mask``
            broadcasts against it).
        mask: ``(H, W)``, ``(N, H, W)`` or ``(N, C, H, W)``, bool or float (a soft mask works:
            ``beta = mask * x``, ``gamma = (1 - mask) * x``).
        differentiable: keep the autograd graph (for training with CDEP); by default CD runs under
            ``torch.no_grad``.

    Returns:
        ``(beta, gamma)``, each ``(N, num_classes)`` on the inputs' device, with
        ``beta + gamma == model(inputs)`` up to rounding.

    Raises:
        UnsupportedLayerError: a module of ``model`` has no rule.
    """
    _ensure_builtins()
    m = _expand_mask(mask, inputs)
    guard = contextlib.nullcontext() if differentiable else torch.no_grad()
    with guard:
        beta = inputs * m
        gamma = inputs * (1 - m)
        return _dispatch(model, beta, gamma, DecompositionContext(""))


def _at_target(scores: Tensor, target: Target) -> Tensor:
    n = scores.shape[0]
    t = torch.as_tensor(target, device=scores.device, dtype=torch.long)
    if t.dim() == 0:
        t = t.expand(n)
    if t.shape != (n,):
        raise ValueError(f"target must be an int or a ({n},) tensor, got shape {tuple(t.shape)}")
    return scores.gather(1, t.unsqueeze(1)).squeeze(1)


def region_importance(
    model: nn.Module, inputs: Tensor, mask: Tensor, target: Target, *, differentiable: bool = False
) -> Tensor:
    """CD importance of the masked region for ``target``: ``beta`` at the target logit.

    ``inputs``: ``(N, C, H, W)``; ``mask`` as in :func:`contextual_decomposition`; ``target``: an
    int or ``(N,)`` class indices. Returns ``(N,)``.
    """
    beta, _ = contextual_decomposition(model, inputs, mask, differentiable=differentiable)
    return _at_target(beta, target)


def _union(mask_a: Tensor, mask_b: Tensor) -> Tensor:
    if mask_a.dtype == torch.bool and mask_b.dtype == torch.bool:
        return mask_a | mask_b
    return torch.maximum(torch.as_tensor(mask_a).float(), torch.as_tensor(mask_b).float())


def interaction(
    model: nn.Module, inputs: Tensor, mask_a: Tensor, mask_b: Tensor, target: Target, *, differentiable: bool = False
) -> Tensor:
    """CD interaction of two regions at ``target``: ``CD(A ∪ B) - CD(A) - CD(B)``.

    (Singh, Murdoch, Yu 2019, §3.) Symmetric in ``A`` and ``B``. The union of soft masks is their
    elementwise maximum. ``inputs``: ``(N, C, H, W)``; masks as in
    :func:`contextual_decomposition`; ``target``: an int or ``(N,)``. Returns ``(N,)``.
    """
    a = torch.as_tensor(mask_a, device=inputs.device)
    b = torch.as_tensor(mask_b, device=inputs.device)
    both = region_importance(model, inputs, _union(a, b), target, differentiable=differentiable)
    only_a = region_importance(model, inputs, a, target, differentiable=differentiable)
    only_b = region_importance(model, inputs, b, target, differentiable=differentiable)
    return both - only_a - only_b
