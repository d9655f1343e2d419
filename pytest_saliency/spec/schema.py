"""The spec language (version 1) as typed, validated models.

Each model forbids unknown keys. Importing this module loads pydantic and nothing heavy: no
torch, no captum. :func:`json_schema` exports the language for editors.
"""

from __future__ import annotations

import re
from typing import Annotated, ClassVar, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PlainSerializer,
    PlainValidator,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from .._constants import PatternName
from .._io import JSONValue
from ..errors import did_you_mean

_THRESHOLD = re.compile(r"^\s*(>=|<=|>|<)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")
_AGGREGATE = re.compile(r"^(mean|median|min|max|p(?:\d|[1-9]\d))$")


class Threshold:
    """A comparison such as ``">= 0.5"``: an operator and a number."""

    __slots__ = ("operator", "value")
    _COMPARE = {
        ">=": lambda a, b: a >= b,
        ">": lambda a, b: a > b,
        "<=": lambda a, b: a <= b,
        "<": lambda a, b: a < b,
    }

    def __init__(self, operator: str, value: float) -> None:
        self.operator = operator
        self.value = value

    @classmethod
    def parse(cls, text: object) -> Threshold:
        if isinstance(text, Threshold):
            return text
        if isinstance(text, int | float) and not isinstance(text, bool):
            raise ValueError(f'a threshold is a quoted comparison such as ">= {text}", not a bare number')
        if not isinstance(text, str):
            raise ValueError(f'a threshold is a quoted comparison such as ">= 0.5", got {text!r}')
        match = _THRESHOLD.match(text)
        if not match:
            raise ValueError(
                f'bad threshold {text!r}: write one comparison (>=, >, <=, <) and a number, such as ">= 0.5"'
            )
        return cls(match.group(1), float(match.group(2)))

    def passes(self, measured: float) -> bool:
        """True when ``measured`` satisfies the comparison (NaN never does)."""
        return bool(self._COMPARE[self.operator](measured, self.value))

    @property
    def wants_high(self) -> bool:
        """True for ``>``/``>=``: low measured values are the bad ones."""
        return self.operator.startswith(">")

    def __str__(self) -> str:
        return f"{self.operator} {self.value:g}"

    def __repr__(self) -> str:
        return f"Threshold({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Threshold) and (self.operator, self.value) == (other.operator, other.value)

    def __hash__(self) -> int:
        return hash((self.operator, self.value))


ThresholdField = Annotated[
    Threshold,
    PlainValidator(Threshold.parse),
    PlainSerializer(str, return_type=str),
    WithJsonSchema({"type": "string", "pattern": _THRESHOLD.pattern, "examples": [">= 0.5", "< 0.1"]}),
]
Aggregate = Annotated[str, Field(pattern=_AGGREGATE.pattern)]
AggregateThresholds = Annotated[
    dict[Aggregate, ThresholdField],
    Field(min_length=1, description="aggregate (mean, median, min, max, pNN) -> threshold"),
]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
PositiveInt = Annotated[int, Field(gt=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class _ExactlyOne(_Strict):
    """A block in which exactly one of ``CHOICES`` must be given."""

    CHOICES: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="after")
    def _exactly_one(self) -> _ExactlyOne:
        given = [name for name in self.CHOICES if getattr(self, name) is not None]
        if len(given) != 1:
            options = ", ".join(self.CHOICES)
            found = f"got {', '.join(given)}" if given else "got none"
            raise ValueError(f"give exactly one of {options} ({found})")
        return self


# --- model and data -------------------------------------------------------------------------


class NormalizeSpec(_Strict):
    """Per-channel ``(x - mean) / std`` applied inside, before the model."""

    mean: list[float] = Field(min_length=1)
    std: list[Annotated[float, Field(gt=0)]] = Field(min_length=1)

    @model_validator(mode="after")
    def _same_length(self) -> NormalizeSpec:
        if len(self.mean) != len(self.std):
            raise ValueError(f"mean has {len(self.mean)} values and std {len(self.std)}: give one per channel")
        return self


CallablePath = Annotated[
    str,
    Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$", description='"package.module:callable"'),
]


EXTRAS = {"timm": "timm", "huggingface": "transformers"}
"""The model sources that need an optional package: source key -> the package (and the extra of
the same key: ``pip install 'pytest-saliency[timm]'``)."""
WEIGHT_SOURCES = ("factory", "torchvision", "timm")
"""The sources whose network takes a ``weights`` file; the others carry their own weights."""


class ModelSpec(_ExactlyOne):
    """The model under test, from one source: a factory, a torchvision builder, a timm model name
    or a Hugging Face folder (each with an optional ``weights`` file, but the folder), a
    TorchScript file or a ``torch.export`` program."""

    CHOICES: ClassVar[tuple[str, ...]] = ("factory", "torchvision", "timm", "huggingface", "torchscript", "export")
    factory: CallablePath | None = None
    torchvision: Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_]*$")] | None = Field(
        default=None,
        description="a torchvision.models classification builder, such as resnet50 (built without weights)",
    )
    preset: str | None = Field(
        default=None,
        description="with torchvision: a weights preset (IMAGENET1K_V2) whose normalisation, resize, crop and "
        "category names are used, not its weights",
    )
    timm: str | None = Field(
        default=None, description="a timm model name, such as convnext_tiny.fb_in22k (created with pretrained=False)"
    )
    huggingface: str | None = Field(
        default=None, description="a local folder written by save_pretrained (never a hub id: nothing is downloaded)"
    )
    kwargs: dict[str, object] = Field(default_factory=dict)
    weights: str | None = Field(
        default=None,
        description="a state_dict or checkpoint file (.pt, .pth, .bin: weights_only=True; .safetensors)",
    )
    weights_key: str | None = Field(
        default=None, description="the key of a checkpoint dict that holds the state_dict (default: found)"
    )
    torchscript: str | None = None
    export: str | None = Field(default=None, description="a torch.export program (.pt2) exported with a dynamic batch")
    normalize: NormalizeSpec | Literal["auto", "none"] | None = Field(
        default=None,
        description="per-channel mean and std; auto (the default): the model source's own, none: no normalisation",
    )
    output: Annotated[int, Field(ge=0)] | str | None = Field(
        default=None,
        description="which output holds the logits when the model returns a tuple (an index) or a dict (a key)",
    )
    output_kind: Literal["logits", "probabilities"] = Field(
        default="logits",
        description="what the model returns per class: logits, or probabilities (rows summing to 1), "
        "then taken as log-probabilities (clamped at 1e-12 before the log)",
    )
    memory_format: Literal["auto", "contiguous", "channels_last"] = Field(
        default="auto",
        description="auto: channels_last for convolutional networks (exact, faster), else contiguous",
    )
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        default="fp32", description="bf16/fp16: autocast mixed precision (faster, moves the numbers; fp16 on CUDA only)"
    )
    compile: bool = Field(default=False, description="torch.compile the model (a slow first pass; moves the numbers)")

    @model_validator(mode="after")
    def _settings_of_the_source(self) -> ModelSpec:
        source = self.source
        if source not in WEIGHT_SOURCES and (self.weights is not None or self.kwargs):
            carried = "its folder holds the weights" if source == "huggingface" else "it holds its weights"
            raise ValueError(f"weights and kwargs go with factory, torchvision or timm, not with {source} ({carried})")
        if self.preset is not None and source != "torchvision":
            raise ValueError("preset names a torchvision weights preset: it goes with torchvision")
        if self.weights_key is not None and self.weights is None:
            raise ValueError("weights_key names a key of the weights file: give weights too")
        return self

    @property
    def source(self) -> str:
        """The source key given: factory, torchvision, timm, huggingface, torchscript or export."""
        return next((name for name in self.CHOICES if getattr(self, name) is not None), "")

    @property
    def normalization(self) -> NormalizeSpec | None:
        """The normalisation the spec writes out (None for auto, none and unset)."""
        return self.normalize if isinstance(self.normalize, NormalizeSpec) else None


