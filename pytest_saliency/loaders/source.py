r"""What every data source is: a :class:`SampleSource` that reads :class:`SampleBatch`\ es (shards)
on demand. Nothing reads the whole data set at once."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from ..errors import Location

SCALES = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}
"""The default ``data.scale`` of integer images; float images are taken as they are."""


@dataclass
class SampleBatch:
    """Some samples of a data set (a shard), checked: ``indices (B,)`` long, their positions in
    the data set; images ``(B, C, H, W)`` float in [0, 1]; masks ``(B, H, W) bool``; labels
    ``(B,)`` long; extra named region masks ``(B, H, W) bool``; named per-sample fields ``(B,)``
    strings; ``skipped``: one line per sample left out (``data.on_bad_sample: skip``)."""

    indices: Tensor
    images: Tensor
    masks: Tensor
    labels: Tensor
    regions: dict[str, Tensor] = field(default_factory=dict)
    fields: dict[str, np.ndarray] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def to(self, device: torch.device) -> SampleBatch:
        """This batch with its tensors on ``device`` (indices and labels too)."""
        return SampleBatch(
            self.indices.to(device),
            self.images.to(device),
            self.masks.to(device),
            self.labels.to(device),
            {name: mask.to(device) for name, mask in self.regions.items()},
            self.fields,
            self.skipped,
        )


class SampleSource(ABC):
    """A data set read lazily, shard by shard. ``location`` is the spec key it comes from
    (``("data", "npz")`` ...), for error messages."""

    location: Location = ("data",)

    @abstractmethod
    def __len__(self) -> int:
        """The number of samples (after ``data.limit``)."""

    @abstractmethod
    def read(self, indices: Sequence[int]) -> SampleBatch:
        """The samples at ``indices`` (ascending), checked."""

    def stream(self, shards: Sequence[range]) -> Iterator[SampleBatch]:
        """:meth:`read` of each shard in turn (a source may prefetch the next one meanwhile)."""
        for shard in shards:
            yield self.read(shard)
