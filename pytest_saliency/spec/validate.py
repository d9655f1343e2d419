"""Load a spec file: YAML -> typed :class:`Spec`, every problem as ``path:line:col: message``.

Nothing here imports torch, loads a model or reads weights: it is what collection and
``pytest-saliency validate`` run. It checks the language, the cross references (check methods,
classes), that the files a spec names exist, and the array shapes of an ``.npz`` data set.
"""

from __future__ import annotations

import re
import types
import typing
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from .._constants import SPEC_SUFFIXES, spec_stem
from ..errors import Location, SpecError, SpecProblem, did_you_mean
from ..loaders.readers import as_strings, npz_shapes, read_labels_csv
from .overrides import Override, Problem, apply_overrides, dotted, substitute_environment
from .schema import _AGGREGATE, BUILTIN_METHODS, CAPTUM_METHODS, EXTRAS, Spec
from .source import DuplicateKey, SourceMap, load_yaml


@dataclass(frozen=True)
class LoadedSpec:
    """A valid spec with where it came from."""

    spec: Spec
    path: Path
    source: SourceMap
    overrides: dict[str, dict[str, str]] = field(default_factory=dict)
    """Values that came from outside the file, by dotted key: ``{"value": ..., "from": ...}``
    (``${VAR}`` substitutions and ``--saliency-set`` overrides)."""

    @property
    def name(self) -> str:
        return self.spec.name or spec_stem(self.path)

    @property
    def directory(self) -> Path:
        return self.path.parent

    def resolve(self, relative: str) -> Path:
        """A path written in the spec, relative to the spec file."""
        return (self.directory / relative).resolve()

    @property
    def classes(self) -> list[str] | None:
        """The class names known without loading anything: ``data.classes``, else a Hugging Face
        folder's ``id2label`` (read from its ``config.json`` as JSON)."""
        if self.spec.data.classes is not None:
            return self.spec.data.classes
        folder = self.spec.model.huggingface
        if folder is None or not (self.resolve(folder) / "config.json").is_file():
            return None
        from ..loaders.model_sources import huggingface_classes

        try:
            return huggingface_classes(self.resolve(folder))
        except (OSError, ValueError):  # a broken config.json is reported when the model loads
            return None

    def slice_values(self, check_index: int) -> list[str]:
        """The slices a check with ``slices`` expands into: its ``values``, else every value of
        the field in the data (sorted), as strings. Reads one array of the npz or one column of
        the labels CSV, never the images."""
        config = self.spec.checks[check_index].config
        slices = config.slicing
        assert slices is not None, "only checks with slices are expanded by slice"
        if slices.values is not None:
            return [str(value) for value in slices.values]
        values = per_sample_field(self, slices.by)
        assert values is not None, "validated: the field exists"
        return [str(value) for value in np.unique(values)]

    def problem(self, location: Location, message: str) -> SpecProblem:
        return positioned(self.source, str(self.path), location, f"{format_location(location)}: {message}")


def positioned(source: SourceMap, shown: str, location: Location, message: str, *, at_key: bool = False) -> SpecProblem:
    """``message`` about ``location``, at its line and column in the file, or at the option that
    set it (``--saliency-set model.weights: message``, without repeating the key)."""
    line, column = source.key(location) if at_key else source.value(location)
    override = source.override(location)
    if override is None:
        return SpecProblem(shown, line, column, message)
    where, option = override
    return SpecProblem(shown, line, column, message.removeprefix(f"{format_location(where)}: "), origin=option)


def is_spec_file(path: Path) -> bool:
    return path.name.endswith(SPEC_SUFFIXES)


def discover(paths: Iterable[Path]) -> Iterator[Path]:
    """Spec files named directly or found below the given directories, sorted."""
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if is_spec_file(p) and ".venv" not in p.parts)
        else:
            yield path


def format_location(location: Location) -> str:
    text = ""
    for part in location:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "spec"