Size = Annotated[list[PositiveInt], Field(min_length=2, max_length=2, description="[height, width] in pixels")]
EXTRA_MASKS = (
    "named region masks (a decoy, a watermark): a folder of mask images named like the images, "
    "or a boxes CSV (file,top,left,bottom,right)"
)


Interpolation = Literal["nearest", "bilinear", "bicubic"]


class TransformSpec(_Strict):
    """Geometry applied alike to every image, its ground truth and its extra masks, in this order:
    resize, then center_crop, then pad_to (antialiased for images, nearest for masks)."""

    resize: PositiveInt | Size | None = Field(
        default=None, description="an int: the shorter side, keeping the aspect ratio; [H, W]: exactly that size"
    )
    center_crop: PositiveInt | Size | None = Field(default=None, description="an int: a square; [H, W]: that size")
    crop_pct: Annotated[float, Field(gt=0, le=1)] | None = Field(
        default=None,
        description="with center_crop and no resize: first resize the shorter side to floor(crop / crop_pct) (timm's rule)",
    )
    pad_to: Size | None = Field(default=None, description="[H, W]: zero padding around the image, centred")
    interpolation: Interpolation = Field(
        default="bilinear", description="how images are resized (masks: always nearest)"
    )

    @model_validator(mode="after")
    def _some_step(self) -> TransformSpec:
        if self.resize is None and self.center_crop is None and self.pad_to is None:
            raise ValueError("give at least one of resize, center_crop, pad_to")
        if self.crop_pct is not None and (self.center_crop is None or self.resize is not None):
            raise ValueError("crop_pct sets the resize before center_crop: give center_crop and no resize")
        return self


class SuffixesSpec(_Strict):
    """How a segmentation mask's file name differs from its image's: the ends of their stems."""

    images: str = Field(default="", description="the end of an image's stem (Cityscapes: _leftImg8bit)")
    masks: str = Field(
        default="", description="the end of a mask's stem; other files are no masks (Cityscapes: _gtFine_labelIds)"
    )


class FolderSpec(_Strict):
    """Image files of any size and mode, labels in a CSV (file,label), ground truth as mask
    images with matching names or as boxes in a CSV (file,top,left,bottom,right). With ``task:
    detection`` the objects come from ``boxes`` (a CSV image,x1,y1,x2,y2,label or a folder of Pascal
    VOC XML files), with ``task: segmentation`` from ``masks`` (class-index masks); no ``labels``."""

    images: str
    labels: str | None = Field(default=None, description="a CSV file,label[,field...] (task: classification)")
    masks: str | None = Field(
        default=None, description="mask images named like the images (segmentation: class indices)"
    )
    boxes: str | None = Field(
        default=None,
        description="a CSV file,top,left,bottom,right in pixels of the stored image, end exclusive "
        "(detection: a CSV image,x1,y1,x2,y2,label, or a folder of Pascal VOC XML files)",
    )
    suffixes: SuffixesSpec | None = Field(
        default=None, description="task: segmentation: the masks whose stems end so, each of the image ending so"
    )
    extra: dict[str, str] = Field(default_factory=dict, description=EXTRA_MASKS)

    @model_validator(mode="after")
    def _masks_or_boxes(self) -> FolderSpec:
        if (self.masks is None) == (self.boxes is None):
            raise ValueError("give exactly one of masks, boxes")
        return self


