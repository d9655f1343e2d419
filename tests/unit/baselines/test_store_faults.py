"""The snapshot store under faults: a writer killed at each stage of an update, concurrent
updates, leftovers of older versions, damaged files, a read-only folder."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from pytest_saliency.baselines.drift import update_snapshot
from pytest_saliency.baselines.store import PARK_VARIABLE, SnapshotStore, make_metadata
from pytest_saliency.errors import SnapshotCorruptError

SPEC = "specs/x.saliency.yaml"
NAME = "production.stable.grad"
STAGES = ("locked", "staged", "committed", "replaced")
SETTLED = [".gitignore", f"{NAME}.json", f"{NAME}.pt"]

WRITER = textwrap.dedent(
    """
    import sys, torch
    from pytest_saliency.baselines.store import SnapshotStore, make_metadata

    folder, version, times = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    for _ in range(times):
        metadata = make_metadata(weights_hash=f"w{version}", data_hash="d0", seed=0, created="2026-01-01T00:00:00")
        tensors = {"centres": torch.full((64, 256), version), "scores_a": torch.arange(4096.0) * version}
        SnapshotStore(folder).save(sys.argv[4], tensors, metadata)
    print("done", flush=True)
    """
)


def write(folder: Path, version: float) -> dict[str, bytes]:
    """Save version ``version`` in this process, as :data:`WRITER` does; the two files' bytes."""
    metadata = make_metadata(weights_hash=f"w{version}", data_hash="d0", seed=0, created="2026-01-01T00:00:00")
    tensors = {"centres": torch.full((64, 256), version), "scores_a": torch.arange(4096.0) * version}
    SnapshotStore(folder).save(NAME, tensors, metadata)
    return pair(folder)


def pair(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in (f"{NAME}.json", f"{NAME}.pt")}


def writer(folder: Path, version: float, *, times: int = 1, park: str | None = None) -> subprocess.Popen[str]:
    environment = {**os.environ, **({PARK_VARIABLE: park} if park else {})}
    command = [sys.executable, "-c", WRITER, str(folder), str(version), str(times), NAME]
    return subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, text=True)


def test_a_writer_killed_at_any_stage_leaves_the_old_or_the_new_snapshot_byte_for_byte(tmp_path: Path) -> None:
    old, new = write(tmp_path / "old", 1.0), write(tmp_path / "new", 2.0)
    folders = {stage: tmp_path / stage for stage in STAGES}
    for folder in folders.values():
        write(folder, 1.0)
    processes = {stage: writer(folders[stage], 2.0, park=stage) for stage in STAGES}  # parked side by side
    for stage, process in processes.items():
        assert process.stdout is not None
        assert process.stdout.readline() == f"parked at {stage}\n"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    leftovers = {stage: sorted(path.name for path in folders[stage].iterdir()) for stage in STAGES}
    assert leftovers["locked"] == SETTLED and leftovers["replaced"] == SETTLED
    assert len(leftovers["staged"]) == 5 and len(leftovers["committed"]) == 4  # staged files left behind

    for stage, folder in folders.items():
        tensors, metadata = SnapshotStore(folder).load(NAME, spec_path=SPEC)
        expected = old if stage in ("locked", "staged") else new
        assert pair(folder) == expected, stage
        assert metadata["weights_hash"] == ("w1.0" if expected is old else "w2.0")
        assert float(tensors["centres"][0, 0]) == (1.0 if expected is old else 2.0)
        assert sorted(path.name for path in folder.iterdir()) == SETTLED, stage  # no stray file


def test_a_staged_update_is_finished_by_the_next_save_too(tmp_path: Path) -> None:
    write(tmp_path, 1.0)
    process = writer(tmp_path, 2.0, park="committed")
    assert process.stdout is not None and process.stdout.readline() == "parked at committed\n"
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    third = write(tmp_path, 3.0)
    assert pair(tmp_path) == third and sorted(path.name for path in tmp_path.iterdir()) == SETTLED


def test_concurrent_updates_take_turns_and_readers_see_whole_snapshots(tmp_path: Path) -> None:
    expected = {1.0: write(tmp_path / "one", 1.0), 2.0: write(tmp_path / "two", 2.0)}
    folder = tmp_path / "shared"
    write(folder, 1.0)
    writers = [writer(folder, version, times=25) for version in (1.0, 2.0)]
    store = SnapshotStore(folder)
    reads = 0
    while any(process.poll() is None for process in writers) or reads == 0:
        tensors, metadata = store.load(NAME, spec_path=SPEC)  # raises on a mixed pair
        version = float(tensors["centres"][0, 0])
        assert metadata["weights_hash"] == f"w{version}" and float(tensors["scores_a"][1]) == version
        reads += 1
    assert [process.wait(timeout=60) for process in writers] == [0, 0]
    assert pair(folder) in expected.values()
    assert sorted(path.name for path in folder.iterdir()) == SETTLED


