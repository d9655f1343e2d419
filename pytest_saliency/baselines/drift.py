"""What a ``drift`` check stores as its snapshot, when an update run rewrites it, and the
obtained summary a mismatch leaves in the run's folder of obtained summaries.

A snapshot holds version A's side of a comparison, so that a later run can compare with it
without the reference model: A's segment scores, the k-means centres fitted on A's kept
segments and, for ``embedding: {kind: activations}``, the embedding of *every* segment of every
image by the snapshot model's layer (an ``(N, S, D)`` table, float16 when it fits). With
``colour_texture`` the table is not needed (the descriptor is a function of the images, whose
hash the snapshot records), and the snapshot stays small. The data hash is
:func:`~.store.data_hash` of per-sample digests (snapshot format 2). The check itself
(:mod:`pytest_saliency.checks.drift`) decides what to compare; this module only reads and
writes.
"""

from __future__ import annotations

import datetime as _datetime
import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .._io import JSONValue, write_atomic
from ..errors import Location, SnapshotCorruptError, SpecDeprecationWarning, SpecRuntimeError
from ..metrics.drift import drift_from_scores
from ..spec.schema import AttributionSpec, DriftCheck
from .settings import UpdateMode, snapshot_name
from .store import SnapshotMetadata, SnapshotStore, check_compatible, content_hash, make_metadata

if TYPE_CHECKING:
    from ..checks.outcome import Outcome
    from ..checks.request import CheckRequest
    from ..engine import SpecEngine
    from ..report.results import BaselineEntry

FLOAT16_LIMIT = 6.0e4
"""Embedding tables whose values all stay below this are stored as float16."""

Snapshot = tuple[dict[str, Tensor], SnapshotMetadata]
"""A snapshot's ``(tensors, metadata)`` as this run makes it."""

Settings = dict[str, JSONValue]
"""What a snapshot must have been made with, by key (:func:`expected_settings`)."""


def snapshot_location(engine: SpecEngine, config: DriftCheck, location: Location) -> Location:
    """Where in the spec the snapshot is named: ``against.snapshot``, or ``against.baseline``
    (the former name, still accepted) with a :class:`SpecDeprecationWarning` at its line."""
    key = config.against.snapshot_key
    assert key is not None
    where = location + ("against", key)
    if key == "baseline":
        problem = engine.loaded.problem(
            where,
            f"'baseline' is the former name of 'snapshot': write against: {{snapshot: {config.against.stored}}} "
            "(the stored files stay as they are)",
        )
        warnings.warn_explicit(
            SpecDeprecationWarning(problem.message), SpecDeprecationWarning, problem.path, problem.line
        )
    return where


def expected_settings(engine: SpecEngine, config: DriftCheck, method: str, data_hash: str) -> Settings:
    """What a snapshot must have been made with to be comparable with this run (``data_hash``:
    :func:`~.store.data_hash` of this run's samples)."""
    return {
        "data_hash": data_hash,
        "segments": {"patch": config.segments.patch},
        "keep": config.keep,
        "clusters": config.clusters,
        "embedding": config.embedding.model_dump(mode="json"),
        "target": engine.spec.target,
        "attribution": attribution_settings(engine.spec.attributions[method]),
    }


def attribution_settings(attribution: AttributionSpec) -> dict[str, JSONValue]:
    """The method's block as a snapshot records it. Keys added to the language after a snapshot
    was written are left out while they hold their default (``reshape``), so that snapshots of
    the methods they do not concern stay comparable."""
    return attribution.model_dump(mode="json", exclude={"reshape"} if attribution.reshape is None else set())


