"""What a ``drift`` check asks of the baselines: the stored reference it compares with
(:func:`drift_reference`), the per-sample digests its shards record for the data hash and the
obtained summary a mismatch leaves (:func:`obtained_summary`). The check imports nothing else of
this package; where snapshots live, the update policy, format migration and compatibility are
decided here.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch import Tensor

from ..errors import MissingSnapshotError, SnapshotCorruptError, SnapshotEnvironmentWarning, SpecRuntimeError
from ..spec.schema import DriftCheck
from .drift import (
    Snapshot,
    expected_settings,
    fresh_snapshot,
    obtained_summary,
    snapshot_location,
    unused_snapshots,
    update_snapshot,
)
from .settings import snapshot_name, update_command
from .store import FORMAT_VERSION, SnapshotStore, check_compatible, data_hash, environment_warnings, sample_digests

if TYPE_CHECKING:
    from ..checks.request import CheckRequest
    from ..report.results import BaselineEntry

__all__ = ["DriftReference", "drift_reference", "obtained_summary", "sample_digests"]


@dataclass(frozen=True)
class DriftReference:
    """A's side of a comparison with a snapshot: its tensors (``scores_a``, ``centres`` and, for
    ``activations``, ``embeddings``), how the report names it, the results' ``baseline`` entry
    (name, folder, path, action) and notes for the failure text."""

    tensors: dict[str, Tensor]
    shown: str
    entry: BaselineEntry
    notes: list[str]


def drift_reference(
    request: CheckRequest[DriftCheck],
    config: DriftCheck,
    statistics: dict[str, Tensor],
    snapshot_table: Callable[[], tuple[Tensor, str]],
) -> DriftReference:
    """The stored snapshot a drift check with ``against: {snapshot: NAME}`` compares with: its
    path (from the run's :class:`~.settings.BaselineSettings`), written or rewritten first under
    ``--saliency-update-baselines`` (``snapshot_table()`` gives an ``activations`` snapshot its
    ``(N, S, D)`` table and layer), loaded, migrated from an older format and checked against the
    run's data and settings (``statistics``: the check's merged ``digest``, ``scores_b`` and,
    with ``colour_texture``, ``segment_embeddings``). Every refusal is one line at
    ``against.snapshot``; notes on a migration or another environment are warned and returned."""
    engine, method, check, location = request.engine, request.method, request.check, request.location
    stored = config.against.stored
    assert method is not None and stored is not None
    settings = request.baselines
    spec_path = engine.loaded.path
    folder = settings.folder(spec_path)
    store = SnapshotStore(folder)
    where = snapshot_location(engine, config, location)
    name = snapshot_name(stored, check.id, method)
    try:
        store.tensor_path(name)
    except ValueError as error:
        raise SpecRuntimeError(where, str(error)) from None
    digests = data_hash(statistics["digest"])
    expected = expected_settings(engine, config, method, digests)
    entry: BaselineEntry = {
        "name": name,
        "folder": str(folder),
        "path": str(store.tensor_path(name)),
        "action": "compared",
    }
    scores_b = statistics["scores_b"]
    if settings.mode is not None:

        def fresh() -> Snapshot:
            if config.embedding.kind != "activations":
                table = statistics["segment_embeddings"]
                return fresh_snapshot(request, config, scores_b, table, expected, None)
            table, layer = snapshot_table()
            return fresh_snapshot(request, config, scores_b, table, expected, layer)

        entry["action"] = update_snapshot(store, name, fresh, expected, settings.mode, where)
        entry["unused"] = unused_snapshots(store, engine, folder)

    try:
        tensors, metadata = store.load(name, spec_path=spec_path)
    except MissingSnapshotError:
        raise SpecRuntimeError(
            where, f"no baseline {name!r} in {folder}; create it with: {update_command(spec_path, 'missing')}"
        ) from None
    except SnapshotCorruptError as error:
        raise SpecRuntimeError(where, str(error)) from None
    notes = []
    version = metadata.get("format", 1)
    if isinstance(version, int) and version < FORMAT_VERSION:  # its data hash was of the whole data at once
        expected = {key: value for key, value in expected.items() if key != "data_hash"}
        note = (
            f"baseline {name!r} has format {version}, whose data hash this version cannot check: compared "
            f"without checking the data; rewrite it with: {update_command(spec_path)}"
        )
        warnings.warn(SnapshotEnvironmentWarning(note), stacklevel=1)
        notes.append(f"note: {note}")
    problems = check_compatible(metadata, expected)
    needed = ["scores_a", "centres"] + (["embeddings"] if config.embedding.kind == "activations" else [])
    absent = [key for key in needed if key not in tensors]
    if not problems and not absent and tuple(tensors["scores_a"].shape) != tuple(scores_b.shape):
        problems.append(
            f"segment scores: baseline has {tuple(tensors['scores_a'].shape)}, this run {tuple(scores_b.shape)}"
        )
    if absent:
        problems.append(f"the baseline lacks {', '.join(absent)}")
    if problems:
        raise SpecRuntimeError(
            where,
            f"baseline {name!r} in {folder} was made from other data or settings and is refused: "
            f"{'; '.join(problems)}. If the change is intended, rewrite it with: {update_command(spec_path)}",
        )
    for note in environment_warnings(metadata, device=engine.device):
        warnings.warn(SnapshotEnvironmentWarning(f"baseline {name!r}: {note}"), stacklevel=1)
        notes.append(f"note: baseline {note} (numbers may move slightly)")

    made = metadata.get("created", "?")
    shown = f"baseline {stored!r} ({name}, made {made}, weights {metadata.get('weights_hash')})"
    return DriftReference(tensors, shown, entry, notes)
