"""``data.npz``: the arrays of an ``.npz`` file, read shard by shard (docs/spec.md § data).

The ``(N,)`` arrays (labels, per-sample fields) are read whole when the source opens; the
others (images, masks, extra region masks: ``(N, ...)``) only by rows, a shard at a time:

- a member stored uncompressed (``np.savez``) by plain file reads at its offset: the zip local
  header gives where the member's bytes start, its ``.npy`` header where the rows start. Pages
  are read into fresh arrays, never mapped, so a shard's memory is its own size. The member's
  CRC-32 is checked when a pass has read it to its end, and the images' when a shard's pixel
  values fail a check (damaged bytes then read as "Bad CRC-32", not as odd pixels);
- a compressed member (``np.savez_compressed``) sequentially through :mod:`zipfile`: reading
  forward is cheap, reading back starts the member again. Store uncompressed for random access.

A pass reads the next shard in a thread while the current one runs (two shards in memory).
"""

from __future__ import annotations

import struct
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from math import prod
from pathlib import Path
from typing import IO

import numpy as np
import torch

from ..errors import Location, SpecRuntimeError, first_line
from .source import SampleBatch, SampleSource, checked_batch, class_indices

LOCAL_HEADER = struct.Struct("<4s5H3L2H")
"""A zip local file header: signature, versions, flags, method, time, date, CRC, sizes, the
lengths of the name and the extra field (the member's bytes follow them)."""

READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)
"""What a truncated or damaged file raises while it is read."""

CHUNK = 1 << 24
"""Bytes read at a time when a member is checked whole or decompressed."""


@dataclass(frozen=True)
class Member:
    """One array of the file: its zip entry, ``.npy`` header and where its rows start."""

    info: zipfile.ZipInfo
    shape: tuple[int, ...]
    dtype: np.dtype
    header_size: int
    """Bytes of the ``.npy`` magic and header, before the first row."""
    start: int
    """Where the member's bytes start in the file (after its zip local header)."""
    header_crc: int
    """CRC-32 of the ``.npy`` header bytes: a pass from row 0 continues it over the rows."""

    @property
    def name(self) -> str:
        return self.info.filename[: -len(".npy")]

    @property
    def stored(self) -> bool:
        return self.info.compress_type == zipfile.ZIP_STORED

    @property
    def row_bytes(self) -> int:
        return prod(self.shape[1:]) * self.dtype.itemsize


