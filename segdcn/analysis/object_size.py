"""Which ground-truth object lies under an activation, and how large it is: small, medium, large, background.

An object is a connected region (8-connectivity) of one class in the label map; its size is the
square root of its area in label pixels, relative to the shorter side of the label image, so the
same thresholds serve 64-112 px synthetic images and 500-px VOC images alike:

    small:  sqrt(area) <  0.1 x shorter side       (VOC at 375 px: below 37.5 px, about COCO's 32)
    medium: in between
    large:  sqrt(area) >= 0.3 x shorter side       (VOC at 375 px: from 112.5 px, about COCO's 96)
    background: the pixels of the background class(es), whatever their extent

Pixels labelled ignore (255) belong to no group. Two touching objects of one class form one region;
the label maps of semantic segmentation do not separate instances. The paper's Table 2 grouped by
the detection boxes of VOC 2007 instead, with its own thresholds, so the groups are alike, not equal.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

SIZE_GROUPS = ("small", "medium", "large", "background")
SMALL, MEDIUM, LARGE, BACKGROUND = range(4)
UNGROUPED = -1  # ignore pixels
EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class SizeThresholds:
    """sqrt(object area) as a fraction of the label image's shorter side: below `small` is small,
    from `large` on is large."""

    small: float = 0.1
    large: float = 0.3

    def __post_init__(self) -> None:
        if not 0 < self.small <= self.large:
            raise ValueError(
                f"size thresholds must satisfy 0 < small <= large, got small={self.small}, large={self.large}"
            )

    def describe(self) -> dict[str, str]:
        s, lg = self.small, self.large
        return {
            "small": f"sqrt(area) < {s:g} x shorter image side",
            "medium": f"{s:g} <= sqrt(area) / shorter side < {lg:g}",
            "large": f"sqrt(area) >= {lg:g} x shorter image side",
            "background": "background class pixels",
            "object": "a connected (8-neighbour) region of one class in the ground truth",
        }

    def group_of(self, area: float, shorter_side: int) -> int:
        relative = np.sqrt(area) / shorter_side
        if relative < self.small:
            return SMALL
        return MEDIUM if relative < self.large else LARGE


@dataclass
class ObjectRegion:
    class_id: int
    group: int
    area: int
    mask: np.ndarray  # bool [H, W]


def object_regions(
    label: np.ndarray, background_ids: tuple[int, ...], ignore_index: int, thresholds: SizeThresholds
) -> list[ObjectRegion]:
    """The objects (connected regions of one non-background class) of a label map, with their size group."""
    if label.ndim != 2:
        raise ValueError(f"label must be a [H, W] map of class indices, got shape {label.shape}")
    shorter = min(label.shape)
    regions = []
    for class_id in np.unique(label):
        if class_id == ignore_index or class_id in background_ids:
            continue
        components, count = ndimage.label(label == class_id, structure=EIGHT_CONNECTED)
        areas = np.bincount(components.ravel(), minlength=count + 1)
        for index in range(1, count + 1):
            area = int(areas[index])
            regions.append(ObjectRegion(int(class_id), thresholds.group_of(area, shorter), area, components == index))
    return regions


def size_group_map(
    label: np.ndarray, background_ids: tuple[int, ...], ignore_index: int, thresholds: SizeThresholds
) -> np.ndarray:
    """int8 [H, W]: SMALL/MEDIUM/LARGE for object pixels, BACKGROUND, UNGROUPED for ignore pixels."""
    groups = np.full(label.shape, UNGROUPED, dtype=np.int8)
    groups[np.isin(label, background_ids)] = BACKGROUND
    shorter = min(label.shape)
    for class_id in np.unique(label):
        if class_id == ignore_index or class_id in background_ids:
            continue
        components, count = ndimage.label(label == class_id, structure=EIGHT_CONNECTED)
        areas = np.bincount(components.ravel(), minlength=count + 1)
        lookup = np.array([UNGROUPED] + [thresholds.group_of(a, shorter) for a in areas[1:]], dtype=np.int8)
        inside = components > 0
        groups[inside] = lookup[components[inside]]
    return groups


def interior_point(mask: np.ndarray) -> tuple[int, int]:
    """(y, x) of the pixel of `mask` farthest from its outline (the image border counts as outline)."""
    distance = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(distance)), mask.shape)
    return int(y), int(x)


def representative_points(
    label: np.ndarray, background_ids: tuple[int, ...], ignore_index: int, thresholds: SizeThresholds
) -> dict[str, tuple[int, int, int]]:
    """group name -> (y, x, class_id): the most interior pixel of the largest object of each size group,
    and of the background; groups without an object are left out."""
    chosen: dict[str, tuple[int, int, int]] = {}
    regions = object_regions(label, background_ids, ignore_index, thresholds)
    for group in (SMALL, MEDIUM, LARGE):
        candidates = [r for r in regions if r.group == group]
        if candidates:
            region = max(candidates, key=lambda r: r.area)
            chosen[SIZE_GROUPS[group]] = (*interior_point(region.mask), region.class_id)
    background = np.isin(label, background_ids)
    if background.any():
        y, x = interior_point(background)
        chosen["background"] = (y, x, int(label[y, x]))
    return chosen


def labelled_points(
    label: np.ndarray,
    class_names: list[str] | tuple[str, ...],
    background_ids: tuple[int, ...],
    ignore_index: int,
    thresholds: SizeThresholds,
) -> list[tuple[str, tuple[int, int]]]:
    """(title "<group>: <class>", (y, x)) of representative_points, small to large, then background."""
    chosen = representative_points(label, background_ids, ignore_index, thresholds)
    return [(f"{group}: {class_names[c]}", (y, x)) for group, (y, x, c) in chosen.items()]