class ImageFolderSpec(_Strict):
    """torchvision-style class folders (``root/<class>/<image>``), boxes as Pascal VOC XML files."""

    root: str
    boxes: str = Field(description="a folder of <image stem>.xml Pascal VOC annotations (ImageNet LOC's format)")
    extra: dict[str, str] = Field(default_factory=dict, description=EXTRA_MASKS)


class CocoSpec(_Strict):
    """A COCO instances JSON: ground truth is the union of the image's instances of its label."""

    images: str = Field(description="the folder the JSON's file_name values are relative to")
    annotations: str = Field(description="instances_*.json")
    extra: dict[str, str] = Field(default_factory=dict, description=EXTRA_MASKS)


class DataSpec(_ExactlyOne):
    """Labelled images with ground-truth masks."""

    CHOICES: ClassVar[tuple[str, ...]] = ("npz", "folder", "imagefolder", "coco", "factory")
    npz: str | None = None
    folder: FolderSpec | None = None
    imagefolder: ImageFolderSpec | None = None
    coco: CocoSpec | None = None
    factory: CallablePath | None = None
    kwargs: dict[str, object] = Field(default_factory=dict)
    limit: PositiveInt | None = None
    scale: Annotated[float, Field(gt=0)] | None = Field(
        default=None,
        description="images are divided by this to lie in [0, 1] (default: 255 for uint8, 65535 for uint16, else 1)",
    )
    batch_size: PositiveInt = 64
    shard_size: PositiveInt = Field(
        default=256,
        description="samples read, attributed and scored at a time; memory grows with it, results do not change",
    )
    num_workers: NonNegativeInt = Field(
        default=0,
        description="DataLoader worker processes reading a Dataset factory's samples (0: in the main process)",
    )
    pin_memory: bool = Field(default=False, description="DataLoader pin_memory, for faster copies to a GPU")
    classes: list[str] | None = Field(default=None, min_length=1)
    transform: TransformSpec | Literal["auto"] | None = Field(
        default=None,
        description="resize, crop and pad every image with its masks (folder, imagefolder, coco); "
        "auto: the model source's resize and crop",
    )
    on_bad_sample: Literal["error", "skip"] = Field(
        default="error",
        description="an unreadable or inconsistent sample: stop with its error, or leave it out and list it",
    )

    @model_validator(mode="after")
    def _transform_of_files(self) -> DataSpec:
        if self.transform is not None and (self.npz is not None or self.factory is not None):
            raise ValueError("transform applies to image files (folder, imagefolder, coco), not to npz or factory")
        return self


# --- attributions and saliency --------------------------------------------------------------

# captum.attr classes that attribute to the input (or, with `layer`, to a layer, upsampled).
# Kept here so that validating a spec never imports captum; a name outside this list is
# looked up in captum itself before it is refused.
CAPTUM_METHODS: frozenset[str] = frozenset(
    {
        "IntegratedGradients", "DeepLift", "DeepLiftShap", "InputXGradient", "Saliency",
        "GuidedBackprop", "Deconvolution", "GuidedGradCam", "FeatureAblation",
        "FeaturePermutation", "Occlusion", "ShapleyValueSampling", "ShapleyValues", "Lime",
        "KernelShap", "LRP", "GradientShap", "LayerConductance", "LayerGradientXActivation",
        "LayerActivation", "LayerFeatureAblation", "LayerGradCam", "LayerDeepLift",
        "LayerDeepLiftShap", "LayerGradientShap", "LayerIntegratedGradients", "LayerLRP",
        "InternalInfluence",
    }
)  # fmt: skip
# Built in, not from captum: seeded uniform noise, the reference an attribution must beat, and
# the image's Sobel edges, a model-independent map that a randomisation sanity check must reject.
RANDOM_METHOD = "random"
EDGE_METHOD = "edge"
# Built in for transformers: attention rollout (Abnar & Zuidema 2020) and gradient-weighted
# attention relevance (Chefer, Gur & Wolf 2021), read from the attention probabilities.
ROLLOUT_METHOD = "attention_rollout"
RELEVANCE_METHOD = "attention_relevance"
ATTENTION_METHODS: frozenset[str] = frozenset({ROLLOUT_METHOD, RELEVANCE_METHOD})
# D-RISE (Petsiuk et al. 2021), black-box saliency of a detector: its only settings are params.
DRISE_METHOD = "DRISE"
DRISE_PARAMS = ("n_masks", "cells", "probability")
BUILTIN_METHODS: frozenset[str] = frozenset({RANDOM_METHOD, EDGE_METHOD, DRISE_METHOD}) | ATTENTION_METHODS
AUTO_LAYER = "auto"
LAYER_METHODS = frozenset(name for name in CAPTUM_METHODS if name.startswith("Layer")) | {
    "GuidedGradCam",
    "InternalInfluence",
}
BASELINES: tuple[str, ...] = ("zeros", "mean", "blur", "uniform")


def _parse_baseline(value: object) -> str | float:
    if isinstance(value, str) and value in BASELINES:
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    hint = did_you_mean(value, BASELINES) if isinstance(value, str) else ""
    raise ValueError(f"baseline must be one of {', '.join(BASELINES)} or a number, got {value!r}{hint}")


Baseline = Annotated[
    str | float,
    PlainValidator(_parse_baseline),
    WithJsonSchema({"anyOf": [{"enum": list(BASELINES)}, {"type": "number"}]}),
]


