"""Which normalisation, transform and class names a run uses, and where each came from.

What the spec writes wins over what the model source carries (:mod:`.model_sources`):
``model.normalize`` (unset or ``auto``: the source's; ``none``: none), ``data.transform``
(``auto``: the source's; unset: none) and ``data.classes`` (unset: the source's). A value the spec
writes that differs from the source's is kept, with a note. :func:`resolve_preprocessing` gives
the spec the engine runs (``transform: auto`` and the classes filled in) and a
:class:`Preprocessing` record that every report shows.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import SpecRuntimeError
from ..spec.schema import ModelSpec, NormalizeSpec, TransformSpec
from ..spec.validate import LoadedSpec
from .model_sources import SourceDefaults, source_defaults

SPEC = "the spec"


@dataclass(frozen=True)
class Preprocessing:
    """What a run applies to the stored images, each as reports show it, with its origin."""

    normalize: str
    transform: str
    classes: str
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, object]:
        return {
            "normalize": self.normalize,
            "transform": self.transform,
            "classes": self.classes,
            "notes": list(self.notes),
        }


def model_normalization(
    spec: ModelSpec, directory: Path, block: tuple[str | int, ...] = ("model",)
) -> NormalizeSpec | None:
    """The normalisation the model runs behind: the spec's, none, or its source's."""
    if isinstance(spec.normalize, NormalizeSpec):
        return spec.normalize
    if spec.normalize == "none":
        return None
    return source_defaults(spec, directory, block).normalize


def resolve_preprocessing(loaded: LoadedSpec) -> tuple[LoadedSpec, Preprocessing]:
    """``loaded`` with ``data.transform: auto`` replaced and ``data.classes`` filled from the
    model source, and the record of what is used. Reads the source's description only (no
    network is built)."""
    spec = loaded.spec
    defaults = source_defaults(spec.model, loaded.directory)
    notes = list(defaults.notes)
    written = spec.model.normalization
    if written is not None:
        normalize, normalize_from = written, SPEC
        if defaults.normalize is not None and defaults.normalize != written:
            notes.append(f"normalize: the spec's differs from {defaults.origin}'s {_normalize(defaults.normalize)}")
    elif spec.model.normalize == "none":
        normalize, normalize_from = None, SPEC
    else:
        normalize, normalize_from = defaults.normalize, defaults.origin
    data = spec.data
    transform: TransformSpec | None
    if data.transform == "auto":
        if defaults.transform is None:
            raise SpecRuntimeError(
                ("data", "transform"),
                f"auto takes the model source's resize and crop, but {defaults.origin} describes none: "
                "write resize and center_crop",
            )
        transform, transform_from = defaults.transform, defaults.origin
    else:
        transform, transform_from = data.transform, SPEC
        if transform is not None and defaults.transform is not None and transform != defaults.transform:
            notes.append(f"transform: the spec's differs from {defaults.origin}'s {_transform(defaults.transform)}")
    classes, classes_from = data.classes, SPEC
    if classes is None and defaults.classes is not None:
        unmatched = _unmatched_folders(loaded, defaults)
        if unmatched:
            notes.append(
                f"classes: class folder {unmatched!r} is not one of {defaults.origin}'s classes, so labels follow "
                "the folders' sorted order: give data.classes to map them"
            )
        else:
            classes, classes_from = defaults.classes, defaults.origin
    elif classes is not None and defaults.classes is not None and classes != defaults.classes:
        notes.append(f"classes: the spec's data.classes differ from {defaults.origin}'s")
    effective = spec.model_copy(update={"data": data.model_copy(update={"transform": transform, "classes": classes})})
    record = Preprocessing(
        normalize=f"{_normalize(normalize)} (from {normalize_from})"
        if normalize is not None or normalize_from == SPEC
        else f"none ({normalize_from} gives none)",
        transform=f"{_transform(transform)} (from {transform_from})" if transform else "none",
        classes=f"{len(classes)} named (from {classes_from})" if classes else "by index",
        notes=tuple(notes),
    )
    return replace(loaded, spec=effective), record


def _unmatched_folders(loaded: LoadedSpec, defaults: SourceDefaults) -> str | None:
    """A class folder of ``data.imagefolder`` that is not one of the source's class names."""
    folder = loaded.spec.data.imagefolder
    if folder is None or defaults.classes is None:
        return None
    root = loaded.resolve(folder.root)
    names = sorted(path.name for path in root.iterdir() if path.is_dir()) if root.is_dir() else []
    return next((name for name in names if name not in defaults.classes), None)


def _normalize(normalize: NormalizeSpec | None) -> str:
    if normalize is None:
        return "none"
    return f"mean {_numbers(normalize.mean)} std {_numbers(normalize.std)}"


def _numbers(values: list[float]) -> str:
    return "[" + ", ".join(f"{value:.4g}" for value in values) + "]"


def _transform(transform: TransformSpec | None) -> str:
    if transform is None:
        return "none"
    parts = [
        f"{key} {value}" for key, value in transform.model_dump(exclude_none=True, exclude={"interpolation"}).items()
    ]
    return ", ".join(parts) + f", {transform.interpolation}"
