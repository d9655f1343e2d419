"""Reality checks of the explanation itself: parameter randomisation, random logit and eMPRT.

Sources (formulas and defaults in ``docs/methods.md``, "Parameter randomisation and random logit"):

- Model parameter randomisation (Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS
  2018): re-initialise the layers of a copy of the model from the output down, cumulatively
  (``cascading``) or one at a time (``independent``), and compare each explanation with the
  trained model's by Spearman rank correlation (signed or absolute maps) or SSIM.
- Random logit (Sixt, Granz and Landgraf, "When Explanations Lie", ICML 2020): the similarity
  between the explanation of the target class and that of a uniformly drawn other class.
- Efficient MPRT (Hedström et al., "Sanity Checks Revisited", 2023): the relative rise of the
  explanation's histogram entropy from the trained to the fully randomised model,
  ``(H(ê) − H(e)) / H(e)``.

Re-initialisation uses each layer's own ``reset_parameters()`` after ``torch.manual_seed(seed +
1)`` inside :func:`torch.random.fork_rng`, the convention of Quantus 0.6.0's MPRT: with the same
seed both draw the same weights, and the caller's random state is left as it was. BatchNorm's
``reset_parameters()`` sets the running mean to 0, the running variance to 1 and the affine
weight and bias to 1 and 0 (the identity up to ``eps``): nothing is drawn, so nothing can be
negative or NaN. The model passed in is never modified: the functions draw on deep copies and
step a copy they are given (:func:`randomised_steps`).

Everything is batched over samples; an undefined value (a constant map has no ranks and no
entropy) is NaN.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .seeding import per_sample_draws

Similarity = Literal["spearman", "spearman_abs", "ssim"]
SIMILARITIES: tuple[str, ...] = ("spearman", "spearman_abs", "ssim")
Order = Literal["cascading", "independent"]

SSIM_WINDOW = 7
"""Side of the uniform SSIM window (scikit-image's default, which Quantus uses)."""
SSIM_K1, SSIM_K2 = 0.01, 0.03
ENTROPY_BINS = 100
"""Histogram bins of eMPRT's entropy (the paper's and Quantus' default)."""
SALT_OTHER_CLASS = 0x81
"""The salt of random logit's per-sample draw of the other class (docs/methods.md)."""


# --- similarities ----------------------------------------------------------------------------


def average_ranks(values: Tensor) -> Tensor:
    """Ranks ``1..F`` of each row of ``(N, ...)`` values, flattened to ``(N, F)`` float64; tied
    values share the mean of their ranks (``scipy.stats.rankdata(method="average")``)."""
    flat = values.flatten(1)
    n, f = flat.shape
    ordered, order = flat.sort(dim=1)  # ties need no stable order: they share one rank
    boundary = ordered[:, 1:] != ordered[:, :-1]
    true = torch.ones(n, 1, dtype=torch.bool, device=flat.device)
    starts, ends = torch.cat([true, boundary], dim=1), torch.cat([boundary, true], dim=1)
    positions = torch.arange(f, device=flat.device).expand(n, f)
    first = torch.where(starts, positions, 0).cummax(dim=1).values  # where each tie group starts
    last = torch.where(ends, positions, f).flip(1).cummin(dim=1).values.flip(1)  # and ends
    ranked = (first + last).double() / 2 + 1
    return torch.empty_like(ranked).scatter_(1, order, ranked)


def _pearson(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise Pearson correlation of ``(N, F)`` float64 rows; NaN where a row is constant."""
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    denominator = (a.square().sum(dim=1) * b.square().sum(dim=1)).sqrt()
    return torch.where(denominator > 0, (a * b).sum(dim=1) / denominator, torch.nan)


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Spearman rank correlation of signed maps, ``(N, ...)`` twice in, ``(N,)`` float64 out;
    NaN where either map is constant (or holds NaN)."""
    return similarity_to("spearman", a)(b)


def spearman_abs(a: Tensor, b: Tensor) -> Tensor:
    """Spearman rank correlation of the absolute maps (Adebayo et al.'s "absolute value"
    variant), ``(N, ...)`` twice in, ``(N,)`` out."""
    return similarity_to("spearman_abs", a)(b)


def ssim(a: Tensor, b: Tensor, window: int = SSIM_WINDOW) -> Tensor:
    """Mean structural similarity of ``(N, H, W)`` map pairs, ``(N,)`` float64 out.

    scikit-image's ``structural_similarity`` with its defaults: a ``window x window`` uniform
    window, sample covariances, ``K1 = 0.01``, ``K2 = 0.03``, the mean over the positions whose
    window lies inside the image, and ``data_range`` the spread of the pair (max minus min over
    both maps, as Quantus passes it). NaN where either map is constant (it has no structure; the
    index of a constant map would be near 0, the best possible score) or holds NaN."""
    if a.dim() != 3 or a.shape != b.shape:
        raise ValueError(f"ssim needs two (N, H, W) maps of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if min(a.shape[1:]) < window:
        raise ValueError(f"ssim needs maps of at least {window}x{window} pixels, got {tuple(a.shape[1:])}")
    x, y = a.double().unsqueeze(1), b.double().unsqueeze(1)
    both = torch.cat([x.flatten(1), y.flatten(1)], dim=1)
    data_range = (both.amax(dim=1) - both.amin(dim=1)).view(-1, 1, 1, 1)

    def mean(values: Tensor) -> Tensor:  # over each window inside the image
        return F.avg_pool2d(values, window, stride=1)

    ux, uy = mean(x), mean(y)
    correction = window * window / (window * window - 1)  # sample covariance
    vx = correction * (mean(x * x) - ux * ux)
    vy = correction * (mean(y * y) - uy * uy)
    vxy = correction * (mean(x * y) - ux * uy)
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    index = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    undefined = _constant_or_nan(a) | _constant_or_nan(b)
    return torch.where(undefined, torch.nan, index.flatten(1).mean(dim=1))


def _constant_or_nan(maps: Tensor) -> Tensor:
    """``(N,)`` bool: the rows of ``(N, ...)`` maps that are constant or hold NaN."""
    flat = maps.flatten(1)
    return (flat.amax(dim=1) == flat.amin(dim=1)) | flat.isnan().any(dim=1)


def similarity(name: Similarity, a: Tensor, b: Tensor) -> Tensor:
    """The named similarity of ``(N, H, W)`` map pairs, ``(N,)`` float64 out."""
    return similarity_to(name, a)(b)


def similarity_to(name: Similarity, reference: Tensor) -> Callable[[Tensor], Tensor]:
    """``compare(maps)``: the named similarity of ``(N, H, W)`` maps with the fixed ``(N, H, W)``
    ``reference`` maps, ``(N,)`` float64; the reference's ranks are computed once, not at each
    comparison (a randomisation test compares one reference with every step)."""
    if name == "ssim":
        return lambda maps: ssim(reference, maps)
    if name not in ("spearman", "spearman_abs"):
        raise ValueError(f"unknown similarity {name!r}; expected one of {SIMILARITIES}")
    prepare: Callable[[Tensor], Tensor] = (lambda maps: maps.abs()) if name == "spearman_abs" else (lambda maps: maps)
    reference_ranks = average_ranks(prepare(reference))
    reference_broken = reference.flatten(1).isnan().any(dim=1)

    def compare(maps: Tensor) -> Tensor:
        rho = _pearson(reference_ranks, average_ranks(prepare(maps)))
        broken = reference_broken.to(rho.device) | maps.flatten(1).isnan().any(dim=1).to(rho.device)
        return torch.where(broken, torch.nan, rho)

    return compare


def self_similarity(maps: Tensor) -> Tensor:
    """The similarity of ``(N, H, W)`` maps with themselves, ``(N,)`` float64: 1 by every
    measure here, NaN for a constant map (no ranks, no structure) or one holding NaN."""
    ones = torch.ones(maps.shape[0], dtype=torch.float64, device=maps.device)
    return torch.where(_constant_or_nan(maps), torch.nan, ones)


# --- eMPRT -----------------------------------------------------------------------------------


def histogram_entropy(maps: Tensor, bins: int = ENTROPY_BINS) -> Tensor:
    """Shannon entropy (nats) of each map's histogram, ``(N, ...)`` in, ``(N,)`` float64 out.

    ``bins`` equal bins from the map's minimum to its maximum, binned exactly as
    ``numpy.histogram(map, bins)`` does (the last bin includes its right edge); a constant map
    has one full bin and entropy 0; a map holding NaN has no histogram: NaN."""
    flat = maps.flatten(1).double()
    broken = flat.isnan().any(dim=1)
    flat = torch.where(broken.unsqueeze(1), 0.0, flat)  # binned as a constant map, then NaN
    n = flat.shape[0]
    low = flat.amin(dim=1, keepdim=True)
    span = flat.amax(dim=1, keepdim=True) - low
    constant = span == 0
    span = torch.where(constant, 1.0, span)
    low = torch.where(constant, low - 0.5, low)  # numpy's range for a constant map
    step = span / bins
    edges = low + step * torch.arange(bins + 1, device=flat.device, dtype=torch.float64)
    edges[:, -1:] = low + span
    index = ((flat - low) * (bins / span)).floor().long().clamp(0, bins)
    index = index - (index == bins).long()
    index = index - (flat < edges.gather(1, index)).long()
    index = index + ((flat >= edges.gather(1, index + 1)) & (index != bins - 1)).long()
    counts = torch.zeros(n, bins, dtype=torch.float64, device=flat.device).scatter_add_(1, index, torch.ones_like(flat))
    probabilities = counts / flat.shape[1]
    entropy = 0.0 - torch.special.xlogy(probabilities, probabilities).sum(dim=1)  # 0.0 -: no -0
    return torch.where(broken, torch.nan, entropy)


def efficient_mprt_score(original: Tensor, randomised: Tensor, bins: int = ENTROPY_BINS) -> Tensor:
    """eMPRT's ``(H(ê) − H(e)) / H(e)`` per sample: ``e`` the trained model's ``(N, ...)`` maps,
    ``ê`` the fully randomised model's; ``(N,)`` float64, higher is better (the explanation
    grows more disordered as the model loses its training). NaN where ``H(e) = 0`` (a map with
    a single occupied bin) and where either map holds NaN."""
    before = histogram_entropy(original, bins)
    after = histogram_entropy(randomised, bins)
    return torch.where(before > 0, (after - before) / before, torch.nan)


# --- randomisation ---------------------------------------------------------------------------


def parameterised_layers(model: nn.Module) -> list[str]:
    """Dotted names of the modules of ``model`` that hold parameters of their own, in reverse
    definition order (what Quantus' MPRT randomises top-down; :func:`computation_order` gives the
    order of the computation)."""
    names = [name for name, module in model.named_modules() if next(module.parameters(recurse=False), None) is not None]
    return names[::-1]


def computation_order(model: nn.Module, network: nn.Module, inputs: Tensor) -> tuple[list[str], list[str]]:
    """``(top_down, detached)``: the parameterised layers of ``network`` (a part of ``model``;
    dotted names in it) in the order of the computation from the output down, and those whose
    output does not reach ``model``'s output at all.

    One forward pass of ``model`` on ``inputs`` ``(B, C, H, W)`` records when each layer's forward
    ends (forward hooks), and one backward pass from the output's sum asks autograd whether each
    layer's output lies on a path to it. ``top_down`` is the reverse of the recorded order
    (layers the pass never called, or that hooks cannot watch, follow in reverse definition
    order); ``detached`` lists, in that order, the called layers whose output requires a gradient
    but receives none (an unused head). The model is not changed."""
    known = parameterised_layers(network)
    finished: dict[str, Tensor | None] = {}
    handles = []
    for name in known:

        def record(module: nn.Module, args: object, output: object, name: str = name) -> None:
            first = output[0] if isinstance(output, tuple | list) and output else output
            finished.setdefault(name, first if isinstance(first, Tensor) else None)

        try:
            handles.append(network.get_submodule(name).register_forward_hook(record))
        except RuntimeError:  # a TorchScript module takes no hooks
            continue
    try:
        with torch.enable_grad():
            output = model(inputs.detach().clone().requires_grad_(True))
    finally:
        for handle in handles:
            handle.remove()
    watched = {name: tensor for name, tensor in finished.items() if tensor is not None and tensor.requires_grad}
    gradients = torch.autograd.grad(output.sum(), list(watched.values()), allow_unused=True) if watched else ()
    reaching = {name: gradient is not None for name, gradient in zip(watched, gradients, strict=True)}
    top_down = [*reversed(finished), *(name for name in known if name not in finished)]
    return top_down, [name for name in top_down if reaching.get(name) is False]


def reinitialise(module: nn.Module, seed: int) -> None:
    """Re-draw ``module``'s parameters in place: ``reset_parameters()`` of the module and of every
    module inside it that holds parameters, after ``torch.manual_seed(seed + 1)`` in a forked
    random state (Quantus' convention; the caller's random state is untouched).

    Raises ``TypeError`` naming a parameterised module that has no ``reset_parameters``."""
    targets = [(name, m) for name, m in module.named_modules() if next(m.parameters(recurse=False), None) is not None]
    for name, target in targets:
        if not callable(getattr(target, "reset_parameters", None)):
            where = f"{name!r} " if name else ""
            raise TypeError(f"module {where}({type(target).__name__}) has parameters but no reset_parameters()")
    # manual_seed re-seeds every CUDA device, so every one is restored (not only the model's)
    cuda_in_use = torch.cuda.is_initialized()  # type: ignore[no-untyped-call]  # torch leaves it unannotated
    devices = range(torch.cuda.device_count()) if cuda_in_use else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        torch.manual_seed(seed + 1)
        for _, target in targets:
            target.reset_parameters()


def randomised_state(model: nn.Module, layer: str, seed: int) -> dict[str, Tensor]:
    """The state dict of ``model``'s ``layer`` (a dotted name) after :func:`reinitialise` with
    ``seed``, drawn on a deep copy of that layer alone. Nothing drawn depends on the weights the
    layer had, so this is the layer's state at its step in either order.

    Raises ``TypeError`` like :func:`reinitialise`."""
    module = copy.deepcopy(model.get_submodule(layer))
    reinitialise(module, seed)
    return module.state_dict()


def randomised_steps(
    model: nn.Module,
    randomised: nn.Module,
    layers: Sequence[str],
    states: Iterable[dict[str, Tensor]],
    order: Order,
) -> Iterator[tuple[str, nn.Module]]:
    """Yield ``(layer, randomised)`` for each of ``layers`` (dotted names in ``model``), with
    ``states`` the layers' :func:`randomised_state` in the same order.

    ``randomised`` is a copy of ``model`` (the same architecture) that is first given ``model``'s
    weights, then changed step by step: ``cascading``, the copy at step ``k`` has ``layers[:k + 1]``
    re-initialised (pass the layers top-down for Adebayo et al.'s cascade); ``independent``, only
    ``layers[k]``, the others as trained. The copy yielded is valid until the next step (it is
    the same object each time); ``model`` itself is never modified."""
    randomised.load_state_dict(model.state_dict())
    for layer, state in zip(layers, states, strict=False):
        module = randomised.get_submodule(layer)
        module.load_state_dict(state)
        yield layer, randomised
        if order == "independent":
            module.load_state_dict(model.get_submodule(layer).state_dict())


def randomised_models(
    model: nn.Module, layers: Sequence[str], order: Order, seed: int
) -> Iterator[tuple[str, nn.Module]]:
    """:func:`randomised_steps` on one deep copy of ``model``, each layer drawn by
    :func:`randomised_state` with ``seed`` when its step comes, so the weights of a layer are the
    same in both orders and whatever the batch size."""
    states = (randomised_state(model, layer, seed) for layer in layers)
    return randomised_steps(model, copy.deepcopy(model), layers, states, order)


def other_classes(targets: Tensor, num_classes: int, seed: int, indices: Sequence[int]) -> Tensor:
    """For each ``(N,)`` target a class drawn uniformly from the ``num_classes - 1`` others,
    ``(N,)`` long on the targets' device. Sample ``i``'s draw is seeded by ``seed`` and its index
    ``indices[i]`` in the data set (:func:`~pytest_saliency.metrics.seeding.per_sample_draws`, a
    32-bit draw modulo ``num_classes - 1``), so it is the same whatever the device, the batch or
    the shard the sample is in."""
    if num_classes < 2:
        raise ValueError(f"random logit needs at least 2 classes, the model has {num_classes}")
    draws = per_sample_draws(indices, (), seed, SALT_OTHER_CLASS, "bits") % (num_classes - 1)
    cpu_targets = targets.cpu()
    return (draws + (draws >= cpu_targets).long()).to(targets.device)
