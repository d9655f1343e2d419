"""Model sources by name: torchvision builders, timm model names and Hugging Face folders.

Nothing here downloads: torchvision builds with ``weights=None`` and reads a preset's
``transforms()`` and ``meta["categories"]`` from its weights enum, timm creates with
``pretrained=False`` and reads its ``pretrained_cfg``, Hugging Face loads a local folder with
``local_files_only=True``. What a source says about its input (normalisation, resize and crop,
class names) is a :class:`SourceDefaults`, read without building the network. timm and
transformers are imported only for a spec that names them.
"""

from __future__ import annotations

import importlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from ..errors import Location, SpecRuntimeError, describe_exception, did_you_mean
from ..spec.schema import EXTRAS, Interpolation, ModelSpec, NormalizeSpec, TransformSpec
from .imports import call_factory

if TYPE_CHECKING:
    from torch import nn

PIL_RESAMPLING: dict[int, Interpolation] = {0: "nearest", 2: "bilinear", 3: "bicubic"}
"""PIL's resampling codes (Hugging Face processors' ``resample``) that images as tensors have;
the others (1 lanczos, 4 box, 5 hamming) are read as bicubic, with a note."""


HUGGINGFACE_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


@dataclass(frozen=True)
class SourceDefaults:
    """What a model source carries about its input, and where it comes from (``origin``, as
    reports show it: ``torchvision resnet50 preset IMAGENET1K_V2``)."""

    origin: str
    normalize: NormalizeSpec | None = None
    transform: TransformSpec | None = None
    classes: list[str] | None = None
    notes: tuple[str, ...] = ()


def source_defaults(spec: ModelSpec, directory: Path, block: Location = ("model",)) -> SourceDefaults:
    """The preprocessing and class names ``spec``'s source carries (none for a factory or
    TorchScript), read without building the network or touching the network."""
    if spec.torchvision is not None:
        return _torchvision_defaults(spec, block)
    if spec.timm is not None:
        return _timm_defaults(spec.timm, block)
    if spec.huggingface is not None:
        return _huggingface_defaults(directory / spec.huggingface, spec.huggingface, block)
    return SourceDefaults(origin=spec.source)


def build_network(spec: ModelSpec, directory: Path, block: Location = ("model",)) -> nn.Module:
    """The network of a torchvision, timm or Hugging Face source, at random init for the first
    two (their ``weights`` are loaded by the caller)."""
    if spec.torchvision is not None:
        return _torchvision_network(spec.torchvision, dict(spec.kwargs), block)
    if spec.timm is not None:
        return _timm_network(spec.timm, dict(spec.kwargs), block)
    assert spec.huggingface is not None
    return _huggingface_network(directory / spec.huggingface, spec.huggingface, block)


def optional_module(source: str, block: Location) -> ModuleType:
    """The package a source needs (``timm``, ``transformers``), or one line naming the extra."""
    name = EXTRAS[source]
    try:
        return importlib.import_module(name)
    except ImportError:
        raise SpecRuntimeError(
            block + (source,), f"{source} models need {name}: pip install 'pytest-saliency[{source}]'"
        ) from None


def huggingface_weights(folder: Path) -> Path | None:
    """The weights file of a ``save_pretrained`` folder (None when sharded or absent)."""
    return next((folder / name for name in HUGGINGFACE_WEIGHTS if (folder / name).is_file()), None)


def huggingface_classes(folder: Path) -> list[str] | None:
    """The class names of a ``save_pretrained`` folder: its ``config.json``'s ``id2label`` in id
    order, read as JSON (no torch); None when it has none, or only the ``LABEL_k`` placeholders."""
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    labels = config.get("id2label") or {}
    try:
        names = [str(labels[key]) for key in sorted(labels, key=int)]
    except ValueError:
        return None
    if not names or all(name == f"LABEL_{index}" for index, name in enumerate(names)):
        return None
    return names


# --- torchvision ----------------------------------------------------------------------------


def _torchvision_network(name: str, kwargs: dict[str, object], block: Location) -> nn.Module:
    import torchvision.models

    known = torchvision.models.list_models(module=torchvision.models)
    if name not in known:
        raise SpecRuntimeError(
            block + ("torchvision",),
            f"torchvision has no classification model {name!r}{did_you_mean(name, known)}",
        )

    def build(**arguments: object) -> nn.Module:
        network: nn.Module = torchvision.models.get_model(name, weights=None, **arguments)
        return network

    return _called(build, kwargs, f"torchvision {name}", block)


