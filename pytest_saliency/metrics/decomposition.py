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
rest) and both parts are pushed through the network node by node (docs/methods.md,
"Contextual decomposition"). Every rule conserves the sum: if ``beta + gamma`` is a node's input,
``beta' + gamma'`` is that node's output on it (up to rounding), so at the end ``beta + gamma``
are the logits. Every rule also keeps the two textbook identities exact: a mask of ones gives
``gamma = 0`` and a mask of zeros gives ``beta = 0``.

- Conv (any groups, dilation, padding mode; depthwise included) and Linear with bias ``b``:
  ``r = W beta``, ``i = W gamma``; ``beta' = r + b * |r| / (|r| + |i|)``,
  ``gamma' = i + b * |i| / (|r| + |i|)``. The authors add a tiny epsilon to both ``|r|`` and
  ``|i|``; this module uses the epsilon-free limit of that rule: the same ratio wherever
  ``|r| + |i| > 0``; where both are exactly zero (a unit whose whole input is zero, e.g. behind
  dead ReLUs) the authors' epsilon splits the bias evenly, and this module instead uses the
  sample's overall share of ``|r|`` at that layer (see :func:`split_bias`).
- BatchNorm: its affine part ``s * x + t`` (running statistics in eval mode; in training mode the
  batch statistics of ``beta + gamma``, without updating the running ones) is treated like a
  biased linear layer, and ``gamma' = BN(beta + gamma) - beta'``.
- Activations ``f`` with ``f(0) = 0`` (ReLU, LeakyReLU, ReLU6, Hardswish, SiLU, as modules or
  functions): ``beta' = f(beta)``, ``gamma' = f(beta + gamma) - f(beta)``.
- Gates (``nn.Sigmoid``, ``nn.Hardsigmoid`` modules, as in squeeze-excitation): the gate
  ``g = sigmoid(beta + gamma)`` is computed whole and may only multiply a decomposed tensor:
  ``g * x`` gives ``(g * beta, g * gamma)``. Multiplying by a constant is the same rule.
- MaxPool and AdaptiveMaxPool (modules or functions): the argmax positions of
  ``pool(beta + gamma)``, with ``beta`` and ``gamma`` gathered there.
- Linear maps without a bias, applied to each part separately: AvgPool, AdaptiveAvgPool (global
  pooling included), ``mean``, ``flatten``, ``view``/``reshape``, ``squeeze``/``unsqueeze``,
  ``permute``/``transpose``, ``contiguous``, indexing (``x[...]``), ``nn.Flatten``,
  ``nn.Unflatten``, ``nn.Identity``.
- Dropout (module or ``F.dropout``) and torchvision's ``StochasticDepth``: the identity in eval
  mode; in training mode one mask is drawn and applied to both parts.
- ``a + b`` of two decomposed tensors (residual connections): ``(beta_a + beta_b,
  gamma_a + gamma_b)``; ``torch.cat`` of decomposed tensors: the parts are concatenated.
- Shape and dtype queries (``x.shape``, ``x.size()``, ``x.dim()``) are answered from ``beta``.