def test_the_backup_an_older_version_left_is_restored(tmp_path: Path) -> None:
    """The former two-rename update, killed between its renames: the new tensor file beside the
    old metadata, the old tensor file in ``.NAME.<uuid>.bak``."""
    new = write(tmp_path / "new", 2.0)
    folder = tmp_path / "snapshots"
    old = write(folder, 1.0)
    (folder / f".{NAME}.0123456789abcdef.bak").write_bytes(old[f"{NAME}.pt"])
    (folder / f".{NAME}.k3j_x9q2.tmp").write_bytes(b"half a file")
    (folder / f"{NAME}.pt").write_bytes(new[f"{NAME}.pt"])
    SnapshotStore(folder).load(NAME, spec_path=SPEC)
    assert pair(folder) == old and sorted(path.name for path in folder.iterdir()) == SETTLED


def test_a_read_only_folder_is_read_where_the_files_lie(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, 1.0)
    process = writer(tmp_path, 2.0, park="committed")
    assert process.stdout is not None and process.stdout.readline() == "parked at committed\n"
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    before = sorted(path.name for path in tmp_path.iterdir())

    def read_only(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(os, "replace", read_only)
    monkeypatch.setattr(Path, "unlink", read_only)
    tensors, metadata = SnapshotStore(tmp_path).load(NAME, spec_path=SPEC)
    assert metadata["weights_hash"] == "w2.0" and float(tensors["centres"][0, 0]) == 2.0
    assert sorted(path.name for path in tmp_path.iterdir()) == before


def _not_an_object(folder: Path) -> None:
    (folder / f"{NAME}.json").write_text("[]")


def _null(folder: Path) -> None:
    (folder / f"{NAME}.json").write_text("null")


def _latin1(folder: Path) -> None:
    path = folder / f"{NAME}.json"
    path.write_bytes(path.read_bytes().replace(b'"d0"', b'"d\xe90"'))


def _truncated(folder: Path) -> None:
    path = folder / f"{NAME}.pt"
    path.write_bytes(path.read_bytes()[:100])


def _unrecorded(folder: Path) -> None:
    """Metadata edited by hand: no ``tensors_sha256`` (so the tensor file is read as it is)."""
    path = folder / f"{NAME}.json"
    metadata = json.loads(path.read_text())
    del metadata["tensors_sha256"]
    path.write_text(json.dumps(metadata))


def _truncated_unrecorded(folder: Path) -> None:
    _truncated(folder)
    _unrecorded(folder)


def _foreign(folder: Path) -> None:
    torch.save([1, 2, 3], folder / f"{NAME}.pt")
    _unrecorded(folder)


def _no_tensors(folder: Path) -> None:
    (folder / f"{NAME}.pt").unlink()


def _no_metadata(folder: Path) -> None:
    (folder / f"{NAME}.json").unlink()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_not_an_object, r"\.json holds a JSON list where an object belongs"),
        (_null, r"\.json holds a JSON null where an object belongs"),
        (_latin1, r"\.json is not UTF-8 text \(invalid continuation byte at byte \d+\)"),
        (_truncated, r"\.pt does not match the SHA-256 its metadata records"),
        (_truncated_unrecorded, r"\.pt cannot be read as tensors \(.+\)"),
        (_foreign, r"\.pt does not hold a dict of tensors"),
        (_no_tensors, r"\.pt is missing \(only production\.stable\.grad\.json is there\)"),
        (_no_metadata, r"\.json is missing \(only production\.stable\.grad\.pt is there\)"),
    ],
    ids=["list", "null", "not-utf8", "truncated", "truncated-unrecorded", "foreign", "no-tensors", "no-metadata"],
)
def test_a_damaged_snapshot_is_one_line_and_its_command_repairs_it(
    tmp_path: Path, damage: Callable[[Path], None], message: str
) -> None:
    store = SnapshotStore(tmp_path)
    write(tmp_path, 1.0)
    damage(tmp_path)
    with pytest.raises(SnapshotCorruptError) as raised:
        store.load(NAME, spec_path=SPEC)
    line = str(raised.value)
    assert "\n" not in line and str(tmp_path / NAME) in line
    assert line.endswith(f"; repair it with: pytest --saliency-update-baselines {SPEC}")
    assert re.search(message, line), line

    def fresh() -> tuple[dict[str, torch.Tensor], dict[str, object]]:
        return {"centres": torch.full((64, 256), 2.0)}, make_metadata(weights_hash="w2.0")

    action = update_snapshot(store, NAME, fresh, {}, "changed", ("checks", 0))  # what the command runs
    assert action in ("updated", "created")
    tensors, metadata = store.load(NAME, spec_path=SPEC)
    assert metadata["weights_hash"] == "w2.0" and float(tensors["centres"][0, 0]) == 2.0