def load_spec(
    path: Path,
    display: str | None = None,
    *,
    overrides: Sequence[Override] = (),
    base: Path | None = None,
    environment: Mapping[str, str] | None = None,
) -> LoadedSpec:
    """Read and validate a spec file; raise :class:`SpecError` listing every problem.

    ``${VAR}`` / ``${VAR:-default}`` in its strings are read from ``environment`` (default:
    ``os.environ``), then ``overrides`` (``--saliency-set``) are applied, their relative paths
    taken from ``base`` (default: the working directory); see :mod:`.overrides`."""
    shown = display or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise SpecError([SpecProblem(shown, 1, 1, f"cannot read spec: {error.strerror}")]) from None
    try:
        data, source = load_yaml(text)
    except DuplicateKey as error:
        line, column = error.position
        raise SpecError([SpecProblem(shown, line, column, f"duplicate key {error.key!r}")]) from None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise SpecError([SpecProblem(shown, line, column, f"YAML syntax: {error.problem}")]) from None
    except yaml.reader.ReaderError as error:  # a character YAML does not allow (NUL, other controls)
        line = text.count("\n", 0, error.position) + 1
        column = error.position - (text.rfind("\n", 0, error.position) + 1) + 1
        message = f"YAML does not allow the character {error.character:#06x} ({error.reason}): remove it"
        raise SpecError([SpecProblem(shown, line, column, message)]) from None
    if not isinstance(data, dict):
        raise SpecError(
            [SpecProblem(shown, 1, 1, "a spec is a mapping with version, model, data, attributions, checks")]
        )
    data, substituted, problems = substitute_environment(data, environment)
    overridden, more = apply_overrides(data, source, overrides, base or Path.cwd())
    # a value an override replaced keeps nothing of its ${VAR}s: neither an unset one nor its record
    replaced = [dotted(location) for location in source.overrides]
    problems = [problem for problem in problems if not _within(dotted(problem.location), replaced)] + more
    substituted = {key: record for key, record in substituted.items() if not _within(key, replaced)}
    if problems:
        raise SpecError([_outside_problem(source, shown, problem) for problem in problems])
    try:
        spec = Spec.model_validate(data)
    except ValidationError as error:
        raise SpecError(_problems_from_validation(error, source, shown)) from None
    loaded = LoadedSpec(spec, Path(shown), source, {**substituted, **overridden})
    spec_problems = list(_cross_check(loaded))
    if spec_problems:
        raise SpecError(spec_problems)
    return loaded


def _within(key: str, prefixes: Iterable[str]) -> bool:
    """Whether the dotted ``key`` is one of ``prefixes`` or lies below one."""
    return any(key == prefix or key.startswith(f"{prefix}.") for prefix in prefixes)


def _outside_problem(source: SourceMap, shown: str, problem: Problem) -> SpecProblem:
    if problem.origin is not None:
        return SpecProblem(shown, 0, 0, problem.message, origin=problem.origin)
    return positioned(source, shown, problem.location, f"{format_location(problem.location)}: {problem.message}")


# --- pydantic errors -> positioned one-liners ---------------------------------------------