def _torchvision_defaults(spec: ModelSpec, block: Location) -> SourceDefaults:
    assert spec.torchvision is not None
    origin = f"torchvision {spec.torchvision}"
    if spec.preset is None:
        return SourceDefaults(origin=origin)
    import torchvision.models

    try:
        presets = torchvision.models.get_model_weights(spec.torchvision)
    except ValueError:
        raise SpecRuntimeError(
            block + ("torchvision",), f"torchvision has no weights presets for {spec.torchvision!r}"
        ) from None
    names = [preset.name for preset in presets]
    if spec.preset not in names:
        raise SpecRuntimeError(
            block + ("preset",),
            f"{presets.__name__} has no preset {spec.preset!r}{did_you_mean(spec.preset, names)} "
            f"(its presets: {', '.join(names)})",
        )
    preset = presets[spec.preset]
    transforms = preset.transforms()  # an ImageClassification: sizes, interpolation, mean, std
    transform = TransformSpec(
        resize=int(transforms.resize_size[0]),
        center_crop=int(transforms.crop_size[0]),
        interpolation=_interpolation(transforms.interpolation.value, "torchvision")[0],
    )
    normalize = NormalizeSpec(mean=list(transforms.mean), std=list(transforms.std))
    classes = list(preset.meta["categories"])
    notes: tuple[str, ...] = ()
    num_classes = spec.kwargs.get("num_classes")
    if num_classes is not None and num_classes != len(classes):
        notes = (f"classes: the preset's {len(classes)} categories are not used, the model has {num_classes}",)
        classes = []
    return SourceDefaults(f"{origin} preset {spec.preset}", normalize, transform, classes or None, notes)


# --- timm -----------------------------------------------------------------------------------


def _timm_network(name: str, kwargs: dict[str, object], block: Location) -> nn.Module:
    timm = optional_module("timm", block)
    if "checkpoint_path" in kwargs or "pretrained" in kwargs:
        key = "checkpoint_path" if "checkpoint_path" in kwargs else "pretrained"
        raise SpecRuntimeError(
            block + ("kwargs", key),
            f"{key} would have timm load weights (unpickled, or downloaded): give the file as model.weights instead",
        )
    if not timm.is_model(name):
        known = timm.list_models()
        raise SpecRuntimeError(block + ("timm",), f"timm has no model {name!r}{did_you_mean(name, known)}")

    def build(**arguments: object) -> nn.Module:
        network: nn.Module = timm.create_model(name, pretrained=False, **arguments)
        return network

    return _called(build, kwargs, f"timm {name}", block)


def _timm_defaults(name: str, block: Location) -> SourceDefaults:
    optional_module("timm", block)
    from timm.models import get_pretrained_cfg

    config = get_pretrained_cfg(name, allow_unregistered=True)
    origin = f"timm {name} pretrained_cfg"
    if config is None:
        return SourceDefaults(origin=f"timm {name}")
    normalize = NormalizeSpec(mean=list(config.mean), std=list(config.std))
    interpolation, notes = _interpolation(str(config.interpolation), "timm")
    _, height, width = config.input_size
    crop_pct = config.crop_pct or 1.0
    crop = height if height == width else [height, width]
    if config.crop_mode == "squash":
        transform = TransformSpec(
            resize=[math.floor(height / crop_pct), math.floor(width / crop_pct)],
            center_crop=[height, width],
            interpolation=interpolation,
        )
    elif config.crop_mode == "center":
        transform = TransformSpec(center_crop=crop, crop_pct=crop_pct, interpolation=interpolation)
    else:
        transform = None
        notes += (f"transform: timm's crop_mode {config.crop_mode!r} has no data.transform: write one",)
    return SourceDefaults(origin, normalize, transform, None, notes)


# --- Hugging Face ---------------------------------------------------------------------------


def _huggingface_network(folder: Path, shown: str, block: Location) -> nn.Module:
    transformers = optional_module("huggingface", block)
    try:
        network: nn.Module = transformers.AutoModelForImageClassification.from_pretrained(
            str(folder), local_files_only=True
        )
    except Exception as error:  # an unknown architecture, a folder without weights, ...
        raise SpecRuntimeError(
            block + ("huggingface",), f"cannot load {shown} as an image classifier: {describe_exception(error)}"
        ) from error
    return network