class NoiseTunnelSpec(_Strict):
    """Wrap the method in captum's NoiseTunnel (SmoothGrad and friends)."""

    nt_type: Literal["smoothgrad", "smoothgrad_sq", "vargrad"] = "smoothgrad"
    nt_samples: PositiveInt = 8
    stdevs: Annotated[float, Field(gt=0)] = 0.1


class ReshapeSpec(_Strict):
    """How a token or channels-last layer output becomes a ``(N, D, h, w)`` grid (default: inferred)."""

    prefix_tokens: NonNegativeInt | None = Field(
        default=None, description="tokens before the patch tokens (class, distillation, registers)"
    )
    grid: Annotated[list[PositiveInt], Field(min_length=2, max_length=2)] | None = Field(
        default=None, description="[h, w] of the patch tokens"
    )
    channels_last: bool | None = Field(default=None, description="a 4-D output is (N, h, w, D)")


class RolloutParams(_Strict):
    """Options of attention rollout, as in the paper's code."""

    head_fusion: Literal["mean", "max", "min"] = "mean"
    discard_ratio: Annotated[float, Field(ge=0, lt=1)] = 0.0


class AttributionSpec(_Strict):
    """One captum attribution method, by class name."""

    method: str
    params: dict[str, object] = Field(default_factory=dict, description="keyword arguments of .attribute()")
    init: dict[str, object] = Field(default_factory=dict, description="keyword arguments of the constructor")
    layer: str | None = Field(
        default=None, description="dotted module name, or auto, for Layer* methods and GuidedGradCam"
    )
    reshape: ReshapeSpec | None = Field(
        default=None, description="how a token or channels-last layer becomes a grid (default: inferred)"
    )
    baseline: Baseline | None = None
    noise_tunnel: NoiseTunnelSpec | None = None
    internal_batch_size: PositiveInt | None = Field(
        default=None, description="chunk size for IntegratedGradients-style steps (default: data.batch_size)"
    )

    @model_validator(mode="after")
    def _layer_when_needed(self) -> AttributionSpec:
        if self.method in LAYER_METHODS and self.layer is None:
            raise ValueError(f"{self.method} attributes to a layer: add layer: <dotted module name>")
        if (
            self.layer is not None
            and self.method in CAPTUM_METHODS | BUILTIN_METHODS
            and self.method not in LAYER_METHODS
        ):
            raise ValueError(f"{self.method} takes no layer; remove layer")
        if self.method == DRISE_METHOD:
            unknown = [key for key in self.params if key not in DRISE_PARAMS]
            if unknown or self.init or self.baseline is not None or self.noise_tunnel:
                raise ValueError(f"method {self.method} takes only params {', '.join(DRISE_PARAMS)}")
        elif self.method in BUILTIN_METHODS and (
            (self.params and self.method != ROLLOUT_METHOD)
            or self.init
            or self.baseline is not None
            or self.noise_tunnel
        ):
            raise ValueError(f"method {self.method} takes no params, init, baseline or noise_tunnel")
        if self.method == ROLLOUT_METHOD:
            try:
                RolloutParams.model_validate(self.params)
            except ValidationError as error:
                problem = error.errors()[0]
                where = ".".join(str(part) for part in problem["loc"])
                raise ValueError(f"params.{where}: {problem['msg']}") from None
        if self.reshape is not None and self.layer is None and self.method not in ATTENTION_METHODS:
            raise ValueError(f"{self.method} has no layer to reshape; remove reshape")
        return self

    @property
    def rollout(self) -> RolloutParams:
        """The params of ``attention_rollout``."""
        return RolloutParams.model_validate(self.params)


class BinarizeSpec(_ExactlyOne):
    """How a normalised map becomes a saliency region (exactly one rule)."""

    CHOICES: ClassVar[tuple[str, ...]] = ("std", "percentile", "top_fraction", "threshold")
    std: float | None = Field(default=None, description="keep x >= mean + k*std (Shared Interest's default, k=1)")
    percentile: Annotated[float, Field(ge=0, le=100)] | None = None
    top_fraction: Annotated[float, Field(gt=0, le=1)] | None = None
    threshold: Fraction | None = None

    def rule(self) -> dict[str, float]:
        return {name: value for name in self.CHOICES if (value := getattr(self, name)) is not None}


class SaliencySpec(_Strict):
    """Attribution -> 2-D map -> binary region."""

    channels: Literal["sum", "abs_sum", "max_abs", "positive"] = "abs_sum"
    binarize: BinarizeSpec = Field(default_factory=lambda: BinarizeSpec(std=1.0))


# --- checks ---------------------------------------------------------------------------------


class CheckConfig(_Strict):
    """Fields shared by every kind of check's block (``shared_interest: {...}``, ``fidelity: {...}``)."""

    uses_attributions: ClassVar[bool] = True
    methods: list[str] | None = Field(default=None, min_length=1, description="attribution names; default: all")

    @property
    def by_class(self) -> bool:
        """One item per class (``per_class: true``, for the kinds that have it)."""
        return False

    @property
    def slicing(self) -> SlicesSpec | None:
        """One item per value of a per-sample field (``slices``, for the kinds that have it)."""
        return None


class SlicesSpec(_Strict):
    """One test per value of a per-sample field of the data (hospital, skin tone, camera)."""

    by: Annotated[str, Field(pattern=r"^[A-Za-z_][\w.-]*$")] = Field(
        description="the field: an (N,) array of the npz, a column of the folder's labels CSV, or a key of a Dataset item's dict"
    )
    values: list[str | int] | None = Field(
        default=None,
        min_length=1,
        description="the slices to test (default: every value in the data; required for a Dataset factory)",
    )