def _model_at(location: Location) -> type[BaseModel] | None:
    """The model class that validates the mapping at ``location`` (for did-you-mean)."""
    annotation: object = Spec  # a type expression: a class, a union, Annotated[...]
    for part in location:
        annotation = _unwrap(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = annotation.model_fields.get(str(part))
            if field is None:
                return None
            annotation = field.annotation
        else:
            args = typing.get_args(annotation)
            if not args:
                return None
            annotation = args[-1]  # list[X] -> X, dict[K, V] -> V
    annotation = _unwrap(annotation)
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _unwrap(annotation: object) -> object:
    """Strip ``Annotated`` and ``Optional`` wrappers (and a literal beside a model)."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
            continue
        if origin in (typing.Union, types.UnionType):
            members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
            models = [arg for arg in members if isinstance(arg, type) and issubclass(arg, BaseModel)]
            if len(members) == 1 or len(models) == 1:  # Model | Literal["auto"]: the model's keys
                annotation = members[0] if len(members) == 1 else models[0]
                continue
        return annotation


_UNION_MEMBER = re.compile(r"^(literal|function-after)\[.*\]$")
"""How pydantic names the member of a ``Model | Literal[...]`` union in an error's location."""


def _meant_member(errors: list[ErrorDetails]) -> list[ErrorDetails]:
    """A value that fits no member of ``Model | Literal["auto", ...]`` (``transform``,
    ``normalize``) is reported once per member; keep the member it was meant for (the literal
    for a string, the model otherwise), with the member's name taken out of the location."""
    strings = set()
    for item in errors:
        member = _union_member(item["loc"])
        if member is not None and member[1] and isinstance(item["input"], str):
            strings.add(item["loc"][: member[0]])
    kept = []
    for item in errors:
        loc = item["loc"]
        member = _union_member(loc)
        if member is None:
            kept.append(item)
        elif member[1] == (loc[: member[0]] in strings):
            kept.append(ErrorDetails(**{**item, "loc": loc[: member[0]] + loc[member[0] + 1 :]}))
    return kept


def _union_member(loc: tuple[int | str, ...]) -> tuple[int, bool] | None:
    """Where a union member's name is in ``loc``, and whether it is the literal."""
    for index, part in enumerate(loc):
        if isinstance(part, str) and _UNION_MEMBER.match(part):
            return index, part.startswith("literal[")
    return None


def _problems_from_validation(error: ValidationError, source: SourceMap, shown: str) -> list[SpecProblem]:
    problems: dict[Location, SpecProblem] = {}
    for item in _meant_member(error.errors()):
        location = tuple(part for part in item["loc"] if isinstance(part, int | str))
        kind = item["type"]
        where, at_key = location, True
        if kind == "extra_forbidden":
            *parent, key = location
            model = _model_at(tuple(parent))
            hint = did_you_mean(str(key), model.model_fields) if model else ""
            message = f"{format_location(tuple(parent))}: unknown key {key!r}{hint}"
        elif kind == "missing":
            *parent, key = location
            where = tuple(parent)
            message = f"{format_location(tuple(parent))}: missing required key {key!r}"
        else:
            if location and location[-1] == "[key]":
                location = where = location[:-1]
                message = f"{format_location(location[:-1])}: bad key {location[-1]!r}: {_message(item)}"
            else:
                at_key = False
                message = f"{format_location(location)}: {_message(item)}"
        problems.setdefault(location, positioned(source, shown, where, message, at_key=at_key))
    return list(problems.values())


def _message(item: ErrorDetails) -> str:
    kind: str = item["type"]
    text: str = item["msg"]
    if kind == "literal_error":
        raw = item.get("ctx", {}).get("expected", "")
        expected = re.findall(r"'([^']*)'", raw) or [raw]  # Literal[1] gives an unquoted "1"
        hint = did_you_mean(str(item["input"]), expected)
        return f"{item['input']!r} is not one of {', '.join(expected)}{hint}"
    if (
        kind == "string_pattern_mismatch"
        and item["loc"][-1] == "[key]"
        and item["ctx"]["pattern"] == _AGGREGATE.pattern
    ):
        return "aggregates are mean, median, min, max or pNN (p10, p90, ...)"
    if kind == "string_pattern_mismatch" and item["loc"][-1] == "unit":
        return f"{item['input']!r} is not a removal unit: write pixel, or patch:K for K x K patches (patch:4)"
    if kind == "string_pattern_mismatch" and item["loc"][-1] == "factory":
        return f'{item["input"]!r} is not "package.module:callable"'
    return text.removeprefix("Value error, ")


# --- cross references and files -------------------------------------------------------------


def _cross_check(loaded: LoadedSpec) -> Iterator[SpecProblem]:
    spec = loaded.spec
    for name, attribution in spec.attributions.items():
        known = attribution.method in CAPTUM_METHODS | BUILTIN_METHODS
        if not known and not _captum_has(attribution.method):
            hint = did_you_mean(attribution.method, CAPTUM_METHODS | BUILTIN_METHODS)
            yield loaded.problem(
                ("attributions", name, "method"),
                f"unknown captum attribution method {attribution.method!r}{hint}",
            )
    for index, check in enumerate(spec.checks):
        config = check.config
        for position, method in enumerate(config.methods or ()):
            if method not in spec.attributions:
                hint = did_you_mean(method, spec.attributions) or f" (attributions are: {', '.join(spec.attributions)})"
                yield loaded.problem(
                    ("checks", index, check.kind, "methods", position), f"no attribution named {method!r}{hint}"
                )
        if config.by_class and not loaded.classes:
            yield loaded.problem(
                ("checks", index, check.kind, "per_class"), "per_class needs the class names: add data.classes"
            )
    yield from _check_model_source(loaded)
    yield from _check_files(loaded)
    yield from _check_slices(loaded)


def per_sample_field(loaded: LoadedSpec, name: str) -> np.ndarray | None:
    """The ``(N,)`` values of the data's per-sample field ``name`` as strings (the first ``limit``):
    an npz array or a labels-CSV column; None when the data has no such field (images, masks and
    labels are none, as for the loader) or it is only known by running a Dataset factory."""
    data = loaded.spec.data
    if name in ("images", "masks", "labels"):
        return None
    if data.npz is not None:
        with np.load(loaded.resolve(data.npz), allow_pickle=False) as archive:
            if name not in archive.files or archive[name].ndim != 1:
                return None
            return as_strings(archive[name])[: data.limit]
    if data.folder is not None and data.folder.labels is not None:
        header, rows = read_labels_csv(loaded.resolve(data.folder.labels))
        if name not in header[2:]:
            return None
        column = header.index(name)
        return as_strings([row[column].strip() if column < len(row) else "" for row in rows])[: data.limit]
    return None


def _check_slices(loaded: LoadedSpec) -> Iterator[SpecProblem]:
    """A check's ``slices.by`` must name a per-sample field of the data (or list its values), and
    its ``values`` must differ and, where the field can be read without running a Dataset, be
    values of it."""
    data = loaded.spec.data
    for index, check in enumerate(loaded.spec.checks):
        slices = check.config.slicing
        if slices is None:
            continue
        where = ("checks", index, check.kind, "slices")
        if slices.values is not None:
            yield from _check_slice_values(loaded, where, slices.by, [str(value) for value in slices.values])
            continue
        if data.factory is not None:
            yield loaded.problem(
                where, "a Dataset's fields are known only when it runs: list the slices to test in slices.values"
            )
            continue
        try:
            found = per_sample_field(loaded, slices.by)
        except (OSError, ValueError, zipfile.BadZipFile):
            continue  # the data file's own problem is reported at data
        if found is None:
            yield loaded.problem(
                where + ("by",), f"the data has no per-sample field {slices.by!r}{_fields_hint(loaded, slices.by)}"
            )


def _check_slice_values(loaded: LoadedSpec, where: Location, by: str, values: list[str]) -> Iterator[SpecProblem]:
    """Listed slice values: no repeats, and each a value of the field ``by`` when it can be read
    (an npz array, a labels-CSV column; a missing field is reported when the items run)."""
    for position, value in enumerate(values):
        if value in values[:position]:
            yield loaded.problem(where + ("values", position), f"{value!r} is listed twice: give each slice once")
    if loaded.spec.data.factory is not None:
        return
    try:
        found = per_sample_field(loaded, by)
    except (OSError, ValueError, zipfile.BadZipFile):
        return  # the data file's own problem is reported at data
    if found is None:
        return
    known = [str(value) for value in np.unique(found)]
    shown = ", ".join(known[:10]) + (", ..." if len(known) > 10 else "")
    for position, value in enumerate(values):
        if value not in known:
            yield loaded.problem(
                where + ("values", position),
                f"{value!r} is no value of {by} ({shown}){did_you_mean(value, known)}",
            )


def _fields_hint(loaded: LoadedSpec, name: str) -> str:
    data = loaded.spec.data
    if data.npz is not None:
        shapes = npz_shapes(loaded.resolve(data.npz))
        fields = [key for key, shape in shapes.items() if len(shape) == 1 and key != "labels"]
        where = "(N,) arrays of the npz"
    elif data.folder is not None and data.folder.labels is not None:
        fields = read_labels_csv(loaded.resolve(data.folder.labels))[0][2:]
        where = "columns of the labels CSV after file,label"
    else:
        fields, where = [], "imagefolder, coco and object data have none"
    return (did_you_mean(name, fields) or "") + f"; its fields ({where}): {', '.join(fields) or 'none'}"


def _captum_has(method: str) -> bool:
    """Fallback for captum methods newer than :data:`CAPTUM_METHODS` (imports captum)."""
    try:
        import captum.attr
    except ImportError:
        return False
    return isinstance(getattr(captum.attr, method, None), type)


HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
"""What a Hugging Face hub id looks like (``google/vit-base-patch16-224``)."""


def _check_model_source(loaded: LoadedSpec) -> Iterator[SpecProblem]:
    """A source's optional package is installed (looked up, not imported), a Hugging Face folder
    is a local ``save_pretrained`` folder, and ``data.transform: auto`` has a source to take it
    from."""
    model = loaded.spec.model
    source = model.source
    if source in EXTRAS and not _installed(EXTRAS[source]):
        yield loaded.problem(
            ("model", source), f"{source} models need {EXTRAS[source]}: pip install 'pytest-saliency[{source}]'"
        )
    if model.huggingface is not None:
        folder = loaded.resolve(model.huggingface)
        where = ("model", "huggingface")
        if not folder.is_dir() and HUB_ID.match(model.huggingface) and not folder.exists():
            yield loaded.problem(
                where,
                f"{model.huggingface!r} is not a folder (paths are relative to the spec file), and a hub id is not "
                "downloaded: save the model with save_pretrained(folder) and its image processor beside it, "
                "and name that folder",
            )
        elif not folder.is_dir():
            yield loaded.problem(where, f"folder not found: {model.huggingface} (paths are relative to the spec file)")
        elif not (folder / "config.json").is_file():
            yield loaded.problem(
                where, f"{model.huggingface} has no config.json: write the folder with the model's save_pretrained"
            )
    if loaded.spec.data.transform == "auto":
        if source == "torchvision" and model.preset is None:
            yield loaded.problem(
                ("data", "transform"),
                "auto takes the model source's resize and crop: add model.preset (a torchvision preset has them), "
                "or write resize and center_crop",
            )
        elif source in ("factory", "torchscript", "export"):
            yield loaded.problem(
                ("data", "transform"),
                f"auto takes the model source's resize and crop, and a {source} has none: write resize and center_crop",
            )


def _installed(package: str) -> bool:
    """Whether ``package`` can be imported, without importing it."""
    import importlib.util

    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):  # an import hook that refuses it, a broken install
        return False


