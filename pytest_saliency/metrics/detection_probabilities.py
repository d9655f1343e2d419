"""Class-probability vectors of torchvision's two-stage detectors, for D-RISE.

torchvision's ``GeneralizedRCNN`` family (``fasterrcnn_*``, ``maskrcnn_*``, ``keypointrcnn_*``)
turns the softmax of each proposal's ``class_logits`` into one candidate per class in
``RoIHeads.postprocess_detections`` (score filter, small-box removal, per-class NMS, the
``detections_per_img`` best) and keeps only the label's score. While :func:`class_probabilities`
is active, each ``RoIHeads`` of a network also returns, per image, ``probabilities (K,
num_classes)``: the whole softmax row (background at 0) of the proposal each kept detection came
from, so its entry at the detection's label is its score. The original
``postprocess_detections`` still gives the boxes, labels and scores; the rows are found by running
the same steps on the candidates' indices, and an image whose replayed detections differ from the
original's (a subclass with its own post-processing) gets no ``probabilities``. One-stage
detectors (RetinaNet, FCOS, SSD: a sigmoid score per class) are left alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PROBABILITIES_KEY = "probabilities"


class BoxCoder(Protocol):
    def decode(self, codes: Tensor, boxes: list[Tensor]) -> Tensor: ...


class Heads(Protocol):
    """The attributes of torchvision's ``RoIHeads`` that its post-processing reads."""

    box_coder: BoxCoder
    score_thresh: float
    nms_thresh: float
    detections_per_img: int


Postprocess = Callable[[Tensor, Tensor, list[Tensor], list[tuple[int, int]]], tuple[list[Tensor], ...]]


def _roi_heads(network: nn.Module) -> list[nn.Module]:
    """The ``RoIHeads`` modules of ``network`` (none when torchvision is missing)."""
    try:
        from torchvision.models.detection.roi_heads import RoIHeads
    except ImportError:  # pragma: no cover - torchvision is a dependency
        return []
    return [module for module in network.modules() if isinstance(module, RoIHeads)]


def kept_probabilities(
    heads: Heads,
    class_logits: Tensor,
    box_regression: Tensor,
    proposals: list[Tensor],
    image_shapes: list[tuple[int, int]],
) -> list[tuple[Tensor, Tensor, Tensor, Tensor]]:
    """Per image, ``(boxes, scores, labels, probabilities)``: ``RoIHeads.postprocess_detections``'s
    steps (torchvision 0.17 to 0.29) replayed on the candidates with the index of each one's
    proposal, and the softmax rows of the kept ones."""
    from torchvision.ops import boxes as box_ops

    num_classes = class_logits.shape[-1]
    boxes_per_image = [boxes.shape[0] for boxes in proposals]
    pred_boxes = heads.box_coder.decode(box_regression, proposals)
    pred_scores = F.softmax(class_logits, -1)
    out = []
    for boxes, probabilities, image_shape in zip(
        torch.split(pred_boxes, boxes_per_image), torch.split(pred_scores, boxes_per_image), image_shapes, strict=True
    ):
        boxes = box_ops.clip_boxes_to_image(boxes, image_shape)
        labels = torch.arange(num_classes, device=class_logits.device).view(1, -1).expand_as(probabilities)
        rows = torch.arange(probabilities.shape[0], device=class_logits.device).view(-1, 1).expand_as(probabilities)
        boxes = boxes[:, 1:].reshape(-1, 4)
        scores = probabilities[:, 1:].reshape(-1)
        labels, rows = labels[:, 1:].reshape(-1), rows[:, 1:].reshape(-1)
        inds = torch.where(scores > heads.score_thresh)[0]
        boxes, scores, labels, rows = boxes[inds], scores[inds], labels[inds], rows[inds]
        keep = box_ops.remove_small_boxes(boxes, min_size=1e-2)
        boxes, scores, labels, rows = boxes[keep], scores[keep], labels[keep], rows[keep]
        keep = box_ops.batched_nms(boxes, scores, labels, heads.nms_thresh)[: heads.detections_per_img]
        boxes, scores, labels, rows = boxes[keep], scores[keep], labels[keep], rows[keep]
        out.append((boxes, scores, labels, probabilities[rows]))
    return out


@contextmanager
def class_probabilities(network: nn.Module) -> Iterator[None]:
    """While active, every torchvision ``RoIHeads`` in ``network`` adds ``probabilities (K,
    num_classes)`` to each image's detections (module docs); its boxes, labels and scores are
    unchanged. ``postprocess_detections`` and the module's hooks are restored on exit, also after
    an exception. Networks without ``RoIHeads`` are left as they are."""
    undo: list[Callable[[], None]] = []
    try:
        for heads in _roi_heads(network):
            undo.append(_patch(heads))
        yield
    finally:
        for restore in reversed(undo):
            restore()


def _patch(heads: nn.Module) -> Callable[[], None]:
    """Wraps ``heads.postprocess_detections`` and hooks ``heads``' output; returns the undo."""
    own = "postprocess_detections" in vars(heads)
    original = cast(Postprocess, heads.postprocess_detections)
    found: list[Tensor | None] = []

    def postprocess(
        class_logits: Tensor, box_regression: Tensor, proposals: list[Tensor], image_shapes: list[tuple[int, int]]
    ) -> tuple[list[Tensor], ...]:
        result = original(class_logits, box_regression, proposals, image_shapes)
        all_boxes, all_scores, all_labels = result
        replayed = kept_probabilities(cast(Heads, heads), class_logits, box_regression, proposals, image_shapes)
        found.clear()
        for (boxes, scores, labels, probabilities), kept in zip(
            replayed, zip(all_boxes, all_scores, all_labels, strict=True), strict=True
        ):
            same = all(torch.equal(mine, theirs) for mine, theirs in zip((boxes, scores, labels), kept, strict=True))
            found.append(probabilities if same else None)
        return result

    def attach(module: nn.Module, inputs: object, output: object) -> None:
        if isinstance(output, tuple) and output and isinstance(output[0], list) and len(output[0]) == len(found):
            for detections, probabilities in zip(output[0], found, strict=True):
                if probabilities is not None and isinstance(detections, dict):
                    detections[PROBABILITIES_KEY] = probabilities
        found.clear()

    vars(heads)["postprocess_detections"] = postprocess  # an instance attribute shadows the method
    handle = heads.register_forward_hook(attach)

    def restore() -> None:
        handle.remove()
        if own:
            vars(heads)["postprocess_detections"] = original
        else:
            del vars(heads)["postprocess_detections"]

    return restore