class SlicedCheck(CheckConfig):
    """A check that can run once per slice of the data (``slices``)."""

    slices: SlicesSpec | None = Field(default=None, description="one test per value of a per-sample field")

    @property
    def slicing(self) -> SlicesSpec | None:
        return self.slices

    @model_validator(mode="after")
    def _slices_or_per_class(self) -> SlicedCheck:
        if self.slices is not None and self.by_class:
            raise ValueError("per_class and slices do not combine: give one of them")
        return self


class LevelsSpec(_Strict):
    low: Fraction = 0.30
    high: Fraction = 0.70

    @model_validator(mode="after")
    def _ordered(self) -> LevelsSpec:
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        return self


class SharedInterestCheck(SlicedCheck):
    """Thresholds on IoU, ground-truth coverage and saliency coverage (Boggust et al. 2022)."""

    iou: AggregateThresholds | None = None
    gtc: AggregateThresholds | None = None
    sc: AggregateThresholds | None = None
    sc_continuous: AggregateThresholds | None = None
    per_class: bool = False

    @property
    def by_class(self) -> bool:
        return self.per_class

    @model_validator(mode="after")
    def _some_metric(self) -> SharedInterestCheck:
        if not self.metrics():
            raise ValueError("give at least one of iou, gtc, sc, sc_continuous")
        return self

    def metrics(self) -> dict[str, dict[str, Threshold]]:
        names = ("iou", "gtc", "sc", "sc_continuous")
        return {name: value for name in names if (value := getattr(self, name)) is not None}


class PatternsCheck(SlicedCheck):
    """Limits on the fraction of samples in each of the eight behaviour patterns."""

    max_fraction: dict[PatternName, Fraction] = Field(default_factory=dict)
    min_fraction: dict[PatternName, Fraction] = Field(default_factory=dict)
    forbid: list[PatternName] = Field(default_factory=list)
    levels: LevelsSpec = Field(default_factory=LevelsSpec)
    per_class: bool = False

    @property
    def by_class(self) -> bool:
        return self.per_class

    @model_validator(mode="after")
    def _some_limit(self) -> PatternsCheck:
        if not (self.max_fraction or self.min_fraction or self.forbid):
            raise ValueError("give at least one of max_fraction, min_fraction, forbid")
        return self


FidelityOrder = Literal["mif", "lif", "random", "insertion"]


def _default_orders() -> list[FidelityOrder]:
    return ["mif", "lif"]


class FidelityCheck(CheckConfig):
    """MIF/LIF perturbation curves and their gap (Brocki & Chung 2022; ROAD, Rong et al. 2022)."""

    steps: Annotated[int, Field(ge=2, le=1000)] = 20
    fractions: list[Annotated[float, Field(ge=0.0, lt=1.0)]] | None = Field(
        default=None, min_length=2, description="explicit removed fractions (overrides steps)"
    )
    orders: list[FidelityOrder] = Field(default_factory=_default_orders, min_length=1)
    unit: Annotated[str, Field(pattern=r"^(pixel|patch:[1-9]\d*)$")] = "pixel"
    fill: Literal["zeros", "mean", "blur", "uniform", "noisy_linear"] = "zeros"
    score: Literal["probability", "logit", "accuracy"] = "probability"
    score_of: Literal["predicted", "label"] = Field(
        default="predicted", description="the class whose score is tracked: predicted on the clean image, or the label"
    )
    channels: Literal["sum", "abs_sum", "max_abs", "positive"] | None = Field(
        default=None, description="importance reduction over channels (default: saliency.channels)"
    )
    noise_std: Annotated[float, Field(ge=0)] = 0.01
    batch_size: PositiveInt | None = Field(default=None, description="model batch size (default: data.batch_size)")
    gap: ThresholdField | None = Field(default=None, description="mean AUC(LIF) - mean AUC(MIF)")
    mif_auc: ThresholdField | None = None
    lif_auc: ThresholdField | None = Field(default=None, description="the perturbation-artifact bound")
    insertion_auc: ThresholdField | None = Field(
        default=None, description="RISE insertion: AUC of the score as pixels return to a blurred image"
    )

    @model_validator(mode="after")
    def _some_threshold(self) -> FidelityCheck:
        if self.gap is None and self.mif_auc is None and self.lif_auc is None and self.insertion_auc is None:
            raise ValueError("give at least one of gap, mif_auc, lif_auc, insertion_auc")
        if self.fractions is not None and sorted(self.fractions) != self.fractions:
            raise ValueError("fractions must increase")
        needed = {"gap": ("mif", "lif"), "mif_auc": ("mif",), "lif_auc": ("lif",), "insertion_auc": ("insertion",)}
        for name, orders in needed.items():
            missing = [order for order in orders if getattr(self, name) is not None and order not in self.orders]
            if missing:
                raise ValueError(f"{name} needs the {', '.join(missing)} order: add it to orders")
        return self

    @property
    def patch(self) -> int:
        """Side of a removal unit in pixels (1 for ``pixel``)."""
        return 1 if self.unit == "pixel" else int(self.unit.split(":")[1])


class AgainstSpec(_ExactlyOne):
    """The version a drift check compares with: other weights, a whole model, or a stored snapshot."""

    CHOICES: ClassVar[tuple[str, ...]] = ("weights", "model", "snapshot", "baseline")
    weights: str | None = Field(default=None, description="another state_dict for the same factory")
    model: ModelSpec | None = None
    snapshot: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")] | None = Field(
        default=None, description="a stored snapshot, written by --saliency-update-baselines"
    )
    baseline: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")] | None = Field(
        default=None, description="deprecated: the former name of snapshot (warns)"
    )

    @property
    def snapshot_key(self) -> Literal["snapshot", "baseline"] | None:
        """The key that names the stored snapshot (``baseline``: the deprecated alias), if any."""
        return "snapshot" if self.snapshot is not None else "baseline" if self.baseline is not None else None

    @property
    def stored(self) -> str | None:
        """The stored snapshot's name, under either key."""
        return self.snapshot if self.snapshot is not None else self.baseline


