"""A directory of drift snapshots: named tensor files with JSON metadata beside them.

A snapshot ``NAME`` is two files in the store's directory: ``NAME.pt`` (a ``dict[str, Tensor]``
written with ``torch.save`` and read back with ``torch.load(..., weights_only=True)``, so loading
never runs pickled code) and ``NAME.json`` (metadata: spec hash, settings, weights and data
hashes, library and torch versions, device, seed, creation date, and the SHA-256 of ``NAME.pt``).

An update is atomic as a whole, with ``NAME.json`` as its one commit point. Under a lock on the
folder (one writer at a time), both new files are written to temporary files in the folder
(``.NAME.<random>.tmp``, flushed and fsynced); the metadata replaces ``NAME.json`` (the commit),
then the tensor file replaces ``NAME.pt``. A process killed before the commit leaves the old
snapshot and a temporary file; killed after it, the new metadata and the staged tensor file that
matches its hash. The next load or save (:meth:`SnapshotStore._recover`) moves the matching file
into place and removes the leftovers, so a reader only ever sees the old or the new snapshot,
never a mixed pair. A damaged snapshot is one :class:`SnapshotCorruptError` naming the file and
the command that rewrites it.

No pytest in here: the plugin decides when to load, compare or update.
"""

from __future__ import annotations

import datetime as _datetime
import glob
import hashlib
import io
import json
import os
import re
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypedDict

import torch
from torch import Tensor

from .._io import JSONValue, sync_directory, write_atomic, write_temporary
from ..errors import MissingSnapshotError, SnapshotCorruptError, first_line
from .settings import update_command

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "FORMAT_VERSION",
    "SnapshotDescription",
    "SnapshotMetadata",
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


class _Digest(Protocol):
    """A running hash (``hashlib.sha256()``)."""

    def update(self, data: bytes, /) -> None: ...


def _hash_tensor(digest: _Digest, tensor: Tensor) -> None:
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


class SnapshotDescription(TypedDict, total=False):
    """What a caller of :func:`make_metadata` adds about a snapshot: the creation date (default:
    now) and, for a drift check's snapshot, its spec, check, method, the name the spec gives it,
    the activation layer of its embedding table and the table's size."""

    created: str
    spec: str
    check: str
    method: str | None
    baseline: str | None
    embedding_layer: str | None
    num_images: int
    num_segments: int


class SnapshotMetadata(SnapshotDescription, total=False):
    """The metadata :func:`make_metadata` gives a snapshot; :meth:`SnapshotStore.save` adds
    ``format``, ``name`` and ``tensors_sha256`` to its ``NAME.json``. A file read back is a plain
    JSON object (:meth:`SnapshotStore.load_metadata`): older files lack keys."""

    spec_hash: str | None
    settings: dict[str, JSONValue]
    weights_hash: str | None
    data_hash: str | None
    library_version: str
    torch_version: str
    device: str | None
    seed: int | None


def make_metadata(
    *,
    spec_hash: str | None = None,
    settings: Mapping[str, JSONValue] | None = None,
    weights_hash: str | None = None,
    data_hash: str | None = None,
    device: str | torch.device | None = None,
    seed: int | None = None,
    **described: Unpack[SnapshotDescription],
) -> SnapshotMetadata:
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
        **described,
    }


def _normalise(value: object) -> JSONValue:
    """The value as JSON would give it back (tuples become lists, keys strings)."""
    normalised: JSONValue = json.loads(json.dumps(value, sort_keys=True, default=str))
    return normalised


def _lookup(metadata: Mapping[str, object], key: str) -> tuple[bool, object]:
    settings = metadata.get("settings")
    if isinstance(settings, Mapping) and key in settings:
        return True, settings[key]
    if key in metadata:
        return True, metadata[key]
    return False, None


def check_compatible(metadata: Mapping[str, object], expected_settings: Mapping[str, object]) -> list[str]:
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


