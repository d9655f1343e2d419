"""Files the plugin writes (drift snapshots, obtained summaries, reports, screenshots) are
written whole or not at all: into a temporary file in the target's folder, flushed and fsynced,
then moved into place with ``os.replace``. A crash or a full disk never leaves half a file, and
never loses the previous one. And the JSON they hold has no NaN: :func:`json_safe` and
:func:`json_number` turn undefined values into ``null``. Files the plugin reads whole to name
them (weights, the result cache's inputs) are hashed by :func:`file_digest`."""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, TypeAlias

_CHUNK = 1 << 20

JSONValue: TypeAlias = "None | bool | int | float | str | list[JSONValue] | dict[str, JSONValue]"
"""A value as :func:`json.loads` gives it back."""


def file_digest(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file's content, hex, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_atomic(path: str | os.PathLike[str], data: str | bytes) -> Path:
    """Write ``data`` (text is UTF-8 encoded) to ``path`` atomically, creating missing parent
    folders; returns the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    temporary = write_temporary(target.parent, target.name, payload)
    try:
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
    return target


def write_temporary(directory: Path, stem: str, data: bytes) -> Path:
    """Write ``data`` to a new temporary file in ``directory``, flushed and fsynced, for the
    caller to move into place (several files that must change together: the snapshot store).

    ``mkstemp`` creates the file readable by its owner only; it gets the permissions a plain
    ``open()`` would give, so a file written on a shared CI volume stays readable by the others."""
    descriptor, name = tempfile.mkstemp(dir=directory, prefix=f".{stem}.", suffix=".tmp")
    path = Path(name)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            os.chmod(path, _file_mode())
            write_all(handle, data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def write_all(handle: BinaryIO, data: bytes) -> None:
    """Write ``data`` in chunks (one seam, so tests can interrupt a write halfway)."""
    view = memoryview(data)
    for start in range(0, len(view), _CHUNK):
        handle.write(view[start : start + _CHUNK])


def sync_directory(directory: Path) -> None:
    """fsync a folder, so that the renames in it survive a crash (where the OS allows it)."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:  # not supported everywhere (Windows)
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def _file_mode() -> int:
    """The permissions a plain ``open()`` would give a new file (``0o666`` less the umask)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def json_number(value: float, digits: int | None = 6) -> float | None:
    """``value`` as a JSON number rounded to ``digits`` decimals (``None``: as it is); NaN (an
    undefined value) and infinities become ``None``, since JSON has neither."""
    if not math.isfinite(value):
        return None
    return value if digits is None else round(value, digits)


def json_safe(value: Any) -> Any:
    """``value`` as plain JSON types: NaN and inf become ``None`` (JSON has no NaN), tuples
    lists, numpy and torch scalars numbers, other objects their ``str``."""
    if isinstance(value, bool) or value is None or isinstance(value, str | int):
        return value
    if isinstance(value, float):
        return json_number(value, digits=None)
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    if hasattr(value, "item"):  # numpy and torch scalars
        try:
            return json_safe(value.item())
        except (TypeError, ValueError):
            pass
    return str(value)