class SegmentsSpec(_Strict):
    patch: PositiveInt = 8


class EmbeddingSpec(_Strict):
    """How kept segments are described before clustering."""

    kind: Literal["activations", "colour_texture"] = "activations"
    layer: str | None = Field(default=None, description="dotted layer name (default: the last Conv2d)")


class DriftCheck(CheckConfig):
    """Attribution drift between two model versions, per cluster of salient segments (IMACS)."""

    against: AgainstSpec
    segments: SegmentsSpec = Field(default_factory=SegmentsSpec)
    keep: PositiveInt = 4
    embedding: EmbeddingSpec = Field(default_factory=EmbeddingSpec)
    clusters: Annotated[int, Field(ge=1, le=256)] = 8
    max_shift: Fraction | None = Field(default=None, description="largest allowed per-cluster change of share")
    mean_shift: Fraction | None = None
    min_rank_correlation: Annotated[float, Field(ge=-1.0, le=1.0)] | None = None

    @model_validator(mode="after")
    def _some_threshold(self) -> DriftCheck:
        if self.max_shift is None and self.mean_shift is None and self.min_rank_correlation is None:
            raise ValueError("give at least one of max_shift, mean_shift, min_rank_correlation")
        return self


class RegionCheck(SlicedCheck):
    """Importance of a named region (contextual decomposition, or occlusion)."""

    uses_attributions: ClassVar[bool] = False
    mask: str | None = Field(default=None, description="an extra named mask of the data set (e.g. decoy)")
    box: list[Annotated[int, Field(ge=0)]] | None = Field(
        default=None, min_length=4, max_length=4, description="[top, left, bottom, right], end exclusive"
    )
    method: Literal["contextual_decomposition", "occlusion"] = "contextual_decomposition"
    share: AggregateThresholds | None = Field(default=None, description="region's share of the target logit")
    interaction: AggregateThresholds | None = Field(
        default=None, description="CD(region + ground truth) - CD(region) - CD(ground truth), relative"
    )

    @model_validator(mode="after")
    def _region_and_threshold(self) -> RegionCheck:
        if (self.mask is None) == (self.box is None):
            raise ValueError("give exactly one of mask, box")
        if self.share is None and self.interaction is None:
            raise ValueError("give at least one of share, interaction")
        if self.interaction is not None and self.method != "contextual_decomposition":
            raise ValueError("interaction needs method: contextual_decomposition")
        return self


ChannelReductionName = Literal["sum", "abs_sum", "max_abs", "positive"]
LOCALISATION_METRICS: tuple[str, ...] = (
    "pointing_game",
    "attribution_localisation",
    "relevance_mass_accuracy",
    "relevance_rank_accuracy",
    "top_k_intersection",
    "auc",
    "energy_pointing_game",
)


class LocalisationCheck(CheckConfig):
    """How much of each map falls on the ground-truth mask: the localisation family
    (pointing game, attribution localisation, relevance mass / rank accuracy, top-k intersection,
    ROC-AUC, energy-based pointing game)."""

    pointing_game: AggregateThresholds | None = Field(
        default=None, description="1 when the map's maximum is on the mask"
    )
    attribution_localisation: AggregateThresholds | None = Field(default=None, description="positive mass on the mask")
    relevance_mass_accuracy: AggregateThresholds | None = Field(default=None, description="signed mass on the mask")
    relevance_rank_accuracy: AggregateThresholds | None = Field(
        default=None, description="top-|mask| pixels on the mask"
    )
    top_k_intersection: AggregateThresholds | None = Field(default=None, description="top-k pixels on the mask")
    auc: AggregateThresholds | None = Field(default=None, description="ROC-AUC of the map for the mask")
    energy_pointing_game: AggregateThresholds | None = Field(
        default=None, description="positive mass in the mask's bounding box"
    )
    tolerance: Annotated[int, Field(ge=0)] = Field(default=15, description="pointing game: pixels around the mask")
    k: PositiveInt | None = Field(default=None, description="top_k_intersection: how many top pixels")
    channels: ChannelReductionName | None = Field(
        default=None, description="channel reduction of the attributions (default: saliency.channels)"
    )
    per_class: bool = False

    @property
    def by_class(self) -> bool:
        return self.per_class

    @model_validator(mode="after")
    def _some_metric(self) -> LocalisationCheck:
        if not self.metrics():
            raise ValueError(f"give at least one of {', '.join(LOCALISATION_METRICS)}")
        if self.top_k_intersection is not None and self.k is None:
            raise ValueError("top_k_intersection needs k: the number of top pixels, such as k: 100")
        return self

    def metrics(self) -> dict[str, dict[str, Threshold]]:
        return {name: value for name in LOCALISATION_METRICS if (value := getattr(self, name)) is not None}


class ComplexityCheck(CheckConfig):
    """How concentrated each map is: sparseness (Gini index) and complexity (entropy)."""

    sparseness: AggregateThresholds | None = Field(default=None, description="Gini index of |map|, higher is sparser")
    complexity: AggregateThresholds | None = Field(
        default=None, description="entropy of |map| in nats, lower is simpler"
    )
    channels: ChannelReductionName | None = Field(
        default=None, description="channel reduction of the attributions (default: saliency.channels)"
    )
    per_class: bool = False

    @property
    def by_class(self) -> bool:
        return self.per_class

    @model_validator(mode="after")
    def _some_metric(self) -> ComplexityCheck:
        if not self.metrics():
            raise ValueError("give at least one of sparseness, complexity")
        return self

    def metrics(self) -> dict[str, dict[str, Threshold]]:
        names = ("sparseness", "complexity")
        return {name: value for name in names if (value := getattr(self, name)) is not None}