def _check_files(loaded: LoadedSpec) -> Iterator[SpecProblem]:
    spec = loaded.spec
    named: list[tuple[Location, str | None]] = [
        (("model", "weights"), spec.model.weights),
        (("model", "torchscript"), spec.model.torchscript),
        (("model", "export"), spec.model.export),
        (("data", "npz"), spec.data.npz),
    ]
    for index, check in enumerate(spec.checks):
        against = getattr(check.drift, "against", None)
        if against is not None:
            named.append((("checks", index, "drift", "against", "weights"), against.weights))
            if against.model is not None:
                named.append((("checks", index, "drift", "against", "model", "weights"), against.model.weights))
                named.append((("checks", index, "drift", "against", "model", "torchscript"), against.model.torchscript))
    for kind, keys in IMAGE_SOURCES.items():
        block = getattr(spec.data, kind)
        if block is not None:
            named += [(("data", kind, key), getattr(block, key)) for key in keys]
            named += [(("data", kind, "extra", name), path) for name, path in block.extra.items()]
    missing = False
    for location, relative in named:
        problem = _path_problem(loaded, location, relative) if relative is not None else None
        if problem is not None:
            missing = True
            yield loaded.problem(location, problem)
    if spec.data.npz is not None and not missing:
        yield from _check_npz(loaded, loaded.resolve(spec.data.npz))
    if any(getattr(spec.data, kind) is not None for kind in IMAGE_SOURCES) and not missing:
        yield from _check_image_source(loaded)