class NpzSource(SampleSource):
    """The samples of an ``.npz`` file (its first ``limit``); shapes are checked from the
    headers when it opens, values shard by shard."""

    location: Location = ("data", "npz")

    def __init__(self, path: Path, shown: str, limit: int | None, scale: float | None) -> None:
        self.path, self.shown, self.scale = path, shown, scale
        with _read_errors(shown):
            self.members, columns = self._open()
        for key in ("images", "masks", "labels"):
            if key not in self.members:
                raise SpecRuntimeError(
                    self.location, f"{shown} has no array {key!r} (it has: {', '.join(self.members)})"
                )
        total = self.members["images"].shape[0] if self.members["images"].shape else 0
        self.count = min(total, limit or total)
        self.labels = columns.pop("labels")[:limit].reshape(-1)
        self.fields = {name: values.reshape(-1)[:limit] for name, values in columns.items()}
        self.rows = [name for name in self.members if name not in columns and name != "labels"]
        """The members read by rows: images, masks and the extra region masks."""
        self._check_shapes()
        everything = torch.arange(len(self.labels))
        self.labels = class_indices(self.labels, everything, self.location).numpy()  # checked once, whole
        self._running: dict[str, tuple[int, int]] = {}
        """Per stored member, ``(bytes, crc)``: how far an in-order pass has read it, and the CRC so far."""
        self._checked: set[str] = set()
        """The stored members whose CRC-32 was found right."""

    def __len__(self) -> int:
        return self.count

    def read(self, indices: Sequence[int]) -> SampleBatch:
        with _Handles() as handles:
            return self._read(list(indices), handles)

    def stream(self, shards: Sequence[range]) -> Iterator[SampleBatch]:
        """Each shard in turn, the file and the compressed members' streams open for the whole
        pass; the next shard is read (and its CRC run on) in a thread meanwhile."""
        if not shards:
            return
        with _Handles() as handles, ThreadPoolExecutor(1, thread_name_prefix="saliency-npz") as reader:
            following = [reader.submit(self._read, list(shard), handles) for shard in shards[:1]]
            for shard in [*shards[1:], None]:
                batch = following.pop().result()
                if shard is not None:
                    following.append(reader.submit(self._read, list(shard), handles))
                yield batch

    # --- opening -------------------------------------------------------------------------------

    def _open(self) -> tuple[dict[str, Member], dict[str, np.ndarray]]:
        """Every ``.npy`` member's header, and the ``(N,)`` (and scalar) arrays read whole."""
        members: dict[str, Member] = {}
        columns: dict[str, np.ndarray] = {}
        with zipfile.ZipFile(self.path) as archive, open(self.path, "rb") as file:
            for info in archive.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                name = info.filename[: -len(".npy")]
                with archive.open(info) as stream:
                    version = np.lib.format.read_magic(stream)  # type: ignore[no-untyped-call]  # numpy leaves np.lib.format unannotated
                    read_header = (
                        np.lib.format.read_array_header_1_0
                        if version == (1, 0)
                        else np.lib.format.read_array_header_2_0
                    )
                    shape, fortran_order, dtype = read_header(stream)  # type: ignore[no-untyped-call]  # as read_magic
                    header_size = stream.tell()
                    if dtype.hasobject:
                        raise ValueError("Object arrays cannot be loaded when allow_pickle=False")
                    if name == "labels" or (len(shape) <= 1 and name not in ("images", "masks")):
                        stream.seek(0)
                        columns[name] = np.lib.format.read_array(stream, allow_pickle=False)  # type: ignore[no-untyped-call]  # as read_magic
                    elif fortran_order:
                        raise ValueError(
                            f"{info.filename} is stored in Fortran order, which cannot be read by rows "
                            "(store it C-ordered: np.ascontiguousarray)"
                        )
                file.seek(info.header_offset)
                fields = LOCAL_HEADER.unpack(file.read(LOCAL_HEADER.size))
                if fields[0] != b"PK\x03\x04":
                    raise zipfile.BadZipFile(f"bad local header for {info.filename!r}")
                start = info.header_offset + LOCAL_HEADER.size + fields[9] + fields[10]
                header_crc = 0
                if info.compress_type == zipfile.ZIP_STORED:
                    file.seek(start)
                    header_crc = zlib.crc32(file.read(header_size))
                member = Member(info, tuple(shape), dtype, header_size, start, header_crc)
                members[member.name] = member
        return members, columns

    def _check_shapes(self) -> None:
        """What the headers tell: images ``(N, C, H, W)`` or ``(N, H, W)`` numbers, masks and
        region masks their size, as many labels and field values as images (after ``limit``)."""
        where, count = self.location, self.count
        images = self.members["images"]
        shape = (count, *images.shape[1:])
        if len(shape) == 3:
            shape = (count, 1, *shape[1:])
        if len(shape) != 4:
            raise SpecRuntimeError(where, f"images must be (N, C, H, W), got {(count, *images.shape[1:])}")
        if not (np.issubdtype(images.dtype, np.number) or images.dtype == np.bool_):
            raise SpecRuntimeError(
                where, f"images are {images.dtype}, not numbers: store them as float in [0, 1] or uint8"
            )
        spatial = (count, *shape[2:])
        masks = self._limited("masks")
        if len(masks) == 4 and masks[1] == 1:
            masks = masks[:1] + masks[2:]
        if masks != spatial:
            raise SpecRuntimeError(where, f"masks {masks} do not match images {shape}: expected {spatial}")
        if len(self.labels) != count:
            raise SpecRuntimeError(where, f"{len(self.labels)} labels for {count} images")
        for key, values in self.fields.items():
            if values.ndim != 1 or len(values) != count:
                raise SpecRuntimeError(where, f"per-sample field {key!r} has {values.size} values for {count} images")
        for key in self.rows:
            if key in ("images", "masks"):
                continue
            region = self._limited(key)
            if region != spatial:
                raise SpecRuntimeError(where, f"region mask {key!r} is {region}, expected {spatial}")

    def _limited(self, name: str) -> tuple[int, ...]:
        """The shape of the member ``name`` after ``limit``."""
        shape = self.members[name].shape
        return (min(self.count, shape[0]), *shape[1:]) if shape else shape

    # --- reading -------------------------------------------------------------------------------

    def _read(self, indices: list[int], handles: _Handles) -> SampleBatch:
        chosen = np.asarray(indices, dtype=np.int64)
        if chosen.size and (chosen.min() < 0 or chosen.max() >= self.count):
            raise IndexError(f"samples {indices[0]}..{indices[-1]} are outside the {self.count} samples")
        runs = _runs(indices)
        with _read_errors(self.shown):
            arrays = {name: self._rows(self.members[name], runs, handles) for name in self.rows}
        regions = {name: rows for name, rows in arrays.items() if name not in ("images", "masks")}
        fields = {name: values[chosen] for name, values in self.fields.items()}
        try:
            return checked_batch(
                indices,
                arrays["images"],
                arrays["masks"],
                self.labels[chosen],
                regions,
                fields,
                self.scale,
                self.location,
            )
        except SpecRuntimeError as error:  # odd pixel values may be damaged bytes: say so if the CRC tells
            with _read_errors(self.shown):
                self._verify(self.members["images"], handles)
            raise error

    def _rows(self, member: Member, runs: list[range], handles: _Handles) -> np.ndarray:
        """``(B, ...)`` the member's rows of the consecutive ``runs``, concatenated."""
        rows = np.empty((sum(len(run) for run in runs), *member.shape[1:]), member.dtype)
        buffer = rows.reshape(-1).view(np.uint8).data
        done = 0
        for run in runs:
            size = len(run) * member.row_bytes
            if member.stored:
                self._read_stored(member, run, buffer[done : done + size], handles)
            else:
                self._read_compressed(member, run, buffer[done : done + size], handles)
            done += size
        return rows

    def _read_stored(self, member: Member, run: range, into: memoryview, handles: _Handles) -> None:
        offset = member.header_size + run.start * member.row_bytes  # in the member's bytes
        file = handles.get("file", lambda: open(self.path, "rb"))
        file.seek(member.start + offset)
        _read_exactly(file, into)
        if member.name in self._checked:
            return
        if run.start == 0:
            self._running[member.name] = (member.header_size, member.header_crc)
        position, crc = self._running.get(member.name, (-1, 0))
        if position != offset:
            return  # not an in-order pass: nothing to continue
        crc, position = zlib.crc32(into, crc), position + len(into)
        self._running[member.name] = (position, crc)
        if position == member.info.file_size:
            self._compare_crc(member, crc)

    def _read_compressed(self, member: Member, run: range, into: memoryview, handles: _Handles) -> None:
        def open_member() -> IO[bytes]:
            return handles.zip(self.path).open(member.info)

        stream = handles.get(member.name, open_member)
        stream.seek(member.header_size + run.start * member.row_bytes)  # forward: reads on; back: starts again
        done = 0
        while done < len(into):
            chunk = stream.read(min(CHUNK, len(into) - done))
            if not chunk:
                raise EOFError(f"{member.info.filename} ends before row {run.stop}")
            into[done : done + len(chunk)] = chunk
            done += len(chunk)
        if run.stop == member.shape[0]:
            stream.read(1)  # at the end of the member: zipfile checks its CRC-32

    def _verify(self, member: Member, handles: _Handles) -> None:
        """Read a stored member whole, a chunk at a time, and compare its CRC-32."""
        if not member.stored or member.name in self._checked:
            return
        file = handles.get("file", lambda: open(self.path, "rb"))
        file.seek(member.start)
        crc, left = 0, member.info.file_size
        while left:
            chunk = file.read(min(CHUNK, left))
            if not chunk:
                raise EOFError(f"{member.info.filename} ends early")
            crc, left = zlib.crc32(chunk, crc), left - len(chunk)
        self._compare_crc(member, crc)

    def _compare_crc(self, member: Member, crc: int) -> None:
        if crc != member.info.CRC:
            raise zipfile.BadZipFile(f"Bad CRC-32 for file {member.info.filename!r}")
        self._checked.add(member.name)


