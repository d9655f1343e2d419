"""Thumbnails of the HTML report (pytest_saliency.report.thumbnails)."""

from __future__ import annotations

from typing import Any

import torch

from pytest_saliency.loaders.source import SampleBatch
from pytest_saliency.report import thumbnails
from tests.unit.report.hand_made import decode


def test_example_strip_scales_small_images_up_three_times_with_four_panels() -> None:
    image = torch.zeros(3, 32, 32)
    image[0, 8:16, 8:16] = 1.0
    mask = torch.zeros(32, 32, dtype=torch.bool)
    mask[8:16, 8:16] = True
    saliency = mask.float()
    strip = decode(thumbnails.example_strip(image, saliency, mask, mask))
    assert strip.size == (4 * 96 + 3 * thumbnails.GAP, 96)
    # panel 1 is the image, nearest-upscaled x3: its red square covers pixels 24..47
    assert strip.getpixel((30, 30)) == (255, 0, 0)
    assert strip.getpixel((20, 20)) == (0, 0, 0)
    # panel 4 (the region): white inside, the ground-truth outline green at its edge
    fourth = 3 * (96 + thumbnails.GAP)
    assert strip.getpixel((fourth + 36, 36)) == (255, 255, 255)
    edge = strip.getpixel((fourth + 24, 36))
    assert edge[1] > 150 and edge[0] < 100, edge


def test_example_strip_handles_grey_images_masks_of_another_size_and_big_images() -> None:
    grey = torch.rand(1, 16, 16)
    strip = decode(
        thumbnails.example_strip(
            grey, torch.rand(16, 16), torch.ones(8, 8, dtype=torch.bool), torch.zeros(16, 16, dtype=torch.bool)
        )
    )
    assert strip.size == (4 * 96 + 3 * thumbnails.GAP, 96)  # 16 px: x6
    big = decode(
        thumbnails.example_strip(
            torch.rand(3, 200, 100), torch.rand(200, 100), torch.rand(200, 100) > 0.5, torch.rand(200, 100) > 0.5
        )
    )
    assert big.size[1] == 96  # scaled down to the panel size


def test_outline_is_the_boundary_of_the_mask() -> None:
    mask = torch.zeros(6, 6, dtype=torch.bool)
    mask[1:5, 1:5] = True
    edge = thumbnails.outline(mask)
    assert edge.sum() == 12  # the 4x4 square's ring
    assert not edge[2:4, 2:4].any()
    assert thumbnails.outline(mask, width=2).sum() == 16


def test_to_rgb_scales_values_outside_0_1_for_display() -> None:
    rgb = thumbnails.to_rgb(torch.tensor([[[-1.0, 1.0]]]).expand(3, 1, 2))
    assert rgb.shape == (1, 2, 3)
    assert rgb.min() == 0 and rgb.max() == 1


def test_segment_crop_cuts_the_segment_of_the_grid() -> None:
    image = torch.zeros(3, 16, 16)
    image[2, 8:16, 0:8] = 1.0  # segment (row 1, column 0) of an 8-px grid is blue
    crop = decode(thumbnails.segment_crop(image, 1, 0, 8))
    assert crop.size == (48, 48)
    assert crop.getcolors() == [(48 * 48, (0, 0, 255))]


def reader(images: torch.Tensor, masks: torch.Tensor, maps: torch.Tensor | None = None) -> thumbnails.ReadSamples:
    """What the engine gives ``attach``: the samples at ``indices`` read again, with maps."""
    asked: list[list[int]] = []

    def read(indices: list[int], with_maps: bool) -> tuple[SampleBatch, torch.Tensor | None, torch.Tensor | None]:
        asked.append(indices)
        chosen = torch.tensor(indices, dtype=torch.long)
        batch = SampleBatch(chosen, images[chosen], masks[chosen], torch.zeros(len(indices), dtype=torch.long))
        if maps is None or not with_maps:
            return batch, None, None
        return batch, maps[chosen], maps[chosen] > 0.5

    read.asked = asked  # type: ignore[attr-defined]  # what the test inspects
    return read


def test_attach_adds_thumbnails_to_worst_rows_and_crops_to_drift_clusters() -> None:
    images = torch.rand(4, 3, 16, 16)
    masks = torch.rand(4, 16, 16) > 0.5
    maps = torch.rand(4, 16, 16)
    extra: dict[str, Any] = {"worst": [{"index": 3}, {"index": 1}]}
    read = reader(images, masks, maps)
    thumbnails.attach(extra, read)
    assert read.asked == [[3, 1]]  # type: ignore[attr-defined]  # only the shown samples are read again
    assert all(decode(row["thumbnail"]).size == (390, 96) for row in extra["worst"])

    drift: dict[str, Any] = {
        "drift": {
            "settings": {"segments": {"patch": 8}},
            "clusters": [
                {"cluster": 0, "representatives": [[0, 3], [2, 0], [1, 1], [3, 2]]},
                {"cluster": 1, "representatives": []},
            ],
        }
    }
    thumbnails.attach(drift, reader(images, masks))
    clusters = drift["drift"]["clusters"]
    assert len(clusters[0]["crops"]) == thumbnails.CROPS_PER_CLUSTER
    assert "crops" not in clusters[1]


def test_attach_without_maps_leaves_the_worst_rows_without_thumbnails() -> None:
    """A check without an attribution method passes no maps: its rows get no strip."""
    extra: dict[str, Any] = {"worst": [{"index": 0}]}
    thumbnails.attach(extra, reader(torch.rand(1, 3, 8, 8), torch.zeros(1, 8, 8, dtype=torch.bool)))
    assert "thumbnail" not in extra["worst"][0]