def fresh_snapshot(
    request: CheckRequest[DriftCheck],
    config: DriftCheck,
    scores: Tensor,
    table: Tensor,
    expected: Settings,
    layer: str | None,
) -> Snapshot:
    """The snapshot the spec's own model makes now from its ``(N, S)`` segment ``scores`` and the
    ``(N, S, D)`` embedding ``table`` of every segment: the scores, the k-means centres fitted on
    its kept segments and, when ``layer`` names the activation layer the table comes from, the
    table itself (the colour/texture table is not stored: it is a function of the images)."""
    engine, check = request.engine, request.check
    n, s = scores.shape
    tensors: dict[str, Tensor] = {"scores_a": scores.detach().float().cpu()}
    if layer is not None:
        if table.numel() == 0 or (bool(torch.isfinite(table).all()) and float(table.abs().max()) < FLOAT16_LIMIT):
            table = table.half()  # half the size of float32, and plenty for k-means
        tensors["embeddings"] = table.cpu()
    device = engine.device
    fitted = drift_from_scores(
        scores.to(device), scores.to(device),
        keep=config.keep, embed=table.float().to(device), clusters=config.clusters, seed=engine.spec.seed,
    )  # fmt: skip
    tensors["centres"] = fitted.centres.detach().float().cpu()
    settings = {key: value for key, value in expected.items() if key != "data_hash"}
    spec_hash = content_hash(
        json.dumps(
            {"check": config.model_dump(mode="json", exclude={"max_shift", "mean_shift", "min_rank_correlation"}),
             "data": engine.spec.data.model_dump(mode="json"), "seed": engine.spec.seed, **settings},
            sort_keys=True,
        ).encode()
    )  # fmt: skip
    metadata = make_metadata(
        spec_hash=spec_hash,
        settings=settings,
        weights_hash=engine.weights_hash,
        data_hash=str(expected["data_hash"]),
        device=engine.device,
        seed=engine.spec.seed,
        spec=str(engine.loaded.path),
        check=check.id,
        method=request.method,
        baseline=config.against.stored,  # the metadata key of files already committed
        embedding_layer=layer,
        num_images=n,
        num_segments=s,
    )
    return tensors, metadata


def update_snapshot(
    store: SnapshotStore,
    name: str,
    fresh: Callable[[], Snapshot],
    expected: Settings,
    mode: UpdateMode,
    where: Location,
) -> str:
    """Write snapshot ``name`` (made by ``fresh``) as the update ``mode`` says; return
    ``created``, ``updated`` or ``unchanged``."""
    exists = store.exists(name)
    if exists and mode == "missing":
        return "unchanged"
    tensors, metadata = fresh()
    if exists and mode == "changed":
        stored: dict[str, Tensor]
        stored_metadata: dict[str, JSONValue]
        try:
            stored, stored_metadata = store.load(name)
        except SnapshotCorruptError:
            stored, stored_metadata = {}, {}
        same = (
            not check_compatible(stored_metadata, expected)
            and set(stored) == set(tensors)
            and all(
                stored[key].dtype == value.dtype and torch.equal(stored[key], value) for key, value in tensors.items()
            )
        )
        if same:
            return "unchanged"
    try:
        store.save(name, tensors, metadata)
    except OSError as error:
        raise SpecRuntimeError(
            where,
            f"cannot write baseline {name!r} in {store.directory}: {error}; the previous baseline, if any, is unchanged",
        ) from None
    return "updated" if exists else "created"


def unused_snapshots(store: SnapshotStore, engine: SpecEngine, folder: Path) -> list[str]:
    """Stored snapshots in this spec's folder that no drift check of the spec names (whatever
    this run selected): reported, never deleted."""
    spec = engine.spec
    named = {
        snapshot_name(check.drift.against.stored, check.id, method)
        for check in spec.checks
        if check.drift is not None and check.drift.against.stored is not None
        for method in (check.drift.methods or spec.attributions)
    }
    return [str(folder / stored) for stored in store.names() if stored not in named]


def obtained_summary(entry: BaselineEntry, request: CheckRequest[DriftCheck], outcome: Outcome) -> Path | str | None:
    """After a comparison with a snapshot: on a mismatch, write the obtained summary (atomically)
    into the run's folder of obtained summaries (:meth:`BaselineSettings.obtained_folder`, never
    the snapshot's) and return its path; on a pass, remove a stale one (it would mislead).

    A file that cannot be written or removed (a read-only or full disk) never changes the
    check's outcome: a mismatch gets that note's line back instead of a path."""
    folder = request.baselines.obtained_folder(request.engine.loaded.path)
    if folder is None:
        return None
    path = folder / f"{entry['name']}.obtained.json"
    if outcome.passed:
        try:
            path.unlink(missing_ok=True)
        except OSError:
            pass  # a stale summary, which the end-of-run lines do not name
        return None
    record = {
        "baseline": entry["name"],
        "spec": str(request.engine.loaded.path),
        "check": request.check.id,
        "method": request.method,
        "written": _datetime.datetime.now(_datetime.timezone.utc).isoformat(timespec="seconds"),
        **outcome.to_dict(),
    }
    text = json.dumps(record, indent=2, sort_keys=True, allow_nan=False, default=str) + "\n"
    try:
        write_atomic(path, text)
    except OSError as error:
        return f"note: the obtained drift summary could not be written to {path}: {error}"
    return path