class RobustnessCheck(CheckConfig):
    """How stable the attribution is under small input changes (max / average sensitivity) and how
    well it predicts the effect of noise on the model (infidelity), both as captum.metrics compute
    them (Yeh et al. 2019)."""

    max_sensitivity: AggregateThresholds | None = Field(
        default=None, description="largest relative change of the attribution over the perturbations"
    )
    avg_sensitivity: AggregateThresholds | None = Field(
        default=None, description="mean relative change of the attribution over the same perturbations"
    )
    infidelity: AggregateThresholds | None = Field(
        default=None, description="mean squared error of attribution x noise against the change of the target logit"
    )
    perturb_radius: Annotated[float, Field(gt=0)] = Field(
        default=0.02, description="sensitivity: uniform noise in [-r, r] on every input value"
    )
    n_perturb_samples: Annotated[int, Field(ge=1, le=1000)] = 10
    norm_ord: Literal["fro", "inf"] = Field(
        default="fro", description="sensitivity: the norm of the attribution change, Frobenius or max-abs"
    )
    noise_std: Annotated[float, Field(gt=0)] = Field(
        default=0.003, description="infidelity: standard deviation of the Gaussian perturbation I"
    )
    normalize: bool = Field(default=True, description="infidelity: rescale the attribution by the best scalar first")
    batch_size: PositiveInt | None = Field(
        default=None, description="images per captum call (default: data.batch_size)"
    )

    @model_validator(mode="after")
    def _some_metric(self) -> RobustnessCheck:
        if not self.metrics():
            raise ValueError("give at least one of max_sensitivity, avg_sensitivity, infidelity")
        return self

    def metrics(self) -> dict[str, dict[str, Threshold]]:
        names = ("max_sensitivity", "avg_sensitivity", "infidelity")
        return {name: value for name in names if (value := getattr(self, name)) is not None}


SanityTest = Literal["cascading", "independent", "random_logit", "efficient"]
SimilarityName = Literal["spearman", "spearman_abs", "ssim"]


class SanityCheck(CheckConfig):
    """Does the explanation depend on the model? Parameter randomisation (Adebayo et al. 2018),
    random logit (Sixt et al. 2020) and efficient MPRT (Hedström et al. 2023)."""

    test: SanityTest = Field(
        default="cascading",
        description="cascading: re-initialise layers top-down, cumulatively; independent: one at a time; "
        "random_logit: compare with another class's explanation; efficient: eMPRT entropy score",
    )
    layers: list[Annotated[str, Field(min_length=1)]] | None = Field(
        default=None,
        min_length=1,
        description="dotted module names, in order (default: every parameterised layer, top-down)",
    )
    similarity: SimilarityName | None = Field(
        default=None, description="default: spearman_abs (cascading, independent), ssim (random_logit)"
    )
    channels: ChannelReductionName | None = Field(
        default=None, description="channel reduction of the compared maps (default: saliency.channels)"
    )
    final: ThresholdField | None = Field(
        default=None,
        description="mean similarity after the last step (random_logit: the mean similarity); lower is better",
    )
    every_step: ThresholdField | None = Field(default=None, description="mean similarity after each randomised layer")
    per_layer: dict[Annotated[str, Field(min_length=1)], ThresholdField] | None = Field(
        default=None, min_length=1, description="layer name -> threshold on the mean similarity after that layer"
    )
    score: ThresholdField | None = Field(default=None, description="efficient: mean eMPRT score; higher is better")
    bins: Annotated[int, Field(ge=2, le=10000)] = Field(default=100, description="efficient: histogram bins")

    @field_validator("layers", "per_layer", mode="before")
    @classmethod
    def _numbers_name_layers(cls, value: object) -> object:
        """``nn.Sequential`` layers are named by their index: ``[10, 6]`` means ``["10", "6"]``."""

        def name(item: object) -> object:
            return str(item) if isinstance(item, int) and not isinstance(item, bool) else item

        if isinstance(value, list):
            return [name(item) for item in value]
        if isinstance(value, dict):
            return {name(key): item for key, item in value.items()}
        return value

    @model_validator(mode="after")
    def _thresholds_fit_the_test(self) -> SanityCheck:
        steps = ("final", "every_step", "per_layer")
        given = [name for name in steps if getattr(self, name) is not None]
        if self.test == "efficient":
            if self.score is None:
                raise ValueError('test efficient needs score (the eMPRT score, e.g. score: ">= 0.1")')
            if given or self.similarity is not None:
                raise ValueError(f"test efficient takes score and bins, not {', '.join(given) or 'similarity'}")
            return self
        if self.score is not None or "bins" in self.model_fields_set:
            raise ValueError(f"score and bins go with test: efficient, not with test: {self.test}")
        if self.test == "random_logit":
            if (
                self.final is None
                or self.every_step is not None
                or self.per_layer is not None
                or self.layers is not None
            ):
                raise ValueError(
                    'test random_logit takes final (e.g. final: "<= 0.5"), not layers, every_step or per_layer'
                )
            return self
        if not given:
            raise ValueError(f"give at least one of {', '.join(steps)}")
        if self.layers is not None and self.per_layer is not None:
            unknown = [name for name in self.per_layer if name not in self.layers]
            if unknown:
                raise ValueError(
                    f"per_layer names {unknown[0]!r}, which is not in layers{did_you_mean(unknown[0], self.layers)}"
                )
        return self

    @property
    def similarity_name(self) -> SimilarityName:
        """The similarity used: the given one, or the test's default."""
        return self.similarity or ("ssim" if self.test == "random_logit" else "spearman_abs")


