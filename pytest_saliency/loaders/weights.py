"""Weights files as they ship, read without executing code, fitted to a network.

- ``.safetensors`` through the ``safetensors`` library; any other suffix (``.pt``, ``.pth``,
  ``.bin``, ``.ckpt``) through ``torch.load(weights_only=True)``, with a few plain Python objects
  that training checkpoints hold besides the weights allowed (argparse's ``Namespace`` of timm's
  training script, paths, Lightning's hyper-parameter ``AttributeDict``, read as a plain dict);
- a checkpoint dict: the state_dict under ``weights_key``, or under the first of
  :data:`CHECKPOINT_KEYS` it has (a note names the key);
- wrapper prefixes (:data:`WRAPPER_PREFIXES`) stripped when every key has one and the stripped
  keys fit the network (a note says so);
- a whole pickled model is refused: it would run code to load.
"""

from __future__ import annotations

import argparse
import pathlib
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from ..errors import Location, SpecRuntimeError, first_line

CHECKPOINT_KEYS = (
    "state_dict",
    "model_state_dict",
    "model",
    "net",
    "network",
    "state_dict_ema",
    "model_ema",
    "ema_state_dict",
    "ema",
)
"""Where training scripts keep the weights in a checkpoint dict (PyTorch Lightning, the PyTorch
tutorials, timm, torchvision's references, ...), the trained weights before their EMA copies."""
WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.")
"""What wrappers put before every key: DataParallel/DDP, ``torch.compile``, Lightning modules."""


LIGHTNING_ATTRIBUTE_DICTS = (
    "lightning.fabric.utilities.data.AttributeDict",
    "pytorch_lightning.utilities.parsing.AttributeDict",
)
SAFE_GLOBALS: list[Callable[..., object] | tuple[Callable[..., object], str]] = [
    argparse.Namespace,
    pathlib.PosixPath,
    pathlib.WindowsPath,
    pathlib.PurePosixPath,
    pathlib.PureWindowsPath,
    *((dict, name) for name in LIGHTNING_ATTRIBUTE_DICTS),  # read as a plain dict: Lightning is not imported
]
"""Plain data classes allowed besides tensors when a checkpoint is unpickled."""


def read_state_dict(
    path: Path, shown: str, weights_key: str | None, block: Location
) -> tuple[dict[str, Tensor], list[str]]:
    """The ``{name: tensor}`` state_dict in the file at ``path`` (``shown`` as the spec writes it)
    and the notes on how it was found. Every refusal is a :class:`SpecRuntimeError` at the
    ``weights`` or ``weights_key`` key of the model ``block``."""
    location = block + ("weights",)
    content = _read(path, shown, location)
    if _is_state_dict(content):
        if weights_key is not None:
            raise SpecRuntimeError(
                block + ("weights_key",), f"{shown} is a state_dict, not a checkpoint dict: remove weights_key"
            )
        assert isinstance(content, Mapping)
        return dict(content), []
    if not isinstance(content, Mapping):
        raise SpecRuntimeError(location, f"{shown} holds a {type(content).__name__}, not a state_dict")
    keys = ", ".join(repr(key) for key in content)
    if weights_key is not None:
        where = block + ("weights_key",)
        if weights_key not in content:
            raise SpecRuntimeError(where, f"{shown} has no key {weights_key!r} (its keys: {keys}): fix weights_key")
        if not _is_state_dict(content[weights_key]):
            raise SpecRuntimeError(where, f"{shown}[{weights_key!r}] is not a state_dict of tensors: fix weights_key")
        return dict(content[weights_key]), [f"weights: the state_dict under {weights_key!r} of {shown}"]
    found = [key for key in CHECKPOINT_KEYS if key in content and _is_state_dict(content[key])]
    if not found:
        raise SpecRuntimeError(
            location,
            f"{shown} is a dict with keys {keys} and none is a known state_dict key: "
            "name the one that holds the weights with model.weights_key",
        )
    others = f" (it also has {', '.join(repr(key) for key in found[1:])}: choose with weights_key)" if found[1:] else ""
    return dict(content[found[0]]), [f"weights: the checkpoint's {found[0]!r} key of {shown}{others}"]


