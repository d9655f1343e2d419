"""A directory of drift snapshots: named tensor files with JSON metadata beside them.

A snapshot ``NAME`` is two files in the store's directory: ``NAME.pt`` (a ``dict[str, Tensor]``
written with ``torch.save`` and read back with ``torch.load(..., weights_only=True)``, so loading
never runs pickled code) and ``NAME.json`` (metadata: spec hash, settings, weights and data
hashes, library and torch versions, device, seed, creation date, and the SHA-256 of ``NAME.pt``).

Writes are atomic: each file is written to a temporary file in the same directory, flushed and
fsynced, then moved into place with ``os.replace``. Both temporary files are complete before
either replaces anything, and if the second replacement fails the first is rolled back, so an
exception anywhere in :meth:`SnapshotStore.save` leaves the previous snapshot as it was. A crash
between the two replacements (power loss, SIGKILL) can only pair a new ``NAME.pt`` with the old
``NAME.json``; the recorded hash catches that on load (:class:`SnapshotCorruptError`).

No pytest in here: the plugin decides when to load, compare or update.
"""

from __future__ import annotations

import datetime as _datetime
import hashlib
import io
import json
import os
import re
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .._io import sync_directory, write_temporary
from ..errors import MissingSnapshotError, SnapshotCorruptError
from .settings import update_command

__all__ = [
    "FORMAT_VERSION",
    "SnapshotStore",
    "check_compatible",
    "content_hash",
    "data_hash",
    "environment_warnings",
    "make_metadata",
    "sample_digests",
]

FORMAT_VERSION = 2
"""The snapshot format a save records. 2: ``data_hash`` is :func:`data_hash` of per-sample
digests (format 1 hashed the whole data set at once, which a streamed run never holds)."""
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
_CHUNK = 1 << 20


# --------------------------------------------------------------------------------------------
# Hashing and metadata
# --------------------------------------------------------------------------------------------


def _hash_tensor(digest: Any, tensor: Tensor) -> None:
    tensor = tensor.detach().to("cpu").contiguous()
    digest.update(f"{tensor.dtype}|{tuple(tensor.shape)}|".encode())
    if tensor.numel():
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())


def content_hash(
    content: Tensor | Mapping[str, Tensor] | bytes | bytearray | memoryview | str | os.PathLike[str],
    *,
    length: int = 16,
) -> str:
    """A short SHA-256 hex digest (``length`` characters) of a tensor, a ``{name: tensor}``
    mapping (a state dict), raw bytes, or a file (given as a path).

    A tensor hashes its dtype, shape and bytes (on the CPU, contiguous), so equal tensors hash
    equal whatever their device or memory layout; a mapping hashes its keys in sorted order with
    their tensors; a file hashes its bytes, read in chunks. Use it for weights and data hashes.
    """
    digest = hashlib.sha256()
    if isinstance(content, Tensor):
        _hash_tensor(digest, content)
    elif isinstance(content, Mapping):
        for key in sorted(content):
            value = content[key]
            digest.update(f"{key}\0".encode())
            if isinstance(value, Tensor):
                _hash_tensor(digest, value)
            else:
                digest.update(json.dumps(value, sort_keys=True, default=str).encode())
    elif isinstance(content, (bytes, bytearray, memoryview)):
        digest.update(bytes(content))
    elif isinstance(content, (str, os.PathLike)):
        with open(content, "rb") as handle:
            for block in iter(lambda: handle.read(_CHUNK), b""):
                digest.update(block)
    else:
        raise TypeError(f"cannot hash a {type(content).__name__}")
    return digest.hexdigest()[:length]


def sample_digests(images: Tensor, labels: Tensor) -> Tensor:
    """``(B, 32) uint8``: the SHA-256 of each image's float32 bytes (``(C, H, W)``, C order, on
    the CPU) followed by its label as a little-endian int64, for ``images (B, C, H, W)`` and
    ``labels (B,)``."""
    pixels = images.detach().to("cpu", torch.float32).contiguous().numpy()
    values = labels.detach().to("cpu", torch.int64).tolist()
    rows = b"".join(
        hashlib.sha256(image.tobytes() + int(label).to_bytes(8, "little", signed=True)).digest()
        for image, label in zip(pixels, values, strict=True)
    )
    return torch.frombuffer(bytearray(rows), dtype=torch.uint8).reshape(len(values), 32)