class AgreementCheck(CheckConfig):
    """Do two attribution methods agree on where the evidence is? The Spearman rank correlation
    of each sample's map by the item's method with its map by ``reference`` (docs/checks.md
    builds this kind step by step)."""

    reference: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.]+$")] = Field(
        description="the attribution the maps are compared with"
    )
    rank_correlation: AggregateThresholds = Field(description="per-sample Spearman correlation of the two maps")
    channels: ChannelReductionName | None = Field(
        default=None, description="channel reduction of both attributions (default: saliency.channels)"
    )


Decide = Literal["point", "interval"]


class CheckSpec(_ExactlyOne):
    """One expectation; it becomes one pytest item per attribution method (and class). Each kind
    of check is a field named by its key whose type is the kind's :class:`CheckConfig`."""

    CHOICES: ClassVar[tuple[str, ...]] = ()  # the kinds, set below from the fields
    id: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="test name: letters, digits, _ . -")
    severity: Literal["fail", "warn"] = "fail"
    decide: Decide | None = Field(default=None, description="point or interval (default: the spec's decide)")
    marks: list[Annotated[str, Field(pattern=r"^[A-Za-z_]\w*$")]] = Field(default_factory=list)
    description: str | None = None
    shared_interest: SharedInterestCheck | None = None
    patterns: PatternsCheck | None = None
    fidelity: FidelityCheck | None = None
    drift: DriftCheck | None = None
    region: RegionCheck | None = None
    sanity: SanityCheck | None = None
    localisation: LocalisationCheck | None = None
    complexity: ComplexityCheck | None = None
    robustness: RobustnessCheck | None = None
    agreement: AgreementCheck | None = None

    @classmethod
    def kinds(cls) -> dict[str, type[CheckConfig]]:
        """Every kind of check, in the order of the fields: its key and its config type."""
        found = {}
        for name, field in cls.model_fields.items():
            types = [given for given in get_args(field.annotation) if isinstance(given, type)]
            configs = [given for given in types if issubclass(given, CheckConfig)]
            if configs:
                found[name] = configs[0]
        return found

    @property
    def kind(self) -> str:
        return next((name for name in self.CHOICES if getattr(self, name) is not None), "")

    @property
    def config(self) -> CheckConfig:
        """The kind's block; :mod:`pytest_saliency.checks.registry` gives it to the kind as its
        own config type."""
        config: CheckConfig = getattr(self, self.kind)
        return config


class DetectionSpec(_Strict):
    """``task: detection``: how an object's detection is found (docs/spec.md, "Tasks")."""

    match_iou: Annotated[float, Field(gt=0, le=1)] = Field(
        default=0.5, description="a detection is the object's when of its class with at least this IoU"
    )
    max_missed: Fraction | None = Field(
        default=None, description="the share of objects the model may miss (a test of its own)"
    )


class SegmentationSpec(_Strict):
    """``task: segmentation``: which (image, class) pairs are samples and which region is explained."""

    ignore_index: int | None = Field(default=255, description="mask value of unlabelled pixels (VOC: 255)")
    background: int | None = Field(default=None, description="a class that is never a sample (e.g. 0)")
    region: Literal["predicted", "ground_truth"] = Field(
        default="predicted",
        description="the logits are summed where the clean image predicts the class, or over its mask",
    )
    max_missed: Fraction | None = Field(
        default=None, description="the share of (image, class) pairs the model may miss (a test of its own)"
    )


CHECK_KINDS: tuple[str, ...] = tuple(CheckSpec.kinds())
CheckSpec.CHOICES = CHECK_KINDS


class Spec(_Strict):
    """A ``*.saliency.yaml`` file."""

    version: Literal[1]
    name: str | None = None
    model: ModelSpec
    data: DataSpec
    attributions: dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.]+$")], AttributionSpec] = Field(min_length=1)
    saliency: SaliencySpec = Field(default_factory=SaliencySpec)
    target: Literal["label", "predicted"] = "label"
    task: Literal["classification", "detection", "segmentation"] = Field(
        default="classification", description="a sample is an image, a ground-truth object, or an (image, class) pair"
    )
    detection: DetectionSpec = Field(default_factory=DetectionSpec)
    segmentation: SegmentationSpec = Field(default_factory=SegmentationSpec)
    seed: int = 0
    decide: Decide = Field(
        default="point",
        description="point: a threshold is met by the measured value; interval: by its 95 % interval (else inconclusive)",
    )
    checks: list[CheckSpec] = Field(min_length=1)

    def decide_for(self, check: CheckSpec) -> Literal["point", "interval"]:
        """How ``check``'s thresholds are decided: its own ``decide``, else the spec's."""
        return check.decide or self.decide

    @field_validator("checks")
    @classmethod
    def _unique_ids(cls, checks: list[CheckSpec]) -> list[CheckSpec]:
        seen: set[str] = set()
        for check in checks:
            if check.id in seen:
                raise ValueError(f"check id {check.id!r} is used twice; ids name tests and must be unique")
            seen.add(check.id)
        return checks


def json_schema() -> dict[str, JSONValue]:
    """The JSON Schema of the spec language, for editors (yaml-language-server)."""
    schema = Spec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "pytest-saliency spec (*.saliency.yaml)"
    return schema
