"""The synthetic shapes set: deterministic per seed, the promised scale range, read by the VOC reader."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.ndimage
from omegaconf import OmegaConf
from PIL import Image

from segdcn.data.builder import build_dataset
from segdcn.data.labels import SYNTHETIC_CLASSES
from segdcn.data.synthetic import METADATA, SyntheticConfig, generate, place_outline, render

SMALL = SyntheticConfig(image_size=96, num_train=12, num_val=4, max_extent=86, seed=3)


def files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    generate(root, SMALL, workers=2, progress=False)
    return root


def test_deterministic_for_a_seed(small_set, tmp_path):
    generate(tmp_path / "again", SMALL, workers=1, progress=False)  # another process layout, same bytes
    assert files(tmp_path / "again") == files(small_set)
    other = SyntheticConfig(**{**SMALL.__dict__, "seed": 4, "num_train": 2, "num_val": 0})
    image_a, label_a, _ = render(SMALL, "train", 0)
    image_b, label_b, _ = render(other, "train", 0)
    assert not np.array_equal(image_a, image_b) and not np.array_equal(label_a, label_b)
    # an item depends on (seed, split, index) only
    np.testing.assert_array_equal(render(SMALL, "val", 1)[1], render(SMALL, "val", 1)[1])
    assert not np.array_equal(render(SMALL, "val", 1)[0], render(SMALL, "train", 1)[0])


def test_regenerating_is_skipped_when_up_to_date(small_set):
    before = {p: p.stat().st_mtime_ns for p in small_set.rglob("*.png")}
    assert generate(small_set, SMALL, workers=1, progress=False).get("up_to_date")
    assert {p: p.stat().st_mtime_ns for p in small_set.rglob("*.png")} == before


def test_objects_cover_a_tenfold_scale_range(tmp_path):
    """One unoccluded object per image, so each label component is a whole object: the object sizes
    measured on the written labels span more than 10x, from a few pixels to most of the image."""
    config = SyntheticConfig(
        image_size=96, num_train=60, num_val=0, min_objects=1, max_objects=1, min_extent=6, max_extent=86, seed=0
    )
    metadata = generate(tmp_path, config, workers=2, progress=False)
    sizes = []
    for index in range(config.num_train):
        label = np.asarray(Image.open(tmp_path / "VOCdevkit/VOC2012/SegmentationClass" / f"train_{index:05d}.png"))
        objects = label != 0
        components, count = scipy.ndimage.label(objects)
        if count:
            sizes.append(math.sqrt(np.bincount(components.ravel())[1:].max()))
    sizes = np.array(sizes)
    assert sizes.max() / sizes.min() >= 10
    assert sizes.min() <= 8 and sizes.max() >= 0.5 * config.image_size
    recorded = metadata["object_size"]["train"]
    assert recorded["all"]["max_over_min"] >= 10
    assert sum(sum(entry["histogram"]) for entry in recorded["per_class"].values()) == recorded["all"]["count"]
    assert json.loads((tmp_path / METADATA).read_text())["config"]["seed"] == 0


def test_every_class_is_drawn_and_labels_are_valid(small_set):
    seen = set()
    for path in (small_set / "VOCdevkit/VOC2012/SegmentationClass").glob("*.png"):
        image = Image.open(path)
        assert image.mode == "P"
        seen |= set(np.unique(np.asarray(image)).tolist())
    assert seen <= set(range(len(SYNTHETIC_CLASSES))) | {255}
    assert set(range(len(SYNTHETIC_CLASSES))) <= seen


def test_voc_reader_loads_it_unchanged(small_set):
    cfg = OmegaConf.load("conf/dataset/synthetic.yaml")
    cfg.root = str(small_set)
    train = build_dataset(cfg, "train")
    val = build_dataset(cfg, "val", transforms=None)
    assert (len(train), len(val)) == (SMALL.num_train, SMALL.num_val)
    image, label = train[0]
    assert image.shape == (3, *cfg.train.crop_size) and label.dtype.is_floating_point is False
    raw_image, raw_label = val[0]
    assert raw_image.shape == (3, SMALL.image_size, SMALL.image_size)
    _, expected_label, _ = render(SMALL, "val", 0)
    np.testing.assert_array_equal(raw_label.numpy(), expected_label)


def test_bad_config_values_are_named():
    with pytest.raises(ValueError, match="min_extent"):
        SyntheticConfig(min_extent=50, max_extent=20)


def object_colour_spreads(config: SyntheticConfig, items: int) -> list[float]:
    """Per object (eroded away from its outline), the largest per-channel std of its pixels."""
    spreads = []
    for index in range(items):
        image, label, _ = render(config, "train", index)
        for class_index in range(1, len(SYNTHETIC_CLASSES)):
            parts, count = scipy.ndimage.label(scipy.ndimage.binary_erosion(label == class_index, iterations=2))
            for part in range(1, count + 1):
                inside = parts == part
                if inside.sum() >= 30:
                    spreads.append(float(image[inside].astype(np.float64).std(axis=0).max()))
    return spreads


def test_flat_objects_are_one_colour_and_textured_ones_are_not():
    base = dict(image_size=96, num_train=30, num_val=0, min_extent=20, max_extent=86, max_occluders=0, seed=3)
    flat = object_colour_spreads(SyntheticConfig(**base, flat=True), 30)
    textured = object_colour_spreads(SyntheticConfig(**base, flat=False), 30)
    assert len(flat) >= 30 and len(textured) >= 30
    # flat: only the sensor noise (std 5) and the mild illumination gradient remain
    assert np.percentile(flat, 90) < 10, np.percentile(flat, 90)
    assert np.median(textured) > 20, np.median(textured)


def flat_looking_fraction(config: SyntheticConfig, items: int, window: int = 9) -> float:
    """The fraction of pixels whose window x window neighbourhood varies by less than 12 grey levels
    (std, largest over the channels): where a one-colour object would not stand out."""
    fractions = []
    for index in range(items):
        image = render(config, "train", index)[0].astype(np.float64)
        mean = scipy.ndimage.uniform_filter(image, size=(window, window, 1))
        variance = scipy.ndimage.uniform_filter(image**2, size=(window, window, 1)) - mean**2
        fractions.append(float((np.sqrt(np.clip(variance, 0, None)).max(axis=2) < 12).mean()))
    return float(np.mean(fractions))


def test_fine_backgrounds_vary_everywhere_and_any_backgrounds_do_not():
    base = dict(image_size=64, max_extent=56, min_objects=0, max_objects=0, max_occluders=0, seed=5)
    fine = flat_looking_fraction(SyntheticConfig(**base, background="fine"), 30)
    anything = flat_looking_fraction(SyntheticConfig(**base, background="any"), 30)
    assert fine < 0.02, fine
    assert anything > 0.07, anything
    with pytest.raises(ValueError, match="background"):
        SyntheticConfig(background="smooth")


def rotations(config: SyntheticConfig, draws: int) -> np.ndarray:
    """Degrees by which place_outline turned an unstretched, unwarped triangle: its first outline point
    is the apex, which points along +y before the rotation."""
    rng = np.random.default_rng(0)
    angles = []
    for _ in range(draws):
        outline = place_outline(rng, "triangle", 40.0, config)
        apex = outline[0] - outline.mean(axis=0)  # evenly spaced points: their mean is the centre
        angles.append(math.degrees(math.atan2(apex[1], apex[0])) - 90.0)
    return (np.array(angles) + 180.0) % 360.0 - 180.0


def test_rotation_stays_within_max_rotation():
    base = dict(image_size=64, max_extent=56, max_aspect=1.0, warp=0.0)
    bounded = rotations(SyntheticConfig(**base, max_rotation=30), 300)
    assert np.abs(bounded).max() <= 30 + 1e-6 and np.abs(bounded).max() > 27
    full = rotations(SyntheticConfig(**base, max_rotation=180), 300)
    assert np.abs(full).max() > 170 and (np.abs(full) > 30).mean() > 0.7
    np.testing.assert_allclose(rotations(SyntheticConfig(**base, max_rotation=0), 5), 0, atol=1e-6)