def _huggingface_defaults(folder: Path, shown: str, block: Location) -> SourceDefaults:
    origin = f"huggingface {shown}"
    classes = huggingface_classes(folder)
    if not (folder / "preprocessor_config.json").is_file():
        return SourceDefaults(origin, classes=classes, notes=(f"{shown} has no preprocessor_config.json",))
    transformers = optional_module("huggingface", block)
    try:
        processor = transformers.AutoImageProcessor.from_pretrained(str(folder), local_files_only=True)
    except Exception as error:  # an unknown processor type, a broken JSON
        raise SpecRuntimeError(
            block + ("huggingface",), f"cannot read {shown}/preprocessor_config.json: {describe_exception(error)}"
        ) from error
    settings: dict[str, object] = processor.to_dict()
    normalize, notes = _processor_normalize(settings)
    transform, more = _processor_transform(settings)
    return SourceDefaults(f"{origin} preprocessor_config.json", normalize, transform, classes, notes + more)


def _processor_normalize(settings: dict[str, object]) -> tuple[NormalizeSpec | None, tuple[str, ...]]:
    """``(x - mean) / std`` on images in ``[0, 1]`` equal to the processor's rescale then normalize
    (a rescale factor other than 1/255 is folded into mean and std)."""
    mean, std = settings.get("image_mean"), settings.get("image_std")
    if not settings.get("do_normalize", True) or mean is None or std is None:
        return None, ()
    factor = float(settings.get("rescale_factor", 1 / 255)) if settings.get("do_rescale", True) else 1.0  # type: ignore[arg-type]
    scale = 255 * factor  # the processor's pixel values for a stored value of 1
    means = [float(value) for value in mean] if isinstance(mean, list | tuple) else [float(mean)] * 3  # type: ignore[arg-type]
    stds = [float(value) for value in std] if isinstance(std, list | tuple) else [float(std)] * 3  # type: ignore[arg-type]
    if math.isclose(scale, 1.0):
        return NormalizeSpec(mean=means, std=stds), ()
    return NormalizeSpec(mean=[m / scale for m in means], std=[s / scale for s in stds]), (
        f"normalize: the processor's rescale_factor {factor:g} folded into mean and std",
    )


def _processor_transform(settings: dict[str, object]) -> tuple[TransformSpec | None, tuple[str, ...]]:
    """The resize and crop of an image processor's settings (ViT, DeiT, BEiT, ConvNeXt, Swin...)."""
    resample = settings.get("resample", 2)
    interpolation = PIL_RESAMPLING.get(resample, "bicubic") if isinstance(resample, int) else "bilinear"
    notes = () if resample in PIL_RESAMPLING else (f"transform: the processor's resample {resample} read as bicubic",)
    size = settings.get("size") if settings.get("do_resize", True) else None
    crop = settings.get("crop_size") if settings.get("do_center_crop", False) else None
    resize: int | list[int] | None = None
    center_crop: int | list[int] | None = None
    crop_pct = settings.get("crop_pct")
    if isinstance(size, dict) and "height" in size and "width" in size and size["height"] and size["width"]:
        resize = [int(size["height"]), int(size["width"])]
    elif isinstance(size, dict) and size.get("shortest_edge") and isinstance(crop_pct, float) and not crop:
        edge = int(size["shortest_edge"])  # ConvNeXt: below 384, resize to edge / crop_pct and crop edge
        if edge < 384:
            center_crop = edge
        else:
            resize = [edge, edge]
    elif isinstance(size, dict) and size.get("shortest_edge") and not size.get("longest_edge"):
        resize = int(size["shortest_edge"])
    elif size:
        return None, notes + (f"transform: the processor's size {size} has no data.transform: write one",)
    if isinstance(crop, dict) and crop.get("height") and crop.get("width"):
        center_crop = [int(crop["height"]), int(crop["width"])]
    if resize is None and center_crop is None:
        return None, notes
    use_pct = crop_pct if center_crop is not None and resize is None and isinstance(crop_pct, float) else None
    return TransformSpec(resize=resize, center_crop=center_crop, crop_pct=use_pct, interpolation=interpolation), notes


def _interpolation(name: str, library: str) -> tuple[Interpolation, tuple[str, ...]]:
    """``name`` as a ``data.transform`` interpolation; another one (PIL's lanczos, timm's random)
    is read as bicubic, with a note."""
    mode = next((mode for mode in PIL_RESAMPLING.values() if mode == name), None)
    if mode is not None:
        return mode, ()
    return "bicubic", (f"transform: {library}'s {name!r} interpolation read as bicubic",)


def _called(build: Callable[..., nn.Module], kwargs: dict[str, object], shown: str, block: Location) -> nn.Module:
    """``build(**kwargs)``; its exception (bad kwargs) is one line at ``kwargs`` naming the source."""
    return call_factory(build, kwargs, shown, block + ("kwargs",) if kwargs else block)