class _Handles(ExitStack):
    """The files one read or one pass keeps open (the file, the zip, compressed members' streams)."""

    def __init__(self) -> None:
        super().__init__()
        self.opened: dict[str, IO[bytes]] = {}
        self.archive: zipfile.ZipFile | None = None

    def get(self, key: str, open_it: Callable[[], IO[bytes]]) -> IO[bytes]:
        """The stream ``key``, opened by ``open_it()`` the first time."""
        if key not in self.opened:
            self.opened[key] = self.enter_context(open_it())
        return self.opened[key]

    def zip(self, path: Path) -> zipfile.ZipFile:
        """The archive at ``path``, opened the first time."""
        if self.archive is None:
            self.archive = self.enter_context(zipfile.ZipFile(path))
        return self.archive


@contextmanager
def _read_errors(shown: str) -> Iterator[None]:
    """What a damaged file raises, as ``cannot read <file>: ... (write the file again)``."""
    try:
        yield
    except READ_ERRORS as error:
        raise SpecRuntimeError(
            NpzSource.location, f"cannot read {shown}: {first_line(error)} (write the file again)"
        ) from error


def _runs(indices: Sequence[int]) -> list[range]:
    """Ascending ``indices`` as ranges of consecutive samples."""
    runs: list[range] = []
    for index in indices:
        if runs and runs[-1].stop == index:
            runs[-1] = range(runs[-1].start, index + 1)
        else:
            runs.append(range(index, index + 1))
    return runs


def _read_exactly(file: IO[bytes], into: memoryview) -> None:
    done = 0
    while done < len(into):
        count = file.readinto(into[done:])  # type: ignore[attr-defined]  # a file opened "rb"
        if not count:
            raise EOFError("the file ends before the rows it lists")
        done += count
