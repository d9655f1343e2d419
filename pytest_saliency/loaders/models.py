"""Models from a factory and a state_dict (``weights_only=True``) or from TorchScript."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from ..errors import Location, SpecRuntimeError, first_line
from ..spec.schema import ModelSpec, NormalizeSpec
from .imports import call_factory, resolve_callable


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel on ``(N, C, H, W)`` inputs."""

    mean: Tensor  # (1, C, 1, 1) buffers
    std: Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, inputs: Tensor) -> Tensor:
        return (inputs - self.mean) / self.std


class ModelUnderTest(nn.Module):
    """The user's ``network`` behind an optional :class:`Normalize`, so that attributions are
    taken with respect to the images as stored (in ``[0, 1]``), and ahead of :func:`as_logits`,
    so that every caller sees ``(N, classes)`` logits whatever the network returns."""

    def __init__(
        self,
        network: nn.Module,
        normalize: NormalizeSpec | None,
        output: int | str | None = None,
        location: Location = ("model",),
    ) -> None:
        super().__init__()
        self.normalize = Normalize(normalize.mean, normalize.std) if normalize else nn.Identity()
        self.network = network
        self.output = output
        self.location = location

    def forward(self, inputs: Tensor) -> Tensor:
        return as_logits(self.network(self.normalize(inputs)), self.output, inputs.shape[0], self.location)

    def raw(self, inputs: Tensor) -> object:
        """The network's output as it is (``model.output`` picked), for detectors and segmenters
        (:mod:`pytest_saliency.targets`)."""
        output = self.network(self.normalize(inputs))
        return output if self.output is None else _pick(output, self.output, self.location + ("output",))


def as_logits(output: object, choice: int | str | None, count: int, location: Location = ("model",)) -> Tensor:
    """The ``(N, classes)`` logits in a network's ``output`` for ``count`` inputs.

    ``choice`` (``model.output``) picks an element of a tuple or list (an index) or of a dict (a
    key). A single logit per sample, ``(N,)`` or ``(N, 1)``, is a binary classifier: it becomes
    the two logits ``(-z/2, z/2)`` (class 0, class 1), whose softmax is ``(1 - sigmoid(z),
    sigmoid(z))``, so probabilities stay the model's and class 0 is explained by ``-z``.
    Anything else is a :class:`SpecRuntimeError` at ``location`` (the ``model`` block) that says
    what to write."""
    if choice is not None:
        output = _pick(output, choice, location + ("output",))
    elif isinstance(output, tuple | list | dict):
        raise SpecRuntimeError(location, f"the model returns {_describe(output)}: pick the logits with {_hint(output)}")
    if not isinstance(output, Tensor):
        raise SpecRuntimeError(location, f"the model returns {_describe(output)}, not a tensor of logits (N, classes)")
    if output.dim() == 2 and output.shape[1] == 1:
        output = output[:, 0]
    if output.dim() == 1 and output.shape[0] == count:
        half = output / 2
        return torch.stack((-half, half), dim=1)
    if output.dim() != 2 or output.shape[0] != count:
        raise SpecRuntimeError(
            location,
            f"the model's output is {_shape(output, count)} for {count} images; expected logits (N, classes)"
            + (": reduce it to one score per class in the factory" if output.dim() > 2 else ""),
        )
    return output


def _pick(output: object, choice: int | str, where: Location) -> object:
    if isinstance(output, dict):
        if choice not in output:
            keys = ", ".join(repr(key) for key in output)
            raise SpecRuntimeError(where, f"the model's output has no key {choice!r} (its keys: {keys})")
        return output[choice]
    if isinstance(output, tuple | list):
        if not isinstance(choice, int) or choice >= len(output):
            raise SpecRuntimeError(
                where, f"the model returns {_describe(output)}: output must be an index below {len(output)}"
            )
        return output[choice]
    raise SpecRuntimeError(
        where, f"the model returns {_describe(output)}; output picks from a tuple or dict only: remove it"
    )


def _describe(output: object) -> str:
    if isinstance(output, Tensor):
        return f"a tensor {tuple(output.shape)}"
    if isinstance(output, dict):
        return "a dict {" + ", ".join(f"{key!r}: {_kind(value)}" for key, value in output.items()) + "}"
    if isinstance(output, tuple | list):
        return f"a {type(output).__name__} of {len(output)} (" + ", ".join(_kind(value) for value in output) + ")"
    return f"a {type(output).__name__}"


def _kind(value: object) -> str:
    return f"tensor {tuple(value.shape)}" if isinstance(value, Tensor) else type(value).__name__


def _hint(output: tuple[object, ...] | list[object] | dict[object, object]) -> str:
    """``model.output: <the first tensor's index or key>``."""
    items = output.items() if isinstance(output, dict) else enumerate(output)
    first = next((key for key, value in items if isinstance(value, Tensor)), None)
    return f"model.output: {first}" if first is not None else "model.output"


def _shape(output: Tensor, count: int) -> str:
    return "(" + ", ".join("N" if i == 0 and size == count else str(size) for i, size in enumerate(output.shape)) + ")"


def load_model(
    spec: ModelSpec,
    spec_dir: Path,
    search_paths: Sequence[Path],
    device: torch.device,
    location: Location = ("model",),
) -> ModelUnderTest:
    """Build the model a ``model:`` block names, in eval mode on ``device``."""
    if spec.torchscript is not None:
        path = spec_dir / spec.torchscript
        try:
            network = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]  # torch leaves it unannotated
        except RuntimeError as error:
            raise SpecRuntimeError(
                location + ("torchscript",), f"cannot load TorchScript {spec.torchscript}: {error}"
            ) from None
    else:
        assert spec.factory is not None
        factory = resolve_callable(spec.factory, search_paths, location + ("factory",))
        network = call_factory(factory, dict(spec.kwargs), spec.factory, location + ("factory",))
        if not isinstance(network, nn.Module):
            raise SpecRuntimeError(
                location + ("factory",), f"{spec.factory} returned {type(network).__name__}, not an nn.Module"
            )
        if spec.weights is not None:
            _load_weights(network, spec_dir / spec.weights, spec.weights, location + ("weights",))
    return ModelUnderTest(network, spec.normalize, spec.output, location).to(device).eval()


def _load_weights(network: nn.Module, path: Path, shown: str, location: Location) -> None:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle refusals and corrupt files alike
        message = f"cannot load {shown} as a state_dict (weights_only=True): {first_line(error)}"
        raise SpecRuntimeError(location, message) from error
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