IMAGE_SOURCES = {
    "folder": ("images", "masks", "boxes", "labels"),
    "imagefolder": ("root", "boxes"),
    "coco": ("images", "annotations"),
}
"""The data blocks of image files and the keys of each that name a file or folder."""


def _check_image_source(loaded: LoadedSpec) -> Iterator[SpecProblem]:
    """What can be checked without opening an image: the CSVs' columns, the COCO JSON's
    structure, that the listed image files exist, the class folders, the extra masks' files."""
    from ..loaders.annotations import NO_LABELS, AnnotationError, read_boxes_csv, read_coco_json
    from ..loaders.object_annotations import SUFFIXES_OF_MASKS, object_data_problems

    data = loaded.spec.data
    if loaded.spec.task != "classification":
        for location, message in object_data_problems(data, loaded.spec.task, loaded.resolve):
            yield loaded.problem(location, message)
        block = data.folder or data.coco
        yield from _check_region_masks(loaded, block.extra if block is not None else {})
        return
    if data.folder is not None and data.folder.labels is None:
        yield loaded.problem(("data", "folder"), NO_LABELS)
        return
    if data.folder is not None and data.folder.suffixes is not None:
        yield loaded.problem(("data", "folder", "suffixes"), SUFFIXES_OF_MASKS)
    images: list[str] = []
    extra: dict[str, str] = {}
    parsing: Location = ("data",)  # the key of the file being parsed
    try:
        if data.folder is not None:
            where: Location = ("data", "folder")
            folder = data.folder
            extra = folder.extra
            assert folder.labels is not None  # refused above
            rows = read_labels_csv(loaded.resolve(folder.labels))[1]
            short = next((number for number, row in enumerate(rows, start=1) if len(row) < 2), None)
            if short is not None:
                yield loaded.problem(where + ("labels",), f"{folder.labels} row {short}: expected file,label")
                return
            images = [f"{folder.images}/{row[0].strip()}" for row in rows]
            if folder.boxes is not None:
                parsing = where + ("boxes",)
                read_boxes_csv(loaded.resolve(folder.boxes), folder.boxes)
        elif data.imagefolder is not None:
            where = ("data", "imagefolder")
            extra = data.imagefolder.extra
            root = loaded.resolve(data.imagefolder.root)
            classes = sorted(path.name for path in root.iterdir() if path.is_dir())
            if not classes:
                yield loaded.problem(
                    where + ("root",), f"{data.imagefolder.root} has no class folders (root/<class>/<image>)"
                )
            unknown = [name for name in classes if data.classes is not None and name not in data.classes]
            if unknown:
                hint = did_you_mean(unknown[0], data.classes or ())
                yield loaded.problem(
                    ("data", "classes"), f"class folder {unknown[0]!r} is not one of data.classes{hint}"
                )
        else:
            assert data.coco is not None
            where = ("data", "coco")
            extra = data.coco.extra
            parsing = where + ("annotations",)
            content = read_coco_json(loaded.resolve(data.coco.annotations), data.coco.annotations)
            names = {category["id"]: category["name"] for category in content["categories"]}
            annotated = {  # the images that are samples: an instance of a class
                annotation["image_id"]
                for annotation in content["annotations"]
                if data.classes is None or names[annotation["category_id"]] in data.classes
            }
            images = [
                f"{data.coco.images}/{image['file_name']}" for image in content["images"] if image["id"] in annotated
            ]
        for name, relative in extra.items():
            if relative.lower().endswith(".csv"):
                parsing = where + ("extra", name)
                read_boxes_csv(loaded.resolve(relative), relative)
            elif not loaded.resolve(relative).is_dir():
                yield loaded.problem(
                    where + ("extra", name), f"{relative} is neither a folder of masks nor a boxes .csv"
                )
    except AnnotationError as error:
        yield loaded.problem(parsing, str(error))
        return
    # with on_bad_sample: skip a missing image is a sample to skip when the data are read
    listed = images[: data.limit] if data.on_bad_sample == "error" else []
    absent = [image for image in listed if not loaded.resolve(image).is_file()]
    if absent:
        key = "labels" if data.folder is not None else "annotations"
        yield loaded.problem(
            where + (key,),
            f"{len(absent)} of the listed images do not exist (first: {absent[0]}): "
            "add them, remove their rows, or set data.on_bad_sample: skip",
        )
    yield from _check_region_masks(loaded, extra)


