"""The data source a ``data:`` block names: an ``.npz`` (:mod:`.npz`), a Dataset factory
(:mod:`.dataset`), or image files with their annotations (:mod:`.annotated`: a folder, class
folders with Pascal VOC boxes, COCO instances). Each is a
:class:`~pytest_saliency.loaders.source.SampleSource`, read shard by shard.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..errors import Location
from ..spec.schema import DataSpec, SegmentationSpec
from . import annotated
from .dataset import DatasetSource
from .imports import call_factory, resolve_callable
from .npz import NpzSource
from .object_files import object_source
from .objects import ObjectsNpzSource
from .source import SampleSource


def open_source(
    spec: DataSpec,
    spec_dir: Path,
    search_paths: Sequence[Path],
    task: str = "classification",
    segmentation: SegmentationSpec | None = None,
) -> SampleSource:
    """The :class:`SampleSource` a ``data:`` block names (its first ``limit`` samples). Opening
    reads only what is small: npz headers and ``(N,)`` arrays, the labels CSV or annotations,
    ``len(dataset)``. For ``task: detection | segmentation`` an npz (:mod:`.objects`) or image
    files with their boxes or class masks (:mod:`.object_files`) give one sample per object or
    class region."""
    if task != "classification":
        settings = segmentation or SegmentationSpec()
        if spec.npz is None:
            return object_source(spec, spec_dir, task, settings)
        return ObjectsNpzSource(spec_dir / spec.npz, spec.npz, task, spec.limit, spec.scale, settings)
    if spec.npz is not None:
        return NpzSource(spec_dir / spec.npz, spec.npz, spec.limit, spec.scale)
    if spec.folder is not None:
        return annotated.folder_source(spec, spec_dir)
    if spec.imagefolder is not None:
        return annotated.imagefolder_source(spec, spec_dir)
    if spec.coco is not None:
        return annotated.coco_source(spec, spec_dir)
    assert spec.factory is not None
    where: Location = ("data", "factory")
    factory = resolve_callable(spec.factory, search_paths, where)
    return DatasetSource(call_factory(factory, dict(spec.kwargs), spec.factory, where), spec)
