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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import BaseModel, ValidationError

from .errors import SpecError, SpecProblem, did_you_mean
from .schema import _AGGREGATE, BUILTIN_METHODS, CAPTUM_METHODS, Spec
from .source import DuplicateKey, Location, SourceMap, load_yaml

SPEC_SUFFIXES: tuple[str, ...] = (".saliency.yaml", ".saliency.yml")


@dataclass(frozen=True)
class LoadedSpec:
    """A valid spec with where it came from."""

    spec: Spec
    path: Path
    source: SourceMap

    @property
    def name(self) -> str:
        return self.spec.name or spec_stem(self.path)

    @property
    def directory(self) -> Path:
        return self.path.parent

    def resolve(self, relative: str) -> Path:
        """A path written in the spec, relative to the spec file."""
        return (self.directory / relative).resolve()

    def problem(self, location: Location, message: str) -> SpecProblem:
        line, column = self.source.value(location)
        return SpecProblem(str(self.path), line, column, f"{format_location(location)}: {message}")


def spec_stem(path: Path) -> str:
    """``shapes`` for ``shapes.saliency.yaml``."""
    name = path.name
    for suffix in SPEC_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


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


def load_spec(path: Path, display: str | None = None) -> LoadedSpec:
    """Read and validate a spec file; raise :class:`SpecError` listing every problem."""
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
    if not isinstance(data, dict):
        raise SpecError([SpecProblem(shown, 1, 1, "a spec is a mapping with version, model, data, attributions, checks")])
    try:
        spec = Spec.model_validate(data)
    except ValidationError as error:
        raise SpecError(_problems_from_validation(error, source, shown)) from None
    loaded = LoadedSpec(spec, Path(shown), source)
    problems = list(_cross_check(loaded))
    if problems:
        raise SpecError(problems)
    return loaded


# --- pydantic errors -> positioned one-liners ---------------------------------------------


def _model_at(location: Location) -> type[BaseModel] | None:
    """The model class that validates the mapping at ``location`` (for did-you-mean)."""
    annotation: Any = Spec
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


def _unwrap(annotation: Any) -> Any:
    """Strip ``Annotated`` and ``Optional`` wrappers."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
            continue
        if origin in (typing.Union, types.UnionType):
            members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
            if len(members) == 1:
                annotation = members[0]
                continue
        return annotation


def _problems_from_validation(error: ValidationError, source: SourceMap, shown: str) -> list[SpecProblem]:
    problems: dict[Location, SpecProblem] = {}
    for item in error.errors():
        location = tuple(part for part in item["loc"] if isinstance(part, int | str))
        kind = item["type"]
        if kind == "extra_forbidden":
            *parent, key = location
            model = _model_at(tuple(parent))
            hint = did_you_mean(str(key), model.model_fields) if model else ""
            line, column = source.key(location)
            message = f"{format_location(tuple(parent))}: unknown key {key!r}{hint}"
        elif kind == "missing":
            *parent, key = location
            line, column = source.key(tuple(parent))
            message = f"{format_location(tuple(parent))}: missing required key {key!r}"
        else:
            if location and location[-1] == "[key]":
                location = location[:-1]
                line, column = source.key(location)
                message = f"{format_location(location[:-1])}: bad key {location[-1]!r}: {_message(item)}"
            else:
                line, column = source.value(location)
                message = f"{format_location(location)}: {_message(item)}"
        problems.setdefault(location, SpecProblem(shown, line, column, message))
    return list(problems.values())


def _message(item: Any) -> str:
    kind, text = item["type"], item["msg"]
    if kind == "literal_error":
        raw = item.get("ctx", {}).get("expected", "")
        expected = re.findall(r"'([^']*)'", raw) or [raw]  # Literal[1] gives an unquoted "1"
        hint = did_you_mean(str(item["input"]), expected)
        return f"{item['input']!r} is not one of {', '.join(expected)}{hint}"
    if kind == "string_pattern_mismatch" and item["loc"][-1] == "[key]" and item["ctx"]["pattern"] == _AGGREGATE.pattern:
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
                yield loaded.problem(("checks", index, check.kind, "methods", position), f"no attribution named {method!r}{hint}")
        if getattr(config, "per_class", False) and not spec.data.classes:
            yield loaded.problem(
                ("checks", index, check.kind, "per_class"), "per_class needs the class names: add data.classes"
            )
    yield from _check_files(loaded)


def _captum_has(method: str) -> bool:
    """Fallback for captum methods newer than :data:`CAPTUM_METHODS` (imports captum)."""
    try:
        import captum.attr
    except ImportError:
        return False
    return isinstance(getattr(captum.attr, method, None), type)


def _check_files(loaded: LoadedSpec) -> Iterator[SpecProblem]:
    spec = loaded.spec
    named = [
        (("model", "weights"), spec.model.weights),
        (("model", "torchscript"), spec.model.torchscript),
        (("data", "npz"), spec.data.npz),
    ]
    for index, check in enumerate(spec.checks):
        against = getattr(check.drift, "against", None)
        if against is not None:
            named.append((("checks", index, "drift", "against", "weights"), against.weights))
            if against.model is not None:
                named.append((("checks", index, "drift", "against", "model", "weights"), against.model.weights))
                named.append((("checks", index, "drift", "against", "model", "torchscript"), against.model.torchscript))
    if spec.data.folder is not None:
        named += [(("data", "folder", key), getattr(spec.data.folder, key)) for key in ("images", "masks", "labels")]
    missing = False
    for location, relative in named:
        if relative is not None and not loaded.resolve(relative).exists():
            missing = True
            yield loaded.problem(location, f"file not found: {relative} (paths are relative to the spec file)")
    if spec.data.npz is not None and not missing:
        yield from _check_npz(loaded, loaded.resolve(spec.data.npz))


def npz_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Array shapes in an ``.npz`` file, read from the headers without loading the data."""
    shapes: dict[str, tuple[int, ...]] = {}
    with zipfile.ZipFile(path) as archive:
        for member in archive.namelist():
            if not member.endswith(".npy"):
                continue
            with archive.open(member) as stream:
                version = np.lib.format.read_magic(stream)
                header = (
                    np.lib.format.read_array_header_1_0(stream)
                    if version == (1, 0)
                    else np.lib.format.read_array_header_2_0(stream)
                )
            shapes[member[: -len(".npy")]] = header[0]
    return shapes


def _check_npz(loaded: LoadedSpec, path: Path) -> Iterator[SpecProblem]:
    where = ("data", "npz")
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
    normalize = loaded.spec.model.normalize
    channels = images[1] if len(images) == 4 else 1
    if normalize is not None and len(normalize.mean) != channels:
        yield loaded.problem(
            ("model", "normalize", "mean"), f"normalize has {len(normalize.mean)} values but the images have {channels} channels"
        )
    extra = [key for key in shapes if key not in ("images", "masks", "labels")]
    for key in extra:
        if shapes[key] != spatial:
            yield loaded.problem(where, f"extra mask {key!r} is {shapes[key]}, expected (N, H, W) = {spatial}")
    for index, check in enumerate(loaded.spec.checks):
        region = check.region
        if region is not None and region.mask is not None and region.mask not in extra:
            named = ", ".join(extra) or "none"
            yield loaded.problem(
                ("checks", index, "region", "mask"),
                f"the data has no mask {region.mask!r}{did_you_mean(region.mask, extra)} (extra masks: {named})",
            )
