"""Captum attribution methods by name: batched, device-aware, with spec-level errors.

Every ``captum.attr`` class can be named in a spec. Layer methods (``LayerGradCam`` ...) take a
``layer`` (a dotted module name in the user's network) and their maps are upsampled to the input
size. ``IntegratedGradients``-style methods get ``internal_batch_size`` = the data batch size
unless the spec sets one, so their ``n_steps`` expansion never holds more than one batch of
inputs at a time (captum #245, #538).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention.capture import AttentionError
from .attention.maps import attention_map
from .errors import Location, SpecRuntimeError, did_you_mean, first_line
from .loaders.models import ModelUnderTest
from .memory import is_out_of_memory
from .metrics.detection_probabilities import class_probabilities
from .metrics.drise import drise
from .metrics.image import edge_map, gaussian_blur
from .metrics.seeding import per_sample_draws, seeded_generator
from .spec.schema import (
    ATTENTION_METHODS,
    AUTO_LAYER,
    BUILTIN_METHODS,
    DRISE_METHOD,
    EDGE_METHOD,
    RANDOM_METHOD,
    ROLLOUT_METHOD,
    AttributionSpec,
)
from .targets import MatchedDetection, ScoreModel, detections
from .tokens import (
    GridLayout,
    GridView,
    LayoutError,
    grid_view,
    infer_layout,
    output_shapes,
    patch_size,
    pick_cam_layer,
    resolve_layer,
)

if TYPE_CHECKING:
    from captum.attr import Attribution


def _tuples(value: object) -> object:
    """YAML lists -> tuples (captum wants tuples for shapes such as sliding_window_shapes)."""
    if isinstance(value, list):
        return tuple(_tuples(item) for item in value)
    if isinstance(value, dict):
        return _keywords(value)
    return value


def _keywords(given: Mapping[str, object]) -> dict[str, object]:
    """Keyword arguments from the spec, their YAML lists as tuples (:func:`_tuples`)."""
    return {key: _tuples(item) for key, item in given.items()}


def _check_kwargs(function: Callable[..., object], given: Mapping[str, object], what: str, location: Location) -> None:
    parameters = inspect.signature(function).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    for key in given:
        if key not in parameters:
            raise SpecRuntimeError(location + (key,), f"{what} has no parameter {key!r}{did_you_mean(key, parameters)}")


SALT_RANDOM_MAP, SALT_UNIFORM_BASELINE = 0x71, 0x72
"""Salts of the per-sample draws (:func:`~pytest_saliency.metrics.seeding.per_sample_draws`)."""

GUIDED_METHODS = frozenset({"GuidedGradCam", "GuidedBackprop"})
"""captum methods that change the backward pass of ``nn.ReLU`` modules (and of nothing else)."""

STOCHASTIC_METHODS = frozenset({"GradientShap", "LayerGradientShap", "ShapleyValueSampling", "Lime", "KernelShap"})
"""captum methods that draw from torch's global generator: called one sample at a time, the
generator seeded by the spec's seed and the sample's index (as any method with a noise tunnel)."""


def make_baseline(kind: str | float, images: Tensor, indices: Sequence[int] = (), seed: int = 0) -> Tensor:
    """A reference input for ``images`` ``(N, C, H, W)`` (the samples ``indices``): zeros,
    per-image channel mean, blur (the fidelity check's
    :func:`~pytest_saliency.metrics.image.gaussian_blur`), uniform noise in [0, 1] drawn per
    sample, or a constant."""
    if isinstance(kind, float):
        return torch.full_like(images, kind)
    if kind == "zeros":
        return torch.zeros_like(images)
    if kind == "mean":
        return images.mean(dim=(2, 3), keepdim=True).expand_as(images).contiguous()
    if kind == "blur":
        return gaussian_blur(images)
    if kind == "uniform":
        noise = per_sample_draws(indices, tuple(images.shape[1:]), seed, SALT_UNIFORM_BASELINE, "uniform")
        return noise.to(images.device, images.dtype)
    raise ValueError(f"unknown baseline {kind!r}")


class Attributor:
    """One configured captum method for a model; call it on batches.

    ``location`` is where the method is declared in the spec (for error messages).
    """

    def __init__(
        self, spec: AttributionSpec, model: ModelUnderTest | ScoreModel, batch_size: int, location: Location
    ) -> None:
        import captum.attr

        self.spec = spec
        self.model = model
        self.location = location
        self.layer_name: str | None = None if spec.layer == AUTO_LAYER else spec.layer
        """The layer a layer method attributes to (``layer: auto`` picks it on the first call)."""
        self.layout = GridLayout()
        """How that layer's output becomes a grid (see :mod:`~pytest_saliency.tokens`)."""
        self._grid_of: tuple[nn.Module, GridView] | None = None
        self._laid_out_for: tuple[int, int] | None = None
        self.batch_size = batch_size
        if spec.method in BUILTIN_METHODS:
            return
        method_class = getattr(captum.attr, spec.method, None)
        if not isinstance(method_class, type):
            raise SpecRuntimeError(location + ("method",), f"captum.attr has no method {spec.method!r}")
        self._init = _keywords(spec.init)
        _check_kwargs(method_class.__init__, self._init, f"{spec.method}()", location + ("init",))  # type: ignore[misc]  # the very class that is called: no other subclass's __init__
        self._method_class = method_class
        # layer: auto is picked on the first call; until then the network stands in for it.
        layer = None if spec.layer is None else self._layer(self.layer_name) if self.layer_name else model.network
        self.params = _keywords(spec.params)
        attribute = self._bare(layer).attribute
        _check_kwargs(attribute, self.params, f"{spec.method}.attribute()", location + ("params",))
        accepted = inspect.signature(attribute).parameters
        if "internal_batch_size" in accepted and "internal_batch_size" not in self.params:
            self.params["internal_batch_size"] = spec.internal_batch_size or batch_size
        self.takes_baselines = "baselines" in accepted
        if spec.baseline is not None and not self.takes_baselines:
            raise SpecRuntimeError(location + ("baseline",), f"{spec.method} takes no baseline; remove baseline")
        self.method = self._build(layer)

    def _layer(self, name: str) -> nn.Module:
        return resolve_layer(self.model.network, name, self.location + ("layer",))

    def _bare(self, layer: nn.Module | None) -> Attribution:
        """The captum method, for ``layer`` if it is a layer method."""
        return (
            self._method_class(self.model, **self._init)
            if layer is None
            else self._method_class(self.model, layer, **self._init)
        )

    def _build(self, layer: nn.Module | None) -> Attribution:
        """The captum method, for ``layer`` if it is a layer method, in its noise tunnel if any."""
        import captum.attr

        method = self._bare(layer)
        return captum.attr.NoiseTunnel(method) if self.spec.noise_tunnel is not None else method

    def _lay_out(self, images: Tensor) -> None:
        """Picks the layer (``layer: auto``) and reads its output's layout for ``images``' size,
        once per input size; a token or channels-last layer is attributed through a
        :class:`~pytest_saliency.tokens.GridView` of it."""
        size = (int(images.shape[2]), int(images.shape[3]))
        if self.spec.layer is None or self._laid_out_for == size:
            return
        network = self.model.network
        shapes = output_shapes(self.model, images[:1].detach())
        shapes = [(name.removeprefix("network."), shape) for name, shape in shapes if name.startswith("network.")]
        where = self.location + ("layer",)
        try:
            if self.layer_name is None:
                self.layer_name = pick_cam_layer(network, shapes, size)
            shape = dict(shapes).get(self.layer_name)
            if shape is None:
                raise LayoutError("is not called by the model's forward")
            reshape = self.spec.reshape
            self.layout = infer_layout(
                shape,
                size,
                patch_size(network),
                self._layer(self.layer_name),
                prefix_tokens=reshape.prefix_tokens if reshape else None,
                grid=(reshape.grid[0], reshape.grid[1]) if reshape and reshape.grid else None,
                channels_last=reshape.channels_last if reshape else None,
            )
        except LayoutError as error:
            raise SpecRuntimeError(where, f"layer {self.layer_name or AUTO_LAYER!r} {error}") from None
        layer = self._layer(self.layer_name)
        if self.layout.is_identity:
            self._grid_of = None
            self.method = self._build(layer)
        else:
            view = GridView()
            self._grid_of = (layer, view)
            self.method = self._build(view)
        self._laid_out_for = size

    @property
    def note(self) -> str:
        """What a report says about this method, or "": the layer that ``layer: auto`` picked or
        that is read as tokens or channels-last, and that a guided method on a network without
        ``nn.ReLU`` (GELU) reduces to the plain gradient (``GuidedGradCam``: Grad-CAM × gradient)."""
        parts = []
        if self.layer_name and (self.spec.layer == AUTO_LAYER or not self.layout.is_identity):
            parts.append(f"attributes to layer {self.layer_name} ({self.layout.describe()})")
        if self.spec.method in GUIDED_METHODS and not any(isinstance(m, nn.ReLU) for m in self.model.modules()):
            plain = "Grad-CAM × gradient" if self.spec.method == "GuidedGradCam" else "the input gradient"
            parts.append(f"guided backpropagation guides ReLUs only and this network has none: this is {plain}")
        return "; ".join(parts)

    @property
    def stochastic(self) -> bool:
        """The method draws from torch's global generator (a noise tunnel, sampling methods)."""
        return self.spec.noise_tunnel is not None or self.spec.method in STOCHASTIC_METHODS

    def __call__(self, images: Tensor, target: Tensor, indices: Sequence[int], seed: int) -> Tensor:
        """Attributions for ``(N, C, H, W)`` images (the samples ``indices``) and ``(N,)``
        targets, ``(N, C', H, W)``; every random draw is seeded by ``seed`` and the sample's
        index, so a sample's map does not depend on its batch.

        ``method: random`` gives uniform noise in [0, 1): the reference a real method must beat.
        ``method: edge`` gives the Sobel gradient magnitude of each image channel
        (:func:`~pytest_saliency.metrics.image.edge_map`): it ignores the model, so a parameter
        randomisation check must fail it."""
        if self.spec.method == RANDOM_METHOD:
            shape = tuple(images.shape[1:])
            return per_sample_draws(indices, shape, seed, SALT_RANDOM_MAP, "uniform").to(images.device)
        if self.spec.method == EDGE_METHOD:
            return edge_map(images.detach().float())
        if self.spec.method == DRISE_METHOD:
            return self._drise(images, target, seed)
        if self.spec.method in ATTENTION_METHODS:
            return self._attention(images, target)
        self._lay_out(images)
        if not self.stochastic:
            return self._attribute(images, target, indices, seed)
        maps = []
        devices = [images.device] if images.device.type == "cuda" else []
        for position, index in enumerate(indices):
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(seeded_generator(seed, SALT_RANDOM_MAP, int(index)).initial_seed())
                one = slice(position, position + 1)
                maps.append(self._attribute(images[one], target[one], [index], seed))
        return torch.cat(maps)

    def _drise(self, images: Tensor, rows: Tensor, seed: int) -> Tensor:
        """``(N, 1, H, W)`` D-RISE maps of the detection samples ``rows`` (:mod:`.metrics.drise`)."""
        scored = self.model
        if not isinstance(scored, ScoreModel) or not isinstance(scored.target, MatchedDetection):
            raise SpecRuntimeError(
                self.location + ("method",), "DRISE explains a detector's objects: set task: detection"
            )
        objects, detector = scored.target, scored.model
        explain: Callable[..., Tensor] = drise  # called with the spec's params as its keywords
        with class_probabilities(detector.network):  # torchvision's R-CNNs: each detection's softmax row
            maps = explain(
                lambda masked: detections(detector.raw(masked), masked.shape[0]),
                images.detach(),
                objects.boxes[rows],
                objects.labels[rows],
                objects.images[rows].tolist(),
                batch_size=self.batch_size,
                seed=seed,
                **self.spec.params,
            )
        return maps.unsqueeze(1)

    def _attribute(self, images: Tensor, target: Tensor, indices: Sequence[int], seed: int) -> Tensor:
        params = dict(self.params)
        if self.spec.baseline is not None:
            params["baselines"] = make_baseline(self.spec.baseline, images, indices, seed)
        if self.spec.noise_tunnel is not None:
            tunnel = self.spec.noise_tunnel
            params.update(nt_type=tunnel.nt_type, nt_samples=tunnel.nt_samples, stdevs=tunnel.stdevs)
            params.pop("internal_batch_size", None)
        inputs = images.detach().clone().requires_grad_(True)  # captum warns on inputs without grad
        try:
            with grid_view(*self._grid_of, self.layout) if self._grid_of else nullcontext():
                result = self.method.attribute(inputs, target=target, **params)
        except (TypeError, ValueError, AssertionError, RuntimeError) as error:
            if is_out_of_memory(error):
                raise  # the engine retries at half the batch
            raise SpecRuntimeError(self.location, f"{self.spec.method} failed: {first_line(error)}") from error
        if isinstance(result, tuple):
            result = result[0]
        result = result.detach()
        if result.dim() == 4 and result.shape[-2:] != images.shape[-2:]:
            result = F.interpolate(result, size=images.shape[-2:], mode="bilinear", align_corners=False)
        maps: Tensor = result.float()
        return maps

    def _attention(self, images: Tensor, target: Tensor) -> Tensor:
        """``(N, 1, H, W)`` attention rollout or relevance maps, upsampled from the patch grid."""
        reshape = self.spec.reshape
        options = self.spec.rollout if self.spec.method == ROLLOUT_METHOD else None
        try:
            maps = attention_map(
                self.model,
                self.model.network,
                images,
                target,
                gradient_weighted=options is None,
                head_fusion=options.head_fusion if options else "mean",
                discard_ratio=options.discard_ratio if options else 0.0,
                prefix_tokens=reshape.prefix_tokens if reshape else None,
                grid=(reshape.grid[0], reshape.grid[1]) if reshape and reshape.grid else None,
            )
        except (AttentionError, LayoutError) as error:
            raise SpecRuntimeError(self.location + ("method",), f"{self.spec.method}: the model {error}") from None
        upsampled = F.interpolate(maps, size=images.shape[-2:], mode="bilinear", align_corners=False)
        return upsampled.detach().float()