def _check_region_masks(loaded: LoadedSpec, extra: dict[str, str]) -> Iterator[SpecProblem]:
    """Every ``region: {mask: ...}`` names one of the data's ``extra`` masks."""
    for index, check in enumerate(loaded.spec.checks):
        region = check.region
        if region is not None and region.mask is not None and region.mask not in extra:
            yield loaded.problem(
                ("checks", index, "region", "mask"),
                f"the data has no mask {region.mask!r}{did_you_mean(region.mask, extra)} (extra: {', '.join(extra) or 'none'})",
            )


def _path_problem(loaded: LoadedSpec, location: Location, relative: str) -> str | None:
    """Why the file named at ``location`` cannot be used (absent, or a path the OS refuses), or None."""
    if "\x00" in relative:
        return "a path cannot hold a NUL character: remove it"
    try:
        exists = loaded.resolve(relative).exists()
    except OSError as error:  # a name too long for the file system, and the like
        shown = relative if len(relative) <= 24 else relative[:24] + "…"
        return f"unusable path {shown}: {error.strerror or error}"
    if exists:
        return None
    relative_to = "where the command runs" if loaded.source.override(location) else "the spec file"
    return f"file not found: {relative} (paths are relative to {relative_to})"


def _check_npz(loaded: LoadedSpec, path: Path) -> Iterator[SpecProblem]:
    where = ("data", "npz")
    if loaded.spec.task != "classification":
        return  # its members differ (loaders/objects.py checks them when the data opens)
    try:
        shapes = npz_shapes(path)
    except (zipfile.BadZipFile, ValueError, OSError) as error:
        yield loaded.problem(where, f"not a readable .npz file: {error}")
        return
    for key in ("images", "masks", "labels"):
        if key not in shapes:
            yield loaded.problem(where, f"{loaded.spec.data.npz} has no array {key!r} (it has: {', '.join(shapes)})")
            return
    images, masks, labels = shapes["images"], shapes["masks"], shapes["labels"]
    if len(images) not in (3, 4):
        yield loaded.problem(where, f"images must be (N, C, H, W) or (N, H, W), got {images}")
        return
    spatial = (images[0],) + images[-2:]
    if len(images) == 4 and images[1] > 4 and images[3] <= 4:
        yield loaded.problem(where, f"images look channels-last {images}; store them as (N, C, H, W)")
    if masks != spatial:
        yield loaded.problem(where, f"masks {masks} do not match images {images}: masks must be (N, H, W) = {spatial}")
    if labels != spatial[:1]:
        yield loaded.problem(where, f"labels {labels} do not match images {images}: labels must be ({spatial[0]},)")
    normalize = loaded.spec.model.normalization
    channels = images[1] if len(images) == 4 else 1
    if normalize is not None and len(normalize.mean) != channels:
        yield loaded.problem(
            ("model", "normalize", "mean"),
            f"normalize has {len(normalize.mean)} values but the images have {channels} channels",
        )
    extra = [key for key in shapes if key not in ("images", "masks", "labels") and shapes[key] != spatial[:1]]
    for key in extra:
        if shapes[key] != spatial:
            yield loaded.problem(
                where,
                f"extra mask {key!r} is {shapes[key]}, expected (N, H, W) = {spatial} (or (N,) for a per-sample field)",
            )
    for index, check in enumerate(loaded.spec.checks):
        region = check.region
        if region is not None and region.mask is not None and region.mask not in extra:
            named = ", ".join(extra) or "none"
            yield loaded.problem(
                ("checks", index, "region", "mask"),
                f"the data has no mask {region.mask!r}{did_you_mean(region.mask, extra)} (extra masks: {named})",
            )