def data_hash(digests: Tensor) -> str:
    """The data hash a snapshot records: :func:`content_hash` of the per-sample digests ``(N, 32)
    uint8`` (:func:`sample_digests`) concatenated in sample order, so shards can compute it."""
    return content_hash(digests.to("cpu", torch.uint8).contiguous().numpy().tobytes())


def _library_version() -> str:
    from pytest_saliency import __version__

    return __version__


def make_metadata(
    *,
    spec_hash: str | None = None,
    settings: Mapping[str, Any] | None = None,
    weights_hash: str | None = None,
    data_hash: str | None = None,
    device: str | torch.device | None = None,
    seed: int | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The metadata a drift snapshot records; versions and the creation date are filled in."""
    return {
        "spec_hash": spec_hash,
        "settings": dict(settings or {}),
        "weights_hash": weights_hash,
        "data_hash": data_hash,
        "library_version": _library_version(),
        "torch_version": torch.__version__,
        "device": None if device is None else str(device),
        "seed": seed,
        "created": _datetime.datetime.now(_datetime.timezone.utc).isoformat(timespec="seconds"),
        **extra,
    }


def _normalise(value: Any) -> Any:
    """The value as JSON would give it back (tuples become lists, keys strings)."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _lookup(metadata: Mapping[str, Any], key: str) -> tuple[bool, Any]:
    settings = metadata.get("settings")
    if isinstance(settings, Mapping) and key in settings:
        return True, settings[key]
    if key in metadata:
        return True, metadata[key]
    return False, None


def check_compatible(metadata: Mapping[str, Any], expected_settings: Mapping[str, Any]) -> list[str]:
    """Every way a stored snapshot differs from what this run expects, one message each.

    Each key of ``expected_settings`` (e.g. ``data_hash``, ``segments``, ``clusters``, ``keep``,
    ``embedding``) is looked up in the snapshot's ``settings`` first, then at the top level of its
    metadata (where the hashes live), and compared after a JSON round trip (so a tuple equals a
    list). An empty list means compatible.
    """
    problems: list[str] = []
    for key in expected_settings:
        wanted = _normalise(expected_settings[key])
        found, stored = _lookup(metadata, key)
        if not found:
            problems.append(f"{key}: not recorded in the baseline (this run has {wanted!r})")
        elif _normalise(stored) != wanted:
            problems.append(f"{key}: baseline has {_normalise(stored)!r}, this run has {wanted!r}")
    return problems


def environment_warnings(metadata: Mapping[str, Any], *, device: str | torch.device | None = None) -> list[str]:
    """Differences of environment that do not invalidate a snapshot but may move its numbers
    slightly (torch or library version, device), one message each, for a warning."""
    current = {"torch_version": torch.__version__, "library_version": _library_version()}
    if device is not None:
        current["device"] = str(device)
    notes = []
    for key, value in current.items():
        stored = metadata.get(key)
        if stored is not None and stored != value:
            notes.append(f"{key}: baseline made with {stored}, now {value}")
    return notes


# --------------------------------------------------------------------------------------------
# The store
# --------------------------------------------------------------------------------------------


class SnapshotStore:
    """Drift snapshots in one directory (created on the first save)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def _check_name(self, name: str) -> str:
        if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
            raise ValueError(f"invalid baseline name {name!r}: use letters, digits, '_', '-' and '.'")
        return name

    def tensor_path(self, name: str) -> Path:
        return self.directory / f"{self._check_name(name)}.pt"

    def metadata_path(self, name: str) -> Path:
        return self.directory / f"{self._check_name(name)}.json"

    def exists(self, name: str) -> bool:
        return self.tensor_path(name).is_file() and self.metadata_path(name).is_file()

    def names(self) -> list[str]:
        """The snapshots in the directory (both files present), sorted."""
        if not self.directory.is_dir():
            return []
        return sorted(path.stem for path in self.directory.glob("*.pt") if path.with_suffix(".json").is_file())

    def save(self, name: str, tensors: Mapping[str, Tensor], metadata: Mapping[str, Any]) -> Path:
        """Write snapshot ``name`` atomically and return the tensor file's path.

        Tensors are detached and moved to the CPU. ``metadata`` must be JSON-serialisable
        (NaN is refused); ``library_version``, ``torch_version`` and ``created`` are filled in
        when absent, and ``format`` and ``tensors_sha256`` are always set.
        """
        tensor_path = self.tensor_path(name)
        json_path = self.metadata_path(name)
        for key, value in tensors.items():
            if not isinstance(key, str) or not isinstance(value, Tensor):
                raise TypeError(f"baseline tensors must be a dict[str, Tensor]; {key!r} is a {type(value).__name__}")
        buffer = io.BytesIO()
        torch.save({key: value.detach().to("cpu").contiguous() for key, value in tensors.items()}, buffer)
        payload = buffer.getvalue()
        record = {
            "library_version": _library_version(),
            "torch_version": torch.__version__,
            "created": _datetime.datetime.now(_datetime.timezone.utc).isoformat(timespec="seconds"),
            **dict(metadata),
            "format": FORMAT_VERSION,
            "name": name,
            "tensors_sha256": hashlib.sha256(payload).hexdigest(),
        }
        text = json.dumps(record, indent=2, sort_keys=True, allow_nan=False) + "\n"

        self.directory.mkdir(parents=True, exist_ok=True)
        temporary: list[Path] = []
        backup: Path | None = None
        try:
            temporary.append(write_temporary(self.directory, name, payload))
            temporary.append(write_temporary(self.directory, name, text.encode("utf-8")))
            if tensor_path.exists():
                backup = self.directory / f".{name}.{uuid.uuid4().hex}.bak"
                try:
                    os.link(tensor_path, backup)
                except OSError:  # no hard links here: keep a copy instead
                    backup.write_bytes(tensor_path.read_bytes())
            os.replace(temporary[0], tensor_path)
            try:
                os.replace(temporary[1], json_path)
            except BaseException:
                if backup is not None:
                    os.replace(backup, tensor_path)
                    backup = None
                else:
                    tensor_path.unlink(missing_ok=True)
                raise
            sync_directory(self.directory)
        finally:
            for path in temporary:
                path.unlink(missing_ok=True)
            if backup is not None:
                backup.unlink(missing_ok=True)
        return tensor_path

    def load_metadata(self, name: str, *, spec_path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
        """The metadata of snapshot ``name`` (:class:`MissingSnapshotError` if absent)."""
        json_path = self.metadata_path(name)
        if not json_path.is_file() or not self.tensor_path(name).is_file():
            raise MissingSnapshotError(name, self.tensor_path(name), update_command(spec_path))
        try:
            metadata: dict[str, Any] = json.loads(json_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise SnapshotCorruptError(
                f"baseline metadata {json_path} is not valid JSON ({error}); "
                f"recreate it with: {update_command(spec_path)}"
            ) from error
        return metadata

    def load(
        self,
        name: str,
        *,
        spec_path: str | os.PathLike[str] | None = None,
        map_location: str | torch.device = "cpu",
    ) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """``(tensors, metadata)`` of snapshot ``name``.

        Raises :class:`MissingSnapshotError` (its message names ``pytest
        --saliency-update-baselines <spec_path>``) when either file is absent, and
        :class:`SnapshotCorruptError` when the tensor file does not match the hash its metadata
        records.
        """
        metadata = self.load_metadata(name, spec_path=spec_path)
        payload = self.tensor_path(name).read_bytes()
        recorded = metadata.get("tensors_sha256")
        if recorded is not None and hashlib.sha256(payload).hexdigest() != recorded:
            raise SnapshotCorruptError(
                f"baseline {name!r} in {self.directory}: the tensor file does not match its metadata "
                f"(an interrupted update?); recreate it with: {update_command(spec_path)}"
            )
        tensors = torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
        if not isinstance(tensors, dict):
            raise SnapshotCorruptError(f"baseline {name!r}: expected a dict of tensors, found {type(tensors).__name__}")
        return tensors, metadata

    def __repr__(self) -> str:
        return f"SnapshotStore({str(self.directory)!r})"
