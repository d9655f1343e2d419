"""The data source a ``data:`` block names: an ``.npz`` (:mod:`.npz`), a Dataset factory
(:mod:`.dataset`), or image files with their annotations (:mod:`.annotated`: a folder, class
folders with Pascal VOC boxes, COCO instances). Each is a
:class:`~pytest_saliency.loaders.source.SampleSource`, read shard by shard.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..errors import Location
from ..spec.schema import DataSpec
from . import annotated
from .dataset import DatasetSource
from .imports import call_factory, resolve_callable
from .npz import NpzSource
from .source import SampleSource


def open_source(spec: DataSpec, spec_dir: Path, search_paths: Sequence[Path]) -> SampleSource:
    """The :class:`SampleSource` a ``data:`` block names (its first ``limit`` samples). Opening
    reads only what is small: npz headers and ``(N,)`` arrays, the labels CSV or annotations,
    ``len(dataset)``."""
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
