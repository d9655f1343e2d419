"""Models from a factory and a state_dict (``weights_only=True``) or from TorchScript."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from ..spec.errors import SpecRuntimeError
from ..spec.schema import ModelSpec, NormalizeSpec
from .imports import call_factory, resolve_callable


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel on ``(N, C, H, W)`` inputs."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, inputs: Tensor) -> Tensor:
        return (inputs - self.mean) / self.std


class ModelUnderTest(nn.Module):
    """The user's ``network`` behind an optional :class:`Normalize`, so that attributions are
    taken with respect to the images as stored (in ``[0, 1]``)."""

    def __init__(self, network: nn.Module, normalize: NormalizeSpec | None) -> None:
        super().__init__()
        self.normalize = Normalize(normalize.mean, normalize.std) if normalize else nn.Identity()
        self.network = network

    def forward(self, inputs: Tensor) -> Tensor:
        return self.network(self.normalize(inputs))


def load_model(
    spec: ModelSpec,
    spec_dir: Path,
    search_paths: Sequence[Path],
    device: torch.device,
    location: tuple[str | int, ...] = ("model",),
) -> ModelUnderTest:
    """Build the model a ``model:`` block names, in eval mode on ``device``."""
    if spec.torchscript is not None:
        path = spec_dir / spec.torchscript
        try:
            network = torch.jit.load(str(path), map_location="cpu")
        except RuntimeError as error:
            raise SpecRuntimeError(location + ("torchscript",), f"cannot load TorchScript {spec.torchscript}: {error}") from None
    else:
        assert spec.factory is not None
        factory = resolve_callable(spec.factory, search_paths, location + ("factory",))
        network = call_factory(factory, dict(spec.kwargs), spec.factory, location + ("factory",))
        if not isinstance(network, nn.Module):
            raise SpecRuntimeError(location + ("factory",), f"{spec.factory} returned {type(network).__name__}, not an nn.Module")
        if spec.weights is not None:
            _load_weights(network, spec_dir / spec.weights, spec.weights, location + ("weights",))
    return ModelUnderTest(network, spec.normalize).to(device).eval()


def _load_weights(network: nn.Module, path: Path, shown: str, location: tuple[str | int, ...]) -> None:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle refusals and corrupt files alike
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise SpecRuntimeError(location, f"cannot load {shown} as a state_dict (weights_only=True): {first_line}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise SpecRuntimeError(location, f"{shown} holds a {type(state).__name__}, not a state_dict")
    expected = network.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    mismatched = [
        f"{key} {tuple(value.shape)} vs model {tuple(expected[key].shape)}"
        for key, value in state.items()
        if key in expected and tuple(value.shape) != tuple(expected[key].shape)
    ]
    parts = [
        f"{label} {_few(names)}"
        for label, names in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched))
        if names
    ]
    if parts:
        raise SpecRuntimeError(location, f"{shown} does not fit the model: {'; '.join(parts)}")
    network.load_state_dict(state)


def _few(names: Sequence[str], shown: int = 3) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more
