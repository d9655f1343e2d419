"""The model under test: built from its source (a factory, a torchvision builder, a timm name,
a Hugging Face folder, TorchScript), its weights fitted (:mod:`.weights`), behind the
normalisation the spec or the source gives (:mod:`.preprocessing`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from ..errors import Location, SpecRuntimeError, first_line
from ..spec.schema import ModelSpec, NormalizeSpec
from ..speed import autocast, compiled, contiguous_gradients
from .imports import call_factory, resolve_callable
from .model_sources import build_network
from .preprocessing import model_normalization
from .weights import fit_state_dict, read_state_dict


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


PROBABILITY_FLOOR = 1e-12
"""Probabilities (``model.output_kind: probabilities``) are clamped to this before the log."""


class ExportedNetwork(nn.Module):
    """A ``torch.export`` program's module: it runs in the mode it was exported in (such a module
    refuses ``train()`` and ``eval()``), so switching modes leaves it alone."""

    def __init__(self, program: nn.Module) -> None:
        super().__init__()
        self.program = program

    def train(self, mode: bool = True) -> ExportedNetwork:
        self.training = mode
        return self

    def forward(self, inputs: Tensor) -> object:
        return self.program(inputs)


def _exported_network(path: Path, shown: str, location: Location) -> nn.Module:
    """The program in a ``.pt2`` file, if it takes one batch of images of any size: attributions
    run it on batches of every size (steps, chunks, the last partial batch)."""
    try:
        program = torch.export.load(str(path))
    except Exception as error:  # not a .pt2, another torch version's format
        raise SpecRuntimeError(
            location, f"cannot load {shown} as a torch.export program: {first_line(error)}"
        ) from error
    inputs = [
        node
        for node in program.graph.nodes
        if node.op == "placeholder" and node.name in program.graph_signature.user_inputs
    ]
    if len(inputs) != 1:
        raise SpecRuntimeError(location, f"{shown} takes {len(inputs)} inputs: export a model of one image batch")
    batch = inputs[0].meta["val"].shape[0]
    if not isinstance(batch, torch.SymInt):
        raise SpecRuntimeError(
            location,
            f"{shown} was exported for a fixed batch of {batch}, and attributions run other batch sizes: export it "
            "with a dynamic batch, dynamic_shapes={'x': {0: torch.export.Dim('batch')}}",
        )
    return ExportedNetwork(program.module())


class ModelUnderTest(nn.Module):
    """The user's ``network`` behind an optional :class:`Normalize`, so that attributions are
    taken with respect to the images as stored (in ``[0, 1]``), and ahead of :func:`as_logits`,
    so that every caller sees ``(N, classes)`` logits whatever the network returns. A network
    that returns probabilities (``output_kind="probabilities"``) gives their logs, clamped at
    :data:`PROBABILITY_FLOOR` first: log-probabilities, whose softmax is the probabilities."""

    def __init__(
        self,
        network: nn.Module,
        normalize: NormalizeSpec | None,
        output: int | str | None = None,
        location: Location = ("model",),
        output_kind: str = "logits",
    ) -> None:
        super().__init__()
        self.normalize = Normalize(normalize.mean, normalize.std) if normalize else nn.Identity()
        self.network = network
        self.output = output
        self.location = location
        self.output_kind = output_kind
        self.notes: list[str] = []
        """How the weights were read (a checkpoint key, a stripped prefix), for the reports."""
        self.channels_last = False  # model.memory_format, resolved (pytest_saliency.speed)
        self.precision: torch.dtype | None = None  # model.precision: autocast dtype
        self.compiled = False  # model.compile

    def forward(self, inputs: Tensor) -> Tensor:
        return compiled(self)(inputs) if self.compiled else self.logits(inputs)

    def logits(self, inputs: Tensor) -> Tensor:
        """``(N, classes)`` logits (log-probabilities for ``output_kind: probabilities``); under
        autocast when :attr:`precision` asks, then as float32."""
        if self.channels_last:
            inputs = contiguous_gradients(inputs)  # attributions keep the default layout
        with autocast(inputs.device, self.precision):
            logits = as_logits(self.network(self.normalize(inputs)), self.output, inputs.shape[0], self.location)
        logits = logits if self.precision is None else logits.float()
        if self.output_kind == "probabilities":
            return torch.log(logits.clamp_min(PROBABILITY_FLOOR))
        return logits

    def raw(self, inputs: Tensor) -> object:
        """The network's output as it is (``model.output`` picked), for detectors and segmenters
        (:mod:`pytest_saliency.targets`); its input gradients in the default layout, as :meth:`logits`'s."""
        if self.channels_last:
            inputs = contiguous_gradients(inputs)
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
    elif spec.export is not None:
        network = _exported_network(spec_dir / spec.export, spec.export, location + ("export",))
    elif spec.factory is not None:
        factory = resolve_callable(spec.factory, search_paths, location + ("factory",))
        network = call_factory(factory, dict(spec.kwargs), spec.factory, location + ("factory",))
        if not isinstance(network, nn.Module):
            raise SpecRuntimeError(
                location + ("factory",), f"{spec.factory} returned {type(network).__name__}, not an nn.Module"
            )
    else:
        network = build_network(spec, spec_dir, location)
    notes: list[str] = []
    if spec.weights is not None:
        state, notes = read_state_dict(spec_dir / spec.weights, spec.weights, spec.weights_key, location)
        notes += fit_state_dict(network, state, spec.weights, location + ("weights",))
    # a Hugging Face model returns an ImageClassifierOutput: its logits are its "logits"
    output = "logits" if spec.output is None and spec.huggingface is not None else spec.output
    normalize = model_normalization(spec, spec_dir, location)
    model = ModelUnderTest(network, normalize, output, location, spec.output_kind)
    model.notes = notes
    return model.to(device).eval()
