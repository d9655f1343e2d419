"""What an attribution explains, as a score per sample, for detectors and semantic segmenters.

A classifier's target is the logit of a class. For the other tasks (``task:`` in a spec) a
:class:`Target` is bound to the samples of one shard and turns a model's raw output on any batch
of inputs into ``(B, S)`` scores: column ``s`` is sample ``s``'s score. A :class:`ScoreModel`
puts that behind the model, so that it looks like a classifier whose "classes" are the shard's
samples: every attribution method, fidelity curve, robustness, sanity, region and drift check then
explains sample ``s`` as class ``s`` of its own row, without a second implementation.

- :class:`MatchedDetection` (``task: detection``): the score of the detection of the object's class
  with the highest score among those whose box has IoU >= ``match_iou`` with the object's box,
  matched again on every (perturbed, interpolated) input; 0 when none matches.
- :class:`RegionLogitSum` (``task: segmentation``): the class's logits summed over a fixed region
  (Seg-Grad-CAM); bounded: the mean class probability over that region.

Formulas and sources: docs/methods.md, "Targets of detectors and segmenters".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import Location, SpecRuntimeError
from .loaders.models import ModelUnderTest
from .metrics.boxes import box_iou

DETECTION_KEYS = ("boxes", "labels", "scores")
"""What a detector gives per image (torchvision's form): ``boxes (K, 4)`` x1, y1, x2, y2 in pixels,
``labels (K,)`` long, ``scores (K,)`` in [0, 1]; optionally ``probabilities (K, classes)``."""


class Target(Protocol):
    """The scores of the ``S`` samples a target is bound to, from a model's raw output."""

    def scores(self, output: object) -> Tensor:
        """``(B, S)``: each sample's score on each of the ``B`` inputs the output is of."""

    def bounded(self, output: object) -> Tensor:
        """``(B, S)`` in ``[0, 1]``: the same for fidelity curves, whose AUCs stay in ``[0, 1]``."""


def detections(output: object, count: int, location: Location = ("model",)) -> list[Mapping[str, Tensor]]:
    """A detector's output for ``count`` images, checked: one dict per image with ``boxes (K, 4)``,
    ``labels (K,)`` and ``scores (K,)``; else an error at ``location`` that says what to return."""
    if isinstance(output, Sequence) and len(output) == count and all(isinstance(item, Mapping) for item in output):
        items: list[Mapping[str, Tensor]] = list(output)
        if all(all(isinstance(item.get(key), Tensor) for key in DETECTION_KEYS) for item in items):
            return items
    raise SpecRuntimeError(
        location,
        f"task: detection needs one dict per image with {', '.join(DETECTION_KEYS)} (torchvision's form); "
        f"the model returns {type(output).__name__}: adapt the detector's output in its factory (docs/spec.md)",
    )


@dataclass(frozen=True)
class MatchedDetection:
    """The objects ``boxes (S, 4)`` (x1, y1, x2, y2 in pixels) of classes ``labels (S,)`` in the
    images ``images (S,)`` (their indices, which seed D-RISE's masks): each one's score is its
    matched detection's score (module docs)."""

    boxes: Tensor
    labels: Tensor
    images: Tensor
    match_iou: float = 0.5

    def scores(self, output: object) -> Tensor:
        rows = []
        for found in detections(output, _count(output)):
            if found["boxes"].shape[0] == 0:
                rows.append(self.boxes.new_zeros(self.boxes.shape[0]))
                continue
            matches = self.matches(found["boxes"], found["labels"])  # (K, S)
            scores = found["scores"].float()[:, None]
            rows.append(torch.where(matches, scores, torch.zeros_like(scores)).amax(dim=0))
        return torch.stack(rows)

    bounded = scores  # detection scores are probabilities already

    def matches(self, boxes: Tensor, labels: Tensor) -> Tensor:
        """``(K, S) bool``: detection ``k`` (``boxes (K, 4)``, ``labels (K,)``) can be object
        ``s``'s: the same class and IoU >= ``match_iou``."""
        same_class = labels.view(-1, 1) == self.labels.view(1, -1)
        return same_class & (box_iou(boxes.float(), self.boxes.float()) >= self.match_iou)


@dataclass(frozen=True)
class RegionLogitSum:
    """Class ``classes[s]``'s logits summed over ``regions[s]`` ``(S, H, W) bool`` (module docs)."""

    classes: Tensor
    regions: Tensor

    def scores(self, output: object) -> Tensor:
        return self._summed(segmentation_logits(output, tuple(self.regions.shape[1:])))

    def bounded(self, output: object) -> Tensor:
        probabilities = segmentation_logits(output, tuple(self.regions.shape[1:])).float().softmax(dim=1)
        area = self.regions.flatten(1).sum(dim=1).clamp(min=1)
        return self._summed(probabilities) / area

    def _summed(self, maps: Tensor) -> Tensor:
        per_class = torch.einsum("bchw,shw->bcs", maps, self.regions.to(maps.dtype))  # (B, C, S)
        picked = self.classes.view(1, 1, -1).expand(maps.shape[0], 1, -1)
        return per_class.gather(1, picked).squeeze(1)


def segmentation_logits(output: object, size: tuple[int, ...], location: Location = ("model",)) -> Tensor:
    """A segmenter's ``(B, C, h, w)`` logits upsampled (bilinear) to the images' ``size`` ``(H, W)``
    when smaller (Hugging Face segmenters give a quarter of the resolution)."""
    if not isinstance(output, Tensor) or output.dim() != 4:
        shown = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
        raise SpecRuntimeError(
            location,
            f"task: segmentation needs logits (N, classes, H, W), the model gives {shown}: "
            "pick them with model.output (torchvision: out; Hugging Face: logits)",
        )
    if tuple(output.shape[2:]) != size:
        return F.interpolate(output, size=size, mode="bilinear", align_corners=False)
    return output


def _count(output: object) -> int:
    return len(output) if isinstance(output, Sequence) else -1


class ScoreModel(nn.Module):
    """``model`` seen through ``target``: ``(B, C, H, W)`` images -> ``(B, S)`` scores of the
    ``S`` samples the target is bound to (:meth:`Target.bounded` when ``bounded``). ``network``
    and ``normalize`` are the model's, so layer methods find their layers."""

    model: ModelUnderTest

    def __init__(self, model: ModelUnderTest, target: Target, bounded: bool = False) -> None:
        super().__init__()
        self.model = model
        self.network = model.network  # the same modules under the model's own names (layer hooks)
        self.normalize = model.normalize
        self.target = target
        self.bounded = bounded
        self.training = model.training  # eval like the model (its own mode is left alone)

    def forward(self, inputs: Tensor) -> Tensor:
        output = self.model.raw(inputs)
        scores = self.target.bounded(output) if self.bounded else self.target.scores(output)
        if inputs.requires_grad and not scores.requires_grad:  # nothing detected: a zero gradient
            scores = scores + 0.0 * inputs.flatten(1).sum(dim=1, keepdim=True)
        return scores


class OwnColumn(nn.Module):
    """``(b, C, H, W)`` images of some of a shard's samples -> ``(b, 1)``: each one's own score
    (column ``columns[i]`` of ``scored``'s output for row ``i``)."""

    def __init__(self, scored: ScoreModel, columns: Tensor) -> None:
        super().__init__()
        self.scored = scored
        self.columns = columns
        self.training = scored.training

    def forward(self, inputs: Tensor) -> Tensor:
        scores: Tensor = self.scored(inputs)
        return scores.gather(1, self.columns.view(-1, 1))