def fit_state_dict(network: nn.Module, state: dict[str, Tensor], shown: str, location: Location) -> list[str]:
    """Load ``state`` into ``network``; a wrapper prefix that every key has is stripped when the
    stripped keys fit (the note returned says so). A state that does not fit is a
    :class:`SpecRuntimeError` naming the first keys that differ."""
    expected = network.state_dict()
    notes = []
    stripped, prefixes = _strip_prefixes(state)
    if prefixes and _differences(expected, state) and not _differences(expected, stripped):
        state = stripped
        shown_prefixes = " then ".join(repr(prefix) for prefix in prefixes)
        notes.append(f"weights: stripped the prefix {shown_prefixes} that every key of {shown} has")
    parts = _differences(expected, state)
    if parts:
        raise SpecRuntimeError(location, f"{shown} does not fit the model: {'; '.join(parts)}")
    network.load_state_dict(state)
    return notes


def _read(path: Path, shown: str, location: Location) -> object:
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError) as error:
            raise SpecRuntimeError(location, f"cannot read {shown} as safetensors: {first_line(error)}") from None
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle refusals and corrupt files alike
        raise SpecRuntimeError(location, _refusal(path, shown, error)) from error


def _refusal(path: Path, shown: str, error: Exception) -> str:
    """Why ``torch.load(weights_only=True)`` refused the file, and what to save instead."""
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # noqa: BLE001  (not a torch zip file at all: the load's own message says so)
        unsafe = []
    if unsafe and _pickles_a_module(path):
        classes = sorted(unsafe, key=lambda name: (name.startswith("torch."), name))  # the model's own first
        return (
            f"{shown} is a whole pickled model ({_few(classes, 2)}), which loads only by running code: "
            "save its weights with torch.save(model.state_dict(), PATH) and give that file"
        )
    if unsafe:
        return (
            f"{shown} holds Python objects besides tensors ({_few(unsafe)}) that are not read without running "
            "code: save the state_dict alone, torch.save(model.state_dict(), PATH)"
        )
    return f"cannot load {shown} as a state_dict (weights_only=True): {first_line(error)}"


def _pickles_a_module(path: Path) -> bool:
    """Whether the torch zip file at ``path`` holds a pickled ``nn.Module``: its pickle names the
    attributes every module has (read as bytes; nothing is unpickled)."""
    try:
        with zipfile.ZipFile(path) as archive:
            name = next(name for name in archive.namelist() if name.endswith("/data.pkl"))
            content = archive.read(name)
    except (OSError, zipfile.BadZipFile, StopIteration):
        return False
    return all(attribute in content for attribute in (b"_parameters", b"_buffers", b"_modules"))


def _is_state_dict(value: object) -> bool:
    return (
        isinstance(value, Mapping)
        and bool(value)
        and all(isinstance(key, str) and isinstance(item, Tensor) for key, item in value.items())
    )


def _strip_prefixes(state: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """``state`` without the wrapper prefixes every key has, outermost first, and those prefixes."""
    prefixes: list[str] = []
    while True:
        prefix = next((p for p in WRAPPER_PREFIXES if all(key.startswith(p) for key in state)), None)
        if prefix is None:
            return state, prefixes
        state = {key[len(prefix) :]: value for key, value in state.items()}
        prefixes.append(prefix)


def _differences(expected: Mapping[str, Tensor], state: Mapping[str, Tensor]) -> list[str]:
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    mismatched = [
        f"{key} {tuple(value.shape)} vs model {tuple(expected[key].shape)}"
        for key, value in state.items()
        if key in expected and tuple(value.shape) != tuple(expected[key].shape)
    ]
    return [
        f"{label} {_few(names)}"
        for label, names in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched))
        if names
    ]


def _few(names: Sequence[str], shown: int = 3) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more