The model is traced with :mod:`torch.fx`; modules that have a rule (the built-in ones above, or
one registered with :func:`register_rule`) and the layers of ``torch.nn`` are leaves of the
trace, every other module (``nn.Sequential``, torchvision's blocks, your own modules) is traced
through, so torchvision's VGG, ResNet, MobileNetV2/V3, EfficientNet and DenseNet decompose as
they are. Operations on values that do not depend on the input (shapes, parameters) run as
usual. A node without a rule, a node a rule refuses (adding a constant, multiplying two
decomposed tensors, using a gate for anything but a product) and a model torch.fx cannot trace
raise :class:`UnsupportedLayerError`, naming the operation and the path of the module it is in;
nothing is ever skipped silently. The traced graph is cached per model and traced again when its
modules, their train/eval modes or the registered rules change.
"""

from __future__ import annotations

import builtins
import contextlib
import inspect
import operator
import sys
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, TypeAlias, TypeVar, cast

import torch
import torch.fx
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import SaliencyError

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

Target: TypeAlias = int | Tensor


class UnsupportedLayerError(SaliencyError, TypeError):
    """Contextual decomposition met a module or an operation it has no rule for.

    Attributes: ``path`` (the dotted name inside the model of the module that holds the node,
    ``"<model>"`` for the model itself), ``module_type`` (that module's class) and ``operation``
    (the name of the refused operation, e.g. ``"torch.tanh"``; ``None`` when the module itself
    has no rule or cannot be traced).
    """

    def __init__(
        self, path: str, module_type: type, reason: str | None = None, *, operation: str | None = None
    ) -> None:
        self.path = path
        self.module_type = module_type
        self.operation = operation
        what = f"{operation} in layer {path!r}" if operation else f"layer {path!r}"
        detail = f" ({reason})" if reason else ""
        layers = ", ".join(sorted({_type_name(t) for t in (*_RULES, *_GATES)}))
        operations = ", ".join(
            sorted({_operation_name(t).rsplit(".", 1)[-1] for t in (*_FUNCTION_RULES, *_METHOD_RULES)})
        )
        super().__init__(
            f"contextual decomposition has no rule for {what} ({_type_name(module_type)}){detail}; "
            f"register one with pytest_saliency.metrics.decomposition.register_rule (for an operation: a "
            f"rule for a module that wraps it); supported: {layers}; and the operations {operations}"
        )


class Rule(Protocol):
    """A propagation rule: ``rule(module, beta, gamma, ctx) -> (beta', gamma')``.

    ``beta`` and ``gamma`` are the two parts of the module's input (same shape); the rule returns
    the two parts of its output, whose sum must equal ``module(beta + gamma)``. A rule for a
    composite module propagates through its children with ``ctx.propagate(child, beta, gamma,
    name)`` so that errors name the right path.
    """

    def __call__(
        self, module: nn.Module, beta: Tensor, gamma: Tensor, ctx: DecompositionContext
    ) -> tuple[Tensor, Tensor]: ...


@dataclass(frozen=True)
class DecompositionContext:
    """Where the propagation is: ``path`` is the dotted name of the current module."""

    path: str = ""

    def propagate(
        self, module: nn.Module, beta: Tensor, gamma: Tensor, name: str | None = None
    ) -> tuple[Tensor, Tensor]:
        """Propagate ``(beta, gamma)`` through ``module``, a child called ``name`` of the current one."""
        return _dispatch(module, beta, gamma, DecompositionContext(_join(self.path, name or "")))


_RULES: dict[type, Rule] = {}
_BUILTINS_LOADED = False


def register_rule(module_type: type[nn.Module], fn: Rule) -> None:
    """Register (or replace) the CD rule for ``module_type``.

    A module with a rule is a leaf of the traced graph: its ``forward`` is not looked into. The
    rule also applies to subclasses of ``module_type`` that do not override ``forward``; a
    subclass with its own ``forward`` needs its own rule (or is traced through).

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


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path and name else path or name


_Entry = TypeVar("_Entry")


def _lookup(table: dict[type, _Entry], module: nn.Module) -> _Entry | None:
    """The entry of ``table`` for ``module``'s class or a base whose ``forward`` it keeps."""
    cls = type(module)
    for base in cls.__mro__:
        entry = table.get(base)
        if entry is not None:
            # A subclass that changes forward computes something the entry does not know about.
            if getattr(cls, "forward", None) is not getattr(base, "forward", None):
                return None
            return entry
    return None


def _find_rule(module: nn.Module) -> Rule | None:
    return _lookup(_RULES, module)


def _is_leaf(module: nn.Module) -> bool:
    """Whether the trace keeps ``module`` as one node: it has a rule, is a gate, or is a ``torch.nn`` layer."""
    if _find_rule(module) is not None or _lookup(_GATES, module) is not None:
        return True
    return type(module).__module__.startswith(("torch.nn.", "torch.ao.nn.")) and not isinstance(module, nn.Sequential)


def _dispatch(module: nn.Module, beta: Tensor, gamma: Tensor, ctx: DecompositionContext) -> tuple[Tensor, Tensor]:
    rule = _find_rule(module)
    if rule is not None:
        return rule(module, beta, gamma, ctx)
    path = ctx.path or "<model>"
    if _lookup(_GATES, module) is not None:
        raise UnsupportedLayerError(path, type(module), "CD uses it only as a gate that multiplies features")
    if _is_leaf(module):
        raise UnsupportedLayerError(path, type(module))
    result = _Walker(module, _traced(module, ctx.path), ctx.path).run(_Parts(beta, gamma))
    return result.beta, result.gamma


def propagate(module: nn.Module, beta: Tensor, gamma: Tensor, *, path: str = "") -> tuple[Tensor, Tensor]:
    """Propagate the two parts ``(beta, gamma)`` of ``module``'s input to its output.

    ``beta``, ``gamma``: tensors of the module's input shape. Returns ``(beta', gamma')`` of the
    output shape with ``beta' + gamma' == module(beta + gamma)``. Gradients flow unless the
    caller disables them. Raises :class:`UnsupportedLayerError` for unknown modules and
    operations.
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


def propagate_linear(
    beta: Tensor, gamma: Tensor, linear_map: Callable[[Tensor], Tensor], bias: Tensor | None
) -> tuple[Tensor, Tensor]:
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


def propagate_elementwise_activation(
    beta: Tensor, gamma: Tensor, fn: Callable[[Tensor], Tensor]
) -> tuple[Tensor, Tensor]:
    """The ReLU rule for an elementwise ``fn`` with ``fn(0) = 0``: ``(fn(b), fn(b + g) - fn(b))``."""
    rel = fn(beta)
    return rel, fn(beta + gamma) - rel


def propagate_layer_norm(
    beta: Tensor, gamma: Tensor, dims: int, weight: Tensor | None, bias: Tensor | None, eps: float
) -> tuple[Tensor, Tensor]:
    """CD rule of a layer norm over the last ``dims`` dimensions: the mean and standard deviation
    ``σ`` come from ``x = beta + gamma``; each part is centred on its own mean and divided by
    ``σ`` (then scaled by ``weight``), and ``bias`` is split as biases are (:func:`split_bias`);
    conserves ``layer_norm(x)``."""
    axes = tuple(range(-dims, 0))
    whole = beta + gamma
    scale = (whole.var(dim=axes, unbiased=False, keepdim=True) + eps).rsqrt()
    r = (beta - beta.mean(dim=axes, keepdim=True)) * scale
    i = (gamma - gamma.mean(dim=axes, keepdim=True)) * scale
    if weight is not None:
        r, i = r * weight, i * weight
    return (r, i) if bias is None else split_bias(r, i, bias)


def overall_share(beta: Tensor, gamma: Tensor) -> Tensor:
    """``(N, 1, ..., 1)``: each sample's ``Σ|beta| / (Σ|beta| + Σ|gamma|)`` (½ where both are 0),
    how a constant with no part of its own (a class token) is split."""
    dims = tuple(range(1, beta.dim()))
    mass_beta = beta.abs().sum(dim=dims, keepdim=True)
    mass = mass_beta + gamma.abs().sum(dim=dims, keepdim=True)
    return torch.where(mass > 0, mass_beta / mass.clamp(min=torch.finfo(mass.dtype).tiny), 0.5)


# --------------------------------------------------------------------------------------------
# Built-in module rules


def _conv_rule(module: nn.Module, beta: Tensor, gamma: Tensor, ctx: DecompositionContext) -> tuple[Tensor, Tensor]:
    """Conv (grouped and depthwise included): the biased-linear rule; conserves ``conv(beta + gamma)``."""
    conv = cast(nn.modules.conv._ConvNd, module)
    bias = conv.bias
    if conv.padding_mode == "zeros":
        functional: Callable[..., Tensor] = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[len(conv.kernel_size)]

        def linear_map(x: Tensor) -> Tensor:
            return functional(x, conv.weight, None, conv.stride, conv.padding, conv.dilation, conv.groups)

    else:  # reflect/replicate/circular padding is linear too: subtract the bias from the full conv

        def linear_map(x: Tensor) -> Tensor:
            out: Tensor = conv(x)
            return out if bias is None else out - bias.view(1, -1, *([1] * (out.dim() - 2)))

    b = None if bias is None else bias.view(1, -1, *([1] * (beta.dim() - 2)))
    return propagate_linear(beta, gamma, linear_map, b)


def _linear_rule(module: nn.Module, beta: Tensor, gamma: Tensor, ctx: DecompositionContext) -> tuple[Tensor, Tensor]:
    """Linear: the biased-linear rule; conserves ``linear(beta + gamma)``."""
    lin = cast(nn.Linear, module)
    return propagate_linear(beta, gamma, lambda x: F.linear(x, lin.weight), lin.bias)


def _layer_norm_rule(
    module: nn.Module, beta: Tensor, gamma: Tensor, ctx: DecompositionContext
) -> tuple[Tensor, Tensor]:
    """LayerNorm: :func:`propagate_layer_norm`; conserves ``layer_norm(beta + gamma)``."""
    norm = cast(nn.LayerNorm, module)
    return propagate_layer_norm(beta, gamma, len(norm.normalized_shape), norm.weight, norm.bias, norm.eps)


def _gelu_rule(module: nn.Module, beta: Tensor, gamma: Tensor, ctx: DecompositionContext) -> tuple[Tensor, Tensor]:
    """GELU (exact or tanh): the ReLU rule; conserves ``gelu(beta + gamma)``."""
    approximate = cast(nn.GELU, module).approximate
    return propagate_elementwise_activation(beta, gamma, lambda t: F.gelu(t, approximate=approximate))


def attention_parts(
    query: Tensor, key: Tensor, value_beta: Tensor, value_gamma: Tensor, scale: float | None = None
) -> tuple[Tensor, Tensor]:
    """CD rule of softmax attention ``softmax(q kᵀ · scale) v`` (``(..., T, d)`` each): the weights
    come from the whole query and key, the values' parts pass through them; conserves the
    attention's output (CD-T, Hsu et al. 2024)."""
    factor = query.shape[-1] ** -0.5 if scale is None else scale
    weights = torch.softmax(query @ key.transpose(-2, -1) * factor, dim=-1)
    return weights @ value_beta, weights @ value_gamma


def _multihead_attention(module: nn.MultiheadAttention, x: _Parts) -> _Parts:
    """Self-attention of ``nn.MultiheadAttention`` (query, key and value the same tensor, no
    masks): weights from the whole input, values and the output projection by the biased-linear
    rule; conserves the attention's output."""
    if not module._qkv_same_embed_dim or module.bias_k is not None or module.add_zero_attn:
        raise _Refused("CD decomposes self-attention with one input projection and no extra keys")
    beta, gamma = (x.beta, x.gamma) if module.batch_first else (x.beta.transpose(0, 1), x.gamma.transpose(0, 1))
    count, length, width = beta.shape
    heads = module.num_heads
    weight, bias = module.in_proj_weight, module.in_proj_bias
    query, key, _ = F.linear(beta + gamma, weight, bias).chunk(3, dim=-1)
    value_beta, value_gamma = propagate_linear(
        beta, gamma, lambda t: F.linear(t, weight[2 * width :]), None if bias is None else bias[2 * width :]
    )

    def by_head(t: Tensor) -> Tensor:
        return t.reshape(count, length, heads, width // heads).transpose(1, 2)

    mixed = attention_parts(by_head(query), by_head(key), by_head(value_beta), by_head(value_gamma))
    merged = [part.transpose(1, 2).reshape(count, length, width) for part in mixed]
    projection = module.out_proj
    r, i = propagate_linear(merged[0], merged[1], lambda t: F.linear(t, projection.weight), projection.bias)
    return _Parts(r, i) if module.batch_first else _Parts(r.transpose(0, 1), i.transpose(0, 1))


def _activation_rule(fn: Callable[[Tensor], Tensor]) -> Rule:
    """The ReLU rule for a module computing ``fn`` (``fn(0) = 0``); conserves ``fn(beta + gamma)``."""

    def rule(module: nn.Module, beta: Tensor, gamma: Tensor, ctx: DecompositionContext) -> tuple[Tensor, Tensor]:
        return propagate_elementwise_activation(beta, gamma, fn)  # never in place

    return rule


def _leaky_relu_rule(
    module: nn.Module, beta: Tensor, gamma: Tensor, ctx: DecompositionContext
) -> tuple[Tensor, Tensor]:
    """LeakyReLU: the ReLU rule with the module's slope; conserves ``leaky_relu(beta + gamma)``."""
    slope = cast(nn.LeakyReLU, module).negative_slope
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
    nn.MaxPool1d: 1,
    nn.MaxPool2d: 2,
    nn.MaxPool3d: 3,
    nn.AdaptiveMaxPool1d: 1,
    nn.AdaptiveMaxPool2d: 2,
    nn.AdaptiveMaxPool3d: 3,
}


def _gather_at(indices: Tensor, beta: Tensor, gamma: Tensor, spatial: int) -> tuple[Tensor, Tensor]:
    """Gather both parts at ``indices`` (flat positions over the last ``spatial`` dims, as pools return)."""
    flat_idx = indices.flatten(start_dim=indices.dim() - spatial)

    def gather(x: Tensor) -> Tensor:
        return x.flatten(start_dim=x.dim() - spatial).gather(-1, flat_idx).view(indices.shape)

    return gather(beta), gather(gamma)


def _max_pool_rule(module: nn.Module, beta: Tensor, gamma: Tensor, ctx: DecompositionContext) -> tuple[Tensor, Tensor]:
    """MaxPool: both parts gathered at the argmax of ``pool(beta + gamma)``, which they conserve."""
    cls = next(c for c in type(module).__mro__ if c in _MAX_POOL)
    pool = cast(nn.modules.pooling._MaxPoolNd, module)
    _, indices = _MAX_POOL[cls](
        beta + gamma,
        pool.kernel_size,
        pool.stride,
        pool.padding,
        pool.dilation,
        ceil_mode=pool.ceil_mode,
        return_indices=True,
    )
    return _gather_at(indices, beta, gamma, _POOL_DIMS[cls])


def _adaptive_max_pool_rule(
    module: nn.Module, beta: Tensor, gamma: Tensor, ctx: DecompositionContext
) -> tuple[Tensor, Tensor]:
    """AdaptiveMaxPool: as MaxPool."""
    cls = next(c for c in type(module).__mro__ if c in _ADAPTIVE_MAX_POOL)
    output_size = cast(nn.modules.pooling._AdaptiveMaxPoolNd, module).output_size
    _, indices = _ADAPTIVE_MAX_POOL[cls](beta + gamma, output_size, return_indices=True)  # type: ignore[call-overload]  # torch's stubs leave out the None sizes (keep the input's) it accepts
    return _gather_at(indices, beta, gamma, _POOL_DIMS[cls])


def _separate_rule(module: nn.Module, beta: Tensor, gamma: Tensor, ctx: DecompositionContext) -> tuple[Tensor, Tensor]:
    """Linear, bias-free modules (pools, flatten, identity): applied to each part; linearity conserves the sum."""
    return module(beta), module(gamma)


def _dropout_rule(module: nn.Module, beta: Tensor, gamma: Tensor, ctx: DecompositionContext) -> tuple[Tensor, Tensor]:
    """Dropout and StochasticDepth: identity in eval mode, else one mask for both parts; conserves the output."""
    if not module.training or module.p == 0:
        return beta, gamma
    keep = module(torch.ones_like(beta))  # one mask (scaled by 1/(1-p)) shared by both parts
    return beta * keep, gamma * keep


def _batch_norm_rule(
    module: nn.Module, beta: Tensor, gamma: Tensor, ctx: DecompositionContext
) -> tuple[Tensor, Tensor]:
    """BatchNorm: the affine rule with its scale and shift; conserves ``BN(beta + gamma)``."""
    bn = cast(nn.modules.batchnorm._BatchNorm, module)
    total = beta + gamma
    running_mean, running_var = bn.running_mean, bn.running_var
    shape = (1, -1) + (1,) * (total.dim() - 2)
    if bn.training or running_mean is None or running_var is None:  # the batch's statistics
        dims = [0] + list(range(2, total.dim()))
        mean = total.mean(dim=dims)
        var = total.var(dim=dims, unbiased=False)
    else:
        mean, var = running_mean, running_var
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


# Gating activations: their output is kept whole and may only multiply a decomposed tensor.
_GATES: dict[type, Callable[[Tensor], Tensor]] = {nn.Sigmoid: torch.sigmoid, nn.Hardsigmoid: F.hardsigmoid}


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
        nn.ReLU: _activation_rule(F.relu),
        nn.ReLU6: _activation_rule(F.relu6),
        nn.Hardswish: _activation_rule(F.hardswish),
        nn.SiLU: _activation_rule(F.silu),
        nn.GELU: _gelu_rule,
        nn.LayerNorm: _layer_norm_rule,
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
    }
    builtin.update({cls: _max_pool_rule for cls in _MAX_POOL})
    builtin.update({cls: _adaptive_max_pool_rule for cls in _ADAPTIVE_MAX_POOL})
    try:  # imported on first use: torchvision is heavy to import
        from torchvision.ops import StochasticDepth
    except ImportError:  # pragma: no cover - torchvision is a dependency
        pass
    else:
        builtin[StochasticDepth] = _dropout_rule
        from torchvision.models import swin_transformer

        _FUNCTION_RULES[swin_transformer.shifted_window_attention] = _shifted_window_attention
        _FUNCTION_RULES[swin_transformer._patch_merging_pad] = _separately(swin_transformer._patch_merging_pad)
    for cls, rule in builtin.items():
        _RULES.setdefault(cls, rule)  # a user's earlier registration wins


# --------------------------------------------------------------------------------------------
# The traced graph and its walk


@dataclass(frozen=True)
class _Parts:
    """The decomposition of a tensor computed from the input: ``beta + gamma`` is its value."""

    beta: Tensor
    gamma: Tensor

    def map(self, fn: Callable[[Tensor], Tensor]) -> _Parts:
        """Apply a linear, bias-free ``fn`` to each part."""
        return _Parts(fn(self.beta), fn(self.gamma))


@dataclass(frozen=True)
class _Gate:
    """The whole output ``value`` of a gating activation (``nn.Sigmoid``/``nn.Hardsigmoid``) at ``path``."""

    value: Tensor
    path: str
    module_type: type


class _Refused(Exception):
    """An operation rule cannot handle these operands (``reason`` says why; ``None``: no rule at all)."""

    def __init__(self, reason: str | None) -> None:
        super().__init__(reason)
        self.reason = reason


# The operands of a node as the interpreter passes them: the values of the traced program, which
# include this module's _Parts and _Gate (so not only torch.fx's Argument types).
_Operands: TypeAlias = tuple[object, ...]
_Keywords: TypeAlias = Mapping[str, object]


def _tracked(*values: object) -> list[_Parts | _Gate]:
    """The decomposed tensors and gates anywhere in ``values`` (lists, tuples, dicts, slices)."""
    found: list[_Parts | _Gate] = []
    pending = list(values)
    while pending:
        value = pending.pop()
        if isinstance(value, _Parts | _Gate):
            found.append(value)
        elif isinstance(value, list | tuple):
            pending.extend(value)
        elif isinstance(value, dict):
            pending.extend(value.values())
        elif isinstance(value, slice):
            pending.extend((value.start, value.stop, value.step))
    return found


def _single_input(args: _Operands, kwargs: _Keywords) -> tuple[_Parts, _Operands, _Keywords]:
    """``(x, other args, kwargs)`` where the decomposed ``x`` comes first and nothing else depends on the input."""
    if not args or not isinstance(args[0], _Parts) or _tracked(args[1:], kwargs):
        raise _Refused("CD applies it to one tensor computed from the input, given as its first argument")
    return args[0], args[1:], kwargs


def _out_of_place(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """``fn`` with its ``inplace`` flag (if any) forced off: the parts are shared between nodes."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin: no inplace flag
        return fn
    if "inplace" not in signature.parameters:
        return fn

    def call(*args: object, **kwargs: object) -> Tensor:
        bound = signature.bind(*args, **kwargs)
        bound.arguments["inplace"] = False
        return fn(*bound.args, **bound.kwargs)

    return call


_OperationRule = Callable[[_Operands, _Keywords], object]


def _separately(fn: Callable[..., Tensor]) -> _OperationRule:
    """A linear, bias-free ``fn(x, ...)`` (pooling, ``mean``, ``flatten``, reshaping): applied to each part."""

    def rule(args: _Operands, kwargs: _Keywords) -> _Parts:
        x, rest, kw = _single_input(args, kwargs)
        return x.map(lambda t: fn(t, *rest, **kw))

    return rule


def _elementwise(fn: Callable[..., Tensor]) -> _OperationRule:
    """An activation ``fn(x, ...)`` with ``fn(0) = 0``: the ReLU rule; conserves ``fn(beta + gamma)``."""
    fn = _out_of_place(fn)

    def rule(args: _Operands, kwargs: _Keywords) -> _Parts:
        x, rest, kw = _single_input(args, kwargs)
        return _Parts(*propagate_elementwise_activation(x.beta, x.gamma, lambda t: fn(t, *rest, **kw)))

    return rule


def _max_pool_function(with_indices: Callable[..., tuple[Tensor, Tensor]], spatial: int) -> _OperationRule:
    """A functional max pool (``return_indices=False``: the trace calls ``with_indices`` itself
    otherwise): both parts gathered at the argmax of the pool of ``beta + gamma``."""

    def rule(args: _Operands, kwargs: _Keywords) -> _Parts:
        x, rest, kw = _single_input(args, kwargs)
        _, indices = with_indices(x.beta + x.gamma, *rest, **kw)
        return _Parts(*_gather_at(indices, x.beta, x.gamma, spatial))

    return rule


_DROPOUT_SIGNATURE = inspect.signature(F.dropout)


def _dropout_function(args: _Operands, kwargs: _Keywords) -> _Parts:
    """``F.dropout``: identity unless training, else one mask for both parts; conserves the output."""
    x, rest, kw = _single_input(args, kwargs)
    bound = _DROPOUT_SIGNATURE.bind(x.beta, *rest, **kw)
    bound.apply_defaults()
    p, training = bound.arguments["p"], bound.arguments["training"]
    if not training or p == 0:
        return x
    keep = F.dropout(torch.ones_like(x.beta), p, True)
    return x.map(lambda t: t * keep)


def _add(args: _Operands, kwargs: _Keywords) -> _Parts:
    """``a + b`` of two decomposed tensors (a residual connection): the parts add; a constant
    added (a position embedding) is split as a bias (:func:`split_bias`); conserves ``a + b``."""
    if kwargs or len(args) != 2:
        raise _Refused("CD adds two operands")
    a, b = args if isinstance(args[0], _Parts) else args[::-1]
    if not isinstance(a, _Parts):  # the walker calls a rule only with a decomposed operand
        raise _Refused("CD adds a tensor computed from the input")
    if isinstance(b, _Parts):
        return _Parts(a.beta + b.beta, a.gamma + b.gamma)
    if not isinstance(b, Tensor | int | float):
        raise _Refused("CD adds a tensor computed from the input to another one or to a constant tensor")
    return _Parts(*split_bias(a.beta, a.gamma, torch.as_tensor(b, dtype=a.beta.dtype, device=a.beta.device)))


def _mul(args: _Operands, kwargs: _Keywords) -> _Parts:
    """``x * g`` of a decomposed ``x`` and a gate or a constant ``g``: ``(g * beta, g * gamma)``; conserves ``g * x``."""
    if kwargs or len(args) != 2:
        raise _Refused("CD multiplies exactly two operands")
    x, scale = args if isinstance(args[0], _Parts) else args[::-1]
    factor = scale.value if isinstance(scale, _Gate) else scale
    if not isinstance(x, _Parts) or not isinstance(factor, Tensor | int | float):
        raise _Refused(
            "CD multiplies a tensor computed from the input by a gate (nn.Sigmoid, nn.Hardsigmoid) or a "
            "constant; a product of two such tensors has no rule"
        )
    return x.map(lambda t: t * factor)


def _truediv(args: _Operands, kwargs: _Keywords) -> _Parts:
    """``x / c`` for a constant ``c`` (a distilled DeiT averages its two heads): ``(beta / c, gamma / c)``."""
    x, divisor = args if len(args) == 2 else (None, None)
    if kwargs or not isinstance(x, _Parts) or not isinstance(divisor, Tensor | int | float):
        raise _Refused("CD divides a tensor computed from the input by a constant only")
    return x.map(lambda t: t / divisor)


def _cat(args: _Operands, kwargs: _Keywords) -> _Parts:
    """``torch.cat`` of decomposed tensors: the parts are concatenated; a constant among them (a
    class token) is split by each sample's :func:`overall_share` of the decomposed ones;
    conserves the concatenation."""
    if not args or not isinstance(args[0], (list, tuple)):
        raise _Refused("CD concatenates a list of tensors given as the first argument")
    tensors, rest = args[0], args[1:]
    parts = [t for t in tensors if isinstance(t, _Parts)]
    if _tracked(rest, kwargs) or not all(isinstance(t, _Parts | Tensor) for t in tensors):
        raise _Refused("CD concatenates tensors computed from the input and constant tensors")
    share = overall_share(
        torch.cat([p.beta.flatten(1) for p in parts], 1), torch.cat([p.gamma.flatten(1) for p in parts], 1)
    )

    def split(t: _Parts | Tensor, beta: bool) -> Tensor:
        if isinstance(t, _Parts):
            return t.beta if beta else t.gamma
        fraction = share.view(-1, *([1] * (t.dim() - 1)))
        return t * fraction if beta else t * (1 - fraction)

    concatenate: Callable[..., Tensor] = torch.cat  # with the traced program's own dim argument
    return _Parts(
        concatenate([split(t, True) for t in tensors], *rest, **kwargs),
        concatenate([split(t, False) for t in tensors], *rest, **kwargs),
    )


def _layer_norm_function(args: _Operands, kwargs: _Keywords) -> _Parts:
    """``F.layer_norm`` (ConvNeXt's ``LayerNorm2d``): :func:`propagate_layer_norm`."""
    x, rest, kw = _single_input(args, kwargs)
    bound = _LAYER_NORM_SIGNATURE.bind(x.beta, *rest, **kw)
    bound.apply_defaults()
    arguments = bound.arguments
    dims = len(tuple(arguments["normalized_shape"]))
    return _Parts(
        *propagate_layer_norm(x.beta, x.gamma, dims, arguments["weight"], arguments["bias"], arguments["eps"])
    )


_LAYER_NORM_SIGNATURE = inspect.signature(F.layer_norm)


def _scaled_dot_product_attention(args: _Operands, kwargs: _Keywords) -> _Parts:
    """``F.scaled_dot_product_attention(q, k, v)`` without masks or dropout: :func:`attention_parts`."""
    names = ("query", "key", "value")
    given = dict(zip(names, args, strict=False)) | {k: v for k, v in kwargs.items() if k in names}
    extra = {k: v for k, v in kwargs.items() if k not in names and k != "scale"}
    if len(args) > 3 or any(v not in (None, 0.0, False) for v in extra.values()) or len(given) != 3:
        raise _Refused("CD decomposes attention without a mask, dropout or causal masking")

    def whole(t: object) -> Tensor:
        if isinstance(t, _Parts):
            return t.beta + t.gamma
        if not isinstance(t, Tensor):
            raise _Refused("CD decomposes attention of tensors")
        return t

    value, scale = given["value"], kwargs.get("scale")
    value_parts = value if isinstance(value, _Parts) else _Parts(torch.zeros_like(whole(value)), whole(value))
    if not isinstance(scale, float | int | None):
        raise _Refused("CD decomposes attention scaled by a number")
    return _Parts(
        *attention_parts(
            whole(given["query"]),
            whole(given["key"]),
            value_parts.beta,
            value_parts.gamma,
            None if scale is None else float(scale),
        )
    )


def _shifted_window_attention(args: _Operands, kwargs: _Keywords) -> _Parts:
    """torchvision's Swin V1 ``shifted_window_attention`` (a ``torch.fx.wrap`` leaf) for
    decomposed ``(N, H, W, C)`` input: padding, the cyclic shift and the window partition apply
    to each part; attention weights (with the relative position bias and the shift mask) come
    from the whole input; values and the output projection by the biased-linear rule; conserves
    the function's output."""
    from torchvision.models.swin_transformer import shifted_window_attention

    bound = inspect.signature(shifted_window_attention).bind(*args, **kwargs)
    bound.apply_defaults()
    a = bound.arguments
    x = a["input"]
    dropping = a["training"] and (a["attention_dropout"] > 0 or a["dropout"] > 0)
    if not isinstance(x, _Parts) or _tracked([v for k, v in a.items() if k != "input"]):
        raise _Refused("CD decomposes the window attention of one tensor computed from the input")
    if a["logit_scale"] is not None or dropping:
        raise _Refused("CD decomposes Swin V1's window attention in eval mode (not V2's cosine attention)")
    window, heads, shift = list(a["window_size"]), int(a["num_heads"]), list(a["shift_size"])
    count, height, width, channels = x.beta.shape
    pad_h, pad_w = height + (-height) % window[0], width + (-width) % window[1]
    shift = [0 if window[d] >= (pad_h, pad_w)[d] else shift[d] for d in range(2)]
    grid = (pad_h // window[0], pad_w // window[1])
    size = window[0] * window[1]

    def partition(t: Tensor) -> Tensor:
        t = F.pad(t, (0, 0, 0, pad_w - width, 0, pad_h - height))
        t = torch.roll(t, shifts=(-shift[0], -shift[1]), dims=(1, 2)) if sum(shift) else t
        t = t.view(count, grid[0], window[0], grid[1], window[1], channels).permute(0, 1, 3, 2, 4, 5)
        return t.reshape(count * grid[0] * grid[1], size, channels)

    def merge(t: Tensor) -> Tensor:
        t = t.view(count, grid[0], grid[1], window[0], window[1], channels).permute(0, 1, 3, 2, 4, 5)
        t = t.reshape(count, pad_h, pad_w, channels)
        t = torch.roll(t, shifts=(shift[0], shift[1]), dims=(1, 2)) if sum(shift) else t
        return t[:, :height, :width, :].contiguous()

    def by_head(t: Tensor) -> Tensor:
        return t.reshape(t.shape[0], size, heads, channels // heads).transpose(1, 2)

    beta, gamma = partition(x.beta), partition(x.gamma)
    weight, bias = a["qkv_weight"], a["qkv_bias"]
    query, key, _ = F.linear(beta + gamma, weight, bias).chunk(3, dim=-1)
    value = propagate_linear(
        beta, gamma, lambda t: F.linear(t, weight[2 * channels :]), None if bias is None else bias[2 * channels :]
    )
    logits = (by_head(query) * (channels // heads) ** -0.5) @ by_head(key).transpose(-2, -1)
    logits = logits + a["relative_position_bias"]
    if sum(shift):
        logits = logits.view(count, -1, heads, size, size) + _shift_mask(pad_h, pad_w, window, shift, logits)
        logits = logits.view(-1, heads, size, size)
    weights = torch.softmax(logits, dim=-1)
    mixed = [(weights @ by_head(part)).transpose(1, 2).reshape(-1, size, channels) for part in value]
    projected = propagate_linear(mixed[0], mixed[1], lambda t: F.linear(t, a["proj_weight"]), a["proj_bias"])
    return _Parts(merge(projected[0]), merge(projected[1]))


def _shift_mask(height: int, width: int, window: list[int], shift: list[int], like: Tensor) -> Tensor:
    """``(1, windows, 1, L, L)``: -100 between tokens of a shifted window that came from different
    regions (torchvision's mask, so the weights match its function)."""
    labels = like.new_zeros((height, width))
    count = 0
    for rows in ((0, -window[0]), (-window[0], -shift[0]), (-shift[0], None)):
        for cols in ((0, -window[1]), (-window[1], -shift[1]), (-shift[1], None)):
            labels[rows[0] : rows[1], cols[0] : cols[1]] = count
            count += 1
    labels = labels.view(height // window[0], window[0], width // window[1], window[1]).permute(0, 2, 1, 3)
    labels = labels.reshape(-1, window[0] * window[1])
    differ = labels.unsqueeze(1) - labels.unsqueeze(2)
    return torch.where(differ != 0, -100.0, 0.0).to(like.dtype).unsqueeze(1).unsqueeze(0)


def _unbind(args: _Operands, kwargs: _Keywords) -> tuple[_Parts, ...]:
    """``x.unbind(dim)`` (timm's ``q, k, v``): a tuple of decomposed slices."""
    x, rest, kw = _single_input(args, kwargs)
    unbind: Callable[..., tuple[Tensor, ...]] = torch.unbind  # with the traced program's own dim argument
    return tuple(_Parts(b, g) for b, g in zip(unbind(x.beta, *rest, **kw), unbind(x.gamma, *rest, **kw), strict=True))


def _getitem(args: _Operands, kwargs: _Keywords) -> object:
    """Indexing: an element of a list or tuple as it is; a decomposed tensor indexed in each part."""
    container, index = args
    if isinstance(container, (list, tuple)) and isinstance(index, int | slice):
        return container[index]
    if isinstance(container, _Parts) and not _tracked(index):
        return container.map(lambda t: _method("__getitem__")(t, index))
    raise _Refused("indexing with a tensor computed from the input")


_METADATA = frozenset({"shape", "dtype", "device", "ndim"})


def _getattr(args: _Operands, kwargs: _Keywords) -> object:
    """``x.shape``, ``x.dtype``, ``x.device``, ``x.ndim``: read from ``beta`` (the same as the whole tensor's)."""
    x, name = args
    if isinstance(x, _Parts) and isinstance(name, str) and name in _METADATA:
        return getattr(x.beta, name)
    raise _Refused(f"CD reads only {', '.join(sorted(_METADATA))} of a tensor computed from the input, not {name!r}")


def _metadata_method(name: str) -> _OperationRule:
    """``x.size(...)``, ``x.dim()``: answered from ``beta``."""

    def rule(args: _Operands, kwargs: _Keywords) -> object:
        x, rest, kw = _single_input(args, kwargs)
        return getattr(x.beta, name)(*rest, **kw)

    return rule


def _method(name: str) -> Callable[..., Tensor]:
    """``t.name(...)`` as a function of the tensor ``t`` (a method that returns a tensor)."""

    def call(t: Tensor, *args: object, **kwargs: object) -> Tensor:
        method: Callable[..., Tensor] = getattr(t, name)
        return method(*args, **kwargs)

    return call


# Rules of ``call_function`` nodes, by the function called.
_FUNCTION_RULES: dict[torch.fx.node.Target, _OperationRule] = {
    operator.add: _add,
    operator.mul: _mul,
    torch.mul: _mul,
    operator.truediv: _truediv,
    torch.cat: _cat,
    torch.unbind: _unbind,
    torch.concat: _cat,
    operator.getitem: _getitem,
    builtins.getattr: _getattr,
    F.dropout: _dropout_function,
    F.layer_norm: _layer_norm_function,
    F.scaled_dot_product_attention: _scaled_dot_product_attention,
    **{fn: _elementwise(fn) for fn in (F.relu, torch.relu, F.relu6, F.hardswish, F.silu, F.leaky_relu, F.gelu)},
    **{
        fn: _separately(fn)
        for fn in (
            torch.flatten,
            torch.mean,
            torch.reshape,
            torch.squeeze,
            torch.unsqueeze,
            torch.permute,
            torch.transpose,
            F.avg_pool1d,
            F.avg_pool2d,
            F.avg_pool3d,
            F.adaptive_avg_pool1d,
            F.adaptive_avg_pool2d,
            F.adaptive_avg_pool3d,
        )
    },
    F.max_pool1d: _max_pool_function(F.max_pool1d_with_indices, 1),
    F.max_pool2d: _max_pool_function(F.max_pool2d_with_indices, 2),
    F.max_pool3d: _max_pool_function(F.max_pool3d_with_indices, 3),
    F.adaptive_max_pool1d: _max_pool_function(F.adaptive_max_pool1d_with_indices, 1),
    F.adaptive_max_pool2d: _max_pool_function(F.adaptive_max_pool2d_with_indices, 2),
    F.adaptive_max_pool3d: _max_pool_function(F.adaptive_max_pool3d_with_indices, 3),
}

# Rules of ``call_method`` nodes (``x.name(...)``), by the method's name.
_METHOD_RULES: dict[str, _OperationRule] = {
    "mul": _mul,
    "unbind": _unbind,
    "relu": _elementwise(_method("relu")),
    "size": _metadata_method("size"),
    "dim": _metadata_method("dim"),
    **{
        name: _separately(_method(name))
        for name in ("flatten", "mean", "view", "reshape", "squeeze", "unsqueeze", "permute", "transpose", "contiguous")
    },
}

_OPERATION_MODULES = {
    "_operator": "operator",
    "torch._C._nn": "torch.nn.functional",
    "torch._C._VariableFunctions": "torch",
}


def _operation_name(target: torch.fx.node.Target) -> str:
    """``torch.cat``, ``operator.add``, ``Tensor.view``, ...: how a node's operation is named in errors."""
    if isinstance(target, str):
        return f"Tensor.{target}"
    module = getattr(target, "__module__", None) or "torch"
    return f"{_OPERATION_MODULES.get(module, module)}.{getattr(target, '__name__', repr(target))}"


_SCOPE = "contextual_decomposition_scope"


class _TraceFailure(Exception):
    def __init__(self, path: str, module_type: type, error: Exception) -> None:
        super().__init__(path)
        self.path, self.module_type, self.error = path, module_type, error


class _Tracer(torch.fx.Tracer):
    """Keeps modules with a rule, gates and ``torch.nn`` layers as leaves; tags every node with the
    path and class of the module whose ``forward`` created it (``node.meta[_SCOPE]``)."""

    def trace(
        self, root: nn.Module | Callable[..., object], concrete_args: dict[str, object] | None = None
    ) -> torch.fx.Graph:
        self._scopes = [("", type(root))]
        return super().trace(root, concrete_args)

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return _is_leaf(m)

    def call_module(
        self, m: nn.Module, forward: Callable[..., object], args: tuple[object, ...], kwargs: dict[str, object]
    ) -> object:
        path = self.path_of_module(m)
        self._scopes.append((path, type(m)))
        try:
            return super().call_module(m, forward, args, kwargs)
        except _TraceFailure:
            raise
        except Exception as error:  # the innermost module whose forward could not be traced
            raise _TraceFailure(path, type(m), error) from error
        finally:
            self._scopes.pop()

    def create_node(
        self,
        kind: str,
        target: torch.fx.node.Target,
        args: tuple[torch.fx.node.Argument, ...],
        kwargs: dict[str, torch.fx.node.Argument],
        name: str | None = None,
        type_expr: object = None,
    ) -> torch.fx.Node:
        node = super().create_node(kind, target, args, kwargs, name, type_expr)
        node.meta[_SCOPE] = self._scopes[-1]
        return node


# What a model's trace depends on: per module its id, class, training flag and whether it is a leaf
_TraceKey: TypeAlias = tuple[tuple[int, type, bool, bool], ...]
# model -> (what its trace depends on, the traced graph)
_GRAPHS: weakref.WeakKeyDictionary[nn.Module, tuple[_TraceKey, torch.fx.Graph]] = weakref.WeakKeyDictionary()


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def _traced(root: nn.Module, path: str) -> torch.fx.Graph:
    """The torch.fx graph of ``root`` (cached while its modules, their modes and rules stay the same)."""
    depends_on = tuple((id(m), type(m), m.training, _is_leaf(m)) for m in root.modules())
    cached = _GRAPHS.get(root)
    if cached is not None and cached[0] == depends_on:
        return cached[1]
    try:
        graph = _Tracer().trace(root)
    except _TraceFailure as failure:
        reason = f"torch.fx cannot trace its forward: {_first_line(failure.error)}"
        raise UnsupportedLayerError(_join(path, failure.path), failure.module_type, reason) from failure.error
    except Exception as error:
        reason = f"torch.fx cannot trace its forward: {_first_line(error)}"
        raise UnsupportedLayerError(path or "<model>", type(root), reason) from error
    _GRAPHS[root] = (depends_on, graph)
    return graph


# The operands of a node as torch.fx's interpreter declares them (at run time its values, _Parts among them)
_Arguments: TypeAlias = tuple[torch.fx.node.Argument, ...]
_KeywordArguments: TypeAlias = dict[str, torch.fx.node.Argument]


class _Walker(torch.fx.Interpreter):
    """Runs a traced graph on decomposed tensors: every node that depends on the input goes
    through its rule; nodes that do not (shapes, parameters, constants) run as usual."""

    def __init__(self, root: nn.Module, graph: torch.fx.Graph, path: str) -> None:
        super().__init__(root, graph=graph)
        self.extra_traceback = False  # errors are ours, worded for the user
        self.path = path
        self.node: torch.fx.Node | None = None

    def run_node(self, n: torch.fx.Node) -> object:
        self.node = n
        return super().run_node(n)

    def call_module(self, target: torch.fx.node.Target, args: _Arguments, kwargs: _KeywordArguments) -> object:
        if not _tracked(args, kwargs):
            return super().call_module(target, args, kwargs)
        assert isinstance(target, str)  # a call_module node names its module
        module = self.fetch_attr(target)
        path = _join(self.path, target)
        if isinstance(module, nn.MultiheadAttention):
            return self._self_attention(module, path, args, kwargs)
        rule, gate = _find_rule(module), _lookup(_GATES, module)
        if rule is None and gate is None:
            raise UnsupportedLayerError(path, type(module))
        x: object = args[0] if len(args) == 1 and not kwargs else None  # at run time: the values, parts among them
        if not isinstance(x, _Parts):
            raise UnsupportedLayerError(path, type(module), "CD applies it to one tensor computed from the input")
        if rule is not None:
            return _Parts(*rule(module, x.beta, x.gamma, DecompositionContext(path)))
        assert gate is not None  # a module without a rule has a gate (refused above otherwise)
        return _Gate(gate(x.beta + x.gamma), path, type(module))

    def _self_attention(
        self, module: nn.MultiheadAttention, path: str, args: _Operands, kwargs: _Keywords
    ) -> tuple[_Parts, None]:
        """``nn.MultiheadAttention(x, x, x)`` as torchvision's ViT calls it: its output and no weights."""
        masks = [kwargs.get(name) for name in ("key_padding_mask", "attn_mask")] + list(args[3:4])
        x = args[0] if len(args) >= 3 and args[0] is args[1] is args[2] else None
        if not isinstance(x, _Parts) or any(mask is not None for mask in masks) or kwargs.get("is_causal"):
            raise UnsupportedLayerError(path, type(module), "CD decomposes self-attention (x, x, x) without masks")
        try:
            return _multihead_attention(module, x), None
        except _Refused as refusal:
            raise UnsupportedLayerError(path, type(module), refusal.reason) from None

    def _operation(self, rule: _OperationRule | None, name: str, args: _Operands, kwargs: _Keywords) -> object:
        try:
            if rule is None:
                raise _Refused(None)
            if rule is not _mul and any(isinstance(v, _Gate) for v in _tracked(args, kwargs)):
                raise _Refused(
                    "an operand is the output of a gate (nn.Sigmoid, nn.Hardsigmoid), which CD lets only multiply"
                )
            return rule(args, kwargs)
        except _Refused as refusal:
            assert self.node is not None
            scope, module_type = self.node.meta[_SCOPE]
            path = _join(self.path, scope) or "<model>"
            raise UnsupportedLayerError(path, module_type, refusal.reason, operation=name) from None

    def call_function(self, target: torch.fx.node.Target, args: _Arguments, kwargs: _KeywordArguments) -> object:
        if not _tracked(args, kwargs):
            return super().call_function(target, args, kwargs)
        return self._operation(_FUNCTION_RULES.get(target), _operation_name(target), args, kwargs)

    def call_method(self, target: torch.fx.node.Target, args: _Arguments, kwargs: _KeywordArguments) -> object:
        if not _tracked(args, kwargs):
            return super().call_method(target, args, kwargs)
        assert isinstance(target, str)  # a call_method node names the method
        return self._operation(_METHOD_RULES.get(target), _operation_name(target), args, kwargs)

    def output(self, target: torch.fx.node.Target, args: _Arguments, kwargs: _KeywordArguments) -> _Parts:
        result: object = args[0]
        if isinstance(result, _Gate):
            raise UnsupportedLayerError(
                result.path, result.module_type, "CD uses it only as a gate that multiplies features"
            )
        if not isinstance(result, _Parts):
            raise UnsupportedLayerError(
                self.path or "<model>", type(self.module), "its output is not one tensor computed from its input"
            )
        return result


# --------------------------------------------------------------------------------------------
# Public entry points


def _expand_mask(mask: Tensor, inputs: Tensor) -> Tensor:
    mask = torch.as_tensor(mask, device=inputs.device)
    if inputs.dim() == 4 and mask.dim() in (2, 3):  # (H, W) or (N, H, W): same mask for every channel
        mask = mask.unsqueeze(0) if mask.dim() == 2 else mask
        mask = mask.unsqueeze(1)
    try:
        shape = torch.broadcast_shapes(mask.shape, inputs.shape)  # type: ignore[no-untyped-call]  # torch leaves it unannotated
    except RuntimeError:
        raise ValueError(
            f"mask of shape {tuple(mask.shape)} does not fit inputs of shape {tuple(inputs.shape)}; "
            "expected (H, W), (N, H, W) or (N, C, H, W)"
        ) from None
    if shape != inputs.shape:
        raise ValueError(f"mask of shape {tuple(mask.shape)} is larger than inputs of shape {tuple(inputs.shape)}")
    return mask.to(inputs.dtype)


def contextual_decomposition(
    model: nn.Module, inputs: Tensor, mask: Tensor, *, differentiable: bool = False
) -> tuple[Tensor, Tensor]:
    """Decompose ``model(inputs)`` into the part due to the masked region and the rest.

    Args:
        model: a module torch.fx can trace (or one with a registered rule) whose every node has a
            rule (module docs). Its train/eval mode is respected: call ``model.eval()`` for
            scoring. Rules read the modules' parameters and buffers directly; forward hooks are
            not run.
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
        UnsupportedLayerError: a module or operation of ``model`` has no rule, or torch.fx cannot
            trace it.
    """
    _ensure_builtins()
    if "transformers" in sys.modules:  # its models are only ever built after it is imported
        register_hugging_face_rules()
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


# --------------------------------------------------------------------------------------------
# Hugging Face's ViTForImageClassification, which torch.fx cannot trace: module rules that follow
# its forward (embeddings with the class token and position embeddings, pre-norm blocks of eager
# softmax attention and a GELU MLP, the final norm, the class token's logits). Registered when
# transformers is imported (register_hugging_face_rules).
# --------------------------------------------------------------------------------------------

_HFParts = tuple[Tensor, Tensor]


def _hf_vit_rule(module: nn.Module, beta: Tensor, gamma: Tensor, ctx: DecompositionContext) -> _HFParts:
    """``ViTForImageClassification``: the ViT, then the classifier on the class token; conserves its logits."""
    vit = module.get_submodule("vit")
    blocks = getattr(vit, "layers", None)
    if not isinstance(blocks, nn.ModuleList) or getattr(vit, "pooler", None) is not None:
        raise UnsupportedLayerError(ctx.path or "<model>", type(module), "CD follows transformers 5's ViT layout only")
    inner = DecompositionContext(f"{ctx.path}.vit" if ctx.path else "vit")
    beta, gamma = _hf_embeddings(vit.get_submodule("embeddings"), beta, gamma, inner)
    for index, block in enumerate(blocks):
        beta, gamma = _hf_block(block, beta, gamma, DecompositionContext(f"{inner.path}.layers.{index}"))
    beta, gamma = inner.propagate(vit.get_submodule("layernorm"), beta, gamma, "layernorm")
    return ctx.propagate(module.get_submodule("classifier"), beta[:, 0], gamma[:, 0], "classifier")


def _hf_embeddings(embeddings: nn.Module, beta: Tensor, gamma: Tensor, ctx: DecompositionContext) -> _HFParts:
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


def _hf_block(block: nn.Module, beta: Tensor, gamma: Tensor, ctx: DecompositionContext) -> _HFParts:
    """``x + attention(layernorm_before(x))``, then ``x + mlp(layernorm_after(x))``."""
    normed = ctx.propagate(block.get_submodule("layernorm_before"), beta, gamma, "layernorm_before")
    attended = _hf_attention(block.get_submodule("attention"), *normed, ctx)
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


def _hf_attention(attention: nn.Module, beta: Tensor, gamma: Tensor, ctx: DecompositionContext) -> _HFParts:
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
        register_rule(ViTForImageClassification, _hf_vit_rule)