def environment_warnings(metadata: Mapping[str, object], *, device: str | torch.device | None = None) -> list[str]:
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

    def save(self, name: str, tensors: Mapping[str, Tensor], metadata: Mapping[str, object]) -> Path:
        """Write snapshot ``name`` atomically and return the tensor file's path.

        Tensors are detached and moved to the CPU. ``metadata`` must be JSON-serialisable
        (NaN is refused); ``library_version``, ``torch_version`` and ``created`` are filled in
        when absent, and ``format`` and ``tensors_sha256`` are always set. Saves into one folder
        take turns (a lock on the folder); an earlier update that was killed is finished or
        undone, and its leftover files removed, first.
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
        with _folder_lock(self.directory):
            _park("locked")
            self._recover(name)
            if not (self.directory / ".gitignore").exists():
                write_atomic(self.directory / ".gitignore", GITIGNORE)
            staged_tensors = write_temporary(self.directory, name, payload)
            committed = False
            try:
                staged_metadata = write_temporary(self.directory, name, text.encode("utf-8"))
                try:
                    _park("staged")
                    os.replace(staged_metadata, json_path)  # the commit point
                    committed = True
                finally:
                    staged_metadata.unlink(missing_ok=True)
                _park("committed")
                os.replace(staged_tensors, tensor_path)
                _park("replaced")
                sync_directory(self.directory)
            finally:
                if not committed:  # once committed, the staged tensor file is what the next load moves in
                    staged_tensors.unlink(missing_ok=True)
        return tensor_path

    def load_metadata(self, name: str, *, spec_path: str | os.PathLike[str] | None = None) -> dict[str, JSONValue]:
        """The metadata of snapshot ``name``: :class:`MissingSnapshotError` when neither file
        exists; :class:`SnapshotCorruptError`, naming the file and the command that rewrites it,
        when one of the two is missing or the metadata is not a JSON object in UTF-8."""
        json_path = self.metadata_path(name)
        tensor_path = self.tensor_path(name)
        if not json_path.is_file() and not tensor_path.is_file():
            raise MissingSnapshotError(name, tensor_path, update_command(spec_path))
        for present, absent in ((json_path, tensor_path), (tensor_path, json_path)):
            if not absent.is_file():
                raise self._damaged(name, absent, f"is missing (only {present.name} is there)", spec_path)
        try:
            metadata: JSONValue = json.loads(json_path.read_bytes().decode("utf-8"))
        except UnicodeDecodeError as error:
            problem = f"is not UTF-8 text ({error.reason} at byte {error.start})"
            raise self._damaged(name, json_path, problem, spec_path) from None
        except json.JSONDecodeError as error:
            raise self._damaged(name, json_path, f"is not valid JSON ({error})", spec_path) from None
        if not isinstance(metadata, dict):
            problem = f"holds a JSON {_json_kind(metadata)} where an object belongs"
            raise self._damaged(name, json_path, problem, spec_path)
        if not isinstance(metadata.get("tensors_sha256", ""), str):
            raise self._damaged(name, json_path, "records a tensors_sha256 that is not a string", spec_path)
        return metadata

    def load(
        self,
        name: str,
        *,
        spec_path: str | os.PathLike[str] | None = None,
        map_location: str | torch.device = "cpu",
    ) -> tuple[dict[str, Tensor], dict[str, JSONValue]]:
        """``(tensors, metadata)`` of snapshot ``name``.

        Raises :class:`MissingSnapshotError` (its message names ``pytest
        --saliency-update-baselines <spec_path>``) when both files are absent, and
        :class:`SnapshotCorruptError` (naming the damaged file and that command) when one is
        missing or unreadable, or when the tensor file does not match the hash its metadata
        records. An update that was killed is finished (or undone) first.
        """
        tensor_path = self.tensor_path(name)
        with _folder_lock(self.directory):
            self._recover(name)
            metadata = self.load_metadata(name, spec_path=spec_path)
            recorded = metadata.get("tensors_sha256")
            payload = tensor_path.read_bytes()
            if isinstance(recorded, str) and hashlib.sha256(payload).hexdigest() != recorded:
                leftover = self._leftover_matching(name, recorded)  # a folder recovery could not change
                if leftover is None:
                    problem = "does not match the SHA-256 its metadata records (an interrupted update or a hand edit)"
                    raise self._damaged(name, tensor_path, problem, spec_path)
                payload = leftover.read_bytes()
        try:
            tensors = torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
        except Exception as error:  # noqa: BLE001  (a truncated or foreign file raises anything)
            problem = f"cannot be read as tensors ({first_line(error)})"
            raise self._damaged(name, tensor_path, problem, spec_path) from None
        if not isinstance(tensors, dict) or not all(isinstance(value, Tensor) for value in tensors.values()):
            raise self._damaged(name, tensor_path, "does not hold a dict of tensors", spec_path)
        return tensors, metadata

    # --- an update that was killed ------------------------------------------------------------

    def leftovers(self, name: str) -> list[Path]:
        """The temporary and backup files a killed update of ``name`` left
        (``.NAME.<random>.tmp``, ``.NAME.<random>.bak``)."""
        pattern = re.compile(rf"^\.{re.escape(name)}\.[A-Za-z0-9_]+\.(?:tmp|bak)$")
        if not self.directory.is_dir():
            return []
        return sorted(path for path in self.directory.glob(f".{glob.escape(name)}.*") if pattern.match(path.name))

    def _leftover_matching(self, name: str, recorded: str) -> Path | None:
        """The leftover of ``name`` whose SHA-256 is ``recorded`` (None when none is)."""
        return next((path for path in self.leftovers(name) if _sha256(path) == recorded), None)

    def _recover(self, name: str) -> None:
        """With the folder locked (no live writer owns a leftover): when the tensor file in place
        does not match the hash the metadata (the commit point) records and a leftover does (the
        staged new file, or an older version's backup), move that leftover into place; then
        remove the leftovers. A folder it cannot change (read-only) is left as it is: loads read
        the matching leftover where it lies."""
        leftovers = self.leftovers(name)
        if not leftovers:
            return
        try:
            recorded = self.load_metadata(name).get("tensors_sha256")
        except (MissingSnapshotError, SnapshotCorruptError):  # nothing committed refers to them
            recorded = None
        try:
            tensor_path = self.tensor_path(name)
            match = None
            if isinstance(recorded, str) and _sha256(tensor_path) != recorded:
                match = self._leftover_matching(name, recorded)
            if match is not None:
                os.replace(match, tensor_path)
                sync_directory(self.directory)
            for path in leftovers:
                path.unlink(missing_ok=True)
        except OSError:
            return

    def _damaged(
        self, name: str, path: Path, problem: str, spec_path: str | os.PathLike[str] | None
    ) -> SnapshotCorruptError:
        return SnapshotCorruptError(f"baseline {name!r}: {path} {problem}; repair it with: {update_command(spec_path)}")

    def __repr__(self) -> str:
        return f"SnapshotStore({str(self.directory)!r})"


GITIGNORE = (
    "# Written by pytest-saliency: the temporary and backup files a killed snapshot update leaves\n"
    "# (the next run that reads or writes the snapshot removes them).\n"
    ".*.tmp\n"
    ".*.bak\n"
)
"""The ``.gitignore`` a save writes into a snapshot folder that has none."""

PARK_VARIABLE = "PYTEST_SALIENCY_PARK_AT"
"""Test-only: a save parks (waits to be killed) at the stage this environment variable names
(``locked``, ``staged``, ``committed``, ``replaced``), after printing ``parked at <stage>``."""


def _park(stage: str) -> None:
    if os.environ.get(PARK_VARIABLE) == stage:
        print(f"parked at {stage}", flush=True)
        while True:
            time.sleep(60)


@contextmanager
def _folder_lock(directory: Path) -> Iterator[None]:
    """An exclusive lock on ``directory`` (``flock`` on the folder itself, so no lock file is
    left), held by one process at a time; no lock where the folder cannot be opened (absent)
    or where the OS has no ``flock`` (Windows)."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


def _sha256(path: Path) -> str | None:
    """The file's SHA-256 hex digest (None when it cannot be read)."""
    try:
        return content_hash(path, length=64)
    except OSError:
        return None


def _json_kind(value: object) -> str:
    """What JSON calls the type of a parsed value that is not an object."""
    kinds: dict[type, str] = {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}
    return kinds.get(type(value), "null")
