"""The synthetic shapes set: the demo's data, written in the VOC 2012 layout.

Each image shows 1-3 objects of five shape classes (ellipse, rectangle, triangle, star, cross) on a
textured background. What makes a pixel one class or another is only the outline of the object it
belongs to:

- Colour carries no class information: every object's colour, and the background's textures and
  colours, come from distributions shared by all classes.
- Figure and ground differ locally (by default): objects are one colour (`flat`) and the background
  is a fine texture (`background="fine"`: stripes, checks, speckle), so finding the objects is easy
  and the network's effort goes into their shapes.
- Scale varies 7x: an object's extent (its diameter) is log-uniform between `min_extent` (8 px) and
  `max_extent` (56 px of a 64 px image). A pixel inside a large object sees only its colour in a
  small window; its class shows at the outline, up to 28 px away. A small object is a few pixels
  wide, next to background that a large window would mix in.
- Objects are rotated by any angle (`max_rotation`) and may overlap; smaller ones lie on top.

So a network with one fixed receptive field is either too small for the large objects or too large
for the small ones, and a layer that adapts where it samples to the object's size and shape (the
deformable convolution's thesis) has something to gain.

Harder variants, off by default because they slow a small network from scratch further (README,
"The synthetic shapes set", has the measurements): `max_aspect` (stretch), `warp` (a smooth
non-rigid displacement), `max_occluders` (background strokes across the objects), `flat=False`
(objects textured like the background) and `background="any"` (also blotches and gradients, which
look flat up close). With textured objects on any background, finding an object at all needs its
whole outline: even a plain CNN stayed at the all-background prior for 700 steps.

Labels: 0 background, 1-5 shapes, 255 for the pixels of an object of which less than `min_visible`
(30 %) of its area, or fewer than 4 pixels, is visible; it cannot be told apart by its shape.
Every image is a function of (seed, split, index), so the set is generated in parallel and
reproduced exactly. `synthetic.json` beside the data records the parameters and the object sizes.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from segdcn.data.io import write_label
from segdcn.data.labels import SYNTHETIC, SYNTHETIC_CLASSES, flat_palette
from segdcn.data.parallel import parallel_map
from segdcn.data.voc import SPLITS_DIR, VOC_BASE

SHAPES = SYNTHETIC_CLASSES[1:]
SPLITS = ("train", "val")
SIZE_BINS = (2, 4, 8, 16, 32, 64, 128, 256)  # edges of the object-size histogram, in pixels
METADATA = "synthetic.json"
FORMAT_VERSION = 2  # 2: background styles, contrast of fine textures


@dataclass(frozen=True)
class SyntheticConfig:
    # The defaults are the demo's set: shape and scale vary, figure and ground differ locally, so a
    # small network from scratch finds the objects within minutes and starts on their shapes after
    # about 750 steps (experiment=demo). The harder options (stretch, warp, occluders, textured objects, smooth
    # backgrounds) are off by default.
    image_size: int = 64
    num_train: int = 2000
    num_val: int = 300
    min_objects: int = 1
    max_objects: int = 3
    min_extent: float = 8.0  # px: an object's diameter before deformation, log-uniform in [min, max]
    max_extent: float = 56.0
    max_aspect: float = 1.0  # objects are stretched by up to this ratio
    max_rotation: float = 180.0  # degrees: objects are rotated by up to this much either way
    warp: float = 0.0  # amplitude of the smooth non-rigid displacement, as a fraction of the extent
    max_occluders: int = 0  # background strokes drawn over the objects
    min_visible: float = 0.3  # objects less visible than this are labelled ignore
    jpeg_quality: int = 92
    flat: bool = True  # one colour per object instead of a texture like the background's
    background: str = "fine"  # textures of the background and the strokes: "fine" (see FINE_TEXTURES) or "any"
    seed: int = 0

    def __post_init__(self) -> None:
        checks = {
            "image_size": self.image_size >= 16,
            "num_train": self.num_train >= 0,
            "num_val": self.num_val >= 0,
            "min_objects": 0 <= self.min_objects <= self.max_objects,
            "min_extent": 2 <= self.min_extent <= self.max_extent,
            "max_extent": self.max_extent <= 1.5 * self.image_size,
            "max_aspect": self.max_aspect >= 1,
            "max_rotation": 0 <= self.max_rotation <= 180,
            "warp": 0 <= self.warp <= 0.25,
            "min_visible": 0 <= self.min_visible <= 1,
            "jpeg_quality": 1 <= self.jpeg_quality <= 100,
            "background": self.background in BACKGROUNDS,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"synthetic config: bad value for {', '.join(bad)} in {self}")

    def count(self, split: str) -> int:
        return {"train": self.num_train, "val": self.num_val}[split]


def image_id(split: str, index: int) -> str:
    return f"{split}_{index:05d}"


# --- shapes ---------------------------------------------------------------------------------------


def _resample(polygon: np.ndarray, points: int) -> np.ndarray:
    """`points` vertices evenly spaced along the closed polygon, so a warp bends straight edges."""
    closed = np.vstack([polygon, polygon[:1]])
    lengths = np.linalg.norm(np.diff(closed, axis=0), axis=1)
    cumulative = np.concatenate([[0.0], np.cumsum(lengths)])
    positions = np.linspace(0.0, cumulative[-1], points, endpoint=False)
    return np.stack([np.interp(positions, cumulative, closed[:, i]) for i in range(2)], axis=1)


def _regular(radii: list[float], start: float = math.pi / 2) -> np.ndarray:
    angles = start + 2 * math.pi * np.arange(len(radii)) / len(radii)
    return np.stack([np.cos(angles) * radii, np.sin(angles) * radii], axis=1)


def unit_outline(shape: str, points: int = 128) -> np.ndarray:
    """The outline of a shape class, inscribed in the unit circle, as [points, 2] (x, y)."""
    if shape == "ellipse":
        return _regular([1.0] * points)
    if shape == "rectangle":
        polygon = _regular([1.0] * 4, start=math.pi / 4)
    elif shape == "triangle":
        polygon = _regular([1.0] * 3)
    elif shape == "star":
        polygon = _regular([1.0, 0.42] * 5)
    elif shape == "cross":
        w = 0.3  # half-width of an arm
        polygon = np.array(
            [
                (w, 1),
                (w, w),
                (1, w),
                (1, -w),
                (w, -w),
                (w, -1),
                (-w, -1),
                (-w, -w),
                (-1, -w),
                (-1, w),
                (-w, w),
                (-w, 1),
            ],
            dtype=float,
        ) / math.hypot(1, w)
    else:
        raise KeyError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")
    return _resample(polygon, points)


def place_outline(rng: np.random.Generator, shape: str, extent: float, config: SyntheticConfig) -> np.ndarray:
    """The outline stretched, rotated, non-rigidly warped, centred at a random position."""
    outline = unit_outline(shape)
    radius = extent / 2
    aspect = math.exp(rng.uniform(-math.log(config.max_aspect), math.log(config.max_aspect)))
    outline = outline * np.array([radius * math.sqrt(aspect), radius / math.sqrt(aspect)])
    angle = math.radians(rng.uniform(-config.max_rotation, config.max_rotation))
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    outline = outline @ rotation.T
    # Smooth displacement field: three plane waves of 0.4-1.2 cycles per extent, random directions.
    displacement = np.zeros_like(outline)
    for _ in range(3):
        direction = rng.normal(size=2)
        frequency = rng.uniform(0.4, 1.2) / extent
        phase = rng.uniform(0, 2 * math.pi)
        wave = np.sin(2 * math.pi * frequency * (outline @ direction) / np.linalg.norm(direction) + phase)
        displacement += np.outer(wave, rng.normal(size=2))
    outline = outline + displacement * (config.warp * extent / math.sqrt(3))
    # The centre lies at least 0.6 radius from each border: at most 40 % of the radius sticks out.
    size = config.image_size
    margin = min(0.6 * radius, size / 2)
    centre = rng.uniform(margin, size - margin, size=2)
    return outline + centre


def _box(points: np.ndarray, size: int, pad: float = 1.0) -> tuple[int, int, int, int]:
    """The pixel box [y0, y1) x [x0, x1) around `points` (x, y), padded and clipped to the image."""
    x0, y0 = np.floor(points.min(axis=0) - pad).astype(int)
    x1, y1 = np.ceil(points.max(axis=0) + pad).astype(int) + 1
    return max(y0, 0), min(y1, size), max(x0, 0), min(x1, size)


def fill_polygon(outline: np.ndarray, shape: tuple[int, int], antialiased: bool = False) -> np.ndarray:
    """uint8 canvas of `shape`: 1 inside the polygon (0-255 coverage when antialiased)."""
    canvas = np.zeros(shape, np.uint8)
    points = np.round(outline * 16).astype(np.int32)  # 4 fractional bits
    if antialiased:
        cv2.fillPoly(canvas, [points], 255, lineType=cv2.LINE_AA, shift=4)
    else:
        cv2.fillPoly(canvas, [points], 1, lineType=cv2.LINE_8, shift=4)
    return canvas


# --- textures -------------------------------------------------------------------------------------

TEXTURES = ("stripes", "checks", "blotches", "speckle", "gradient")
# Patterns that change within a few pixels everywhere, so that a one-colour object stands out from
# them locally; blotches and gradients look flat up close.
FINE_TEXTURES = ("stripes", "checks", "speckle")
FINE_CONTRAST = 80.0  # least distance of a fine texture's two colours (RGB, 0-255), so its pattern shows
# SyntheticConfig.background -> (texture kinds, least colour distance) of the background and the strokes
BACKGROUNDS = {"fine": (FINE_TEXTURES, FINE_CONTRAST), "any": (TEXTURES, 0.0)}


def texture(
    rng: np.random.Generator,
    height: int,
    width: int,
    flat: bool = False,
    kinds: tuple[str, ...] = TEXTURES,
    min_contrast: float = 0.0,
) -> np.ndarray:
    """float32 [height, width, 3] in about 0..255: two random colours (at least `min_contrast` apart)
    mixed by a random pattern of `kinds` (its phase is random, so a patch is as good as a crop of a
    larger texture); one colour if flat."""
    if flat:
        return np.broadcast_to(rng.uniform(0, 255, size=3).astype(np.float32), (height, width, 3)).copy()
    kind = kinds[rng.integers(len(kinds))]
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, math.pi)
    u = x * math.cos(angle) + y * math.sin(angle) + rng.uniform(0, 64)
    if kind == "stripes":
        period = rng.uniform(3, 14)
        weight = 0.5 + 0.5 * np.tanh(3 * np.sin(2 * math.pi * u / period))
    elif kind == "checks":
        period = rng.uniform(3, 12)
        v = -x * math.sin(angle) + y * math.cos(angle) + rng.uniform(0, 64)
        weight = ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float32)
    elif kind == "blotches":
        noise = rng.normal(size=(height, width)).astype(np.float32)
        noise = cv2.GaussianBlur(noise, (0, 0), rng.uniform(1.5, 5))
        weight = 0.5 + 0.5 * np.tanh(noise / (noise.std() + 1e-6))
    elif kind == "speckle":
        weight = cv2.GaussianBlur(rng.random((height, width), dtype=np.float32), (0, 0), 0.7)
        weight = (weight - weight.min()) / (np.ptp(weight) + 1e-6)
    else:  # gradient over a random length of 30-150 px
        weight = np.clip(np.abs(np.sin(u / rng.uniform(30, 150) * math.pi / 2)), 0, 1)
    colours = rng.uniform(0, 255, size=(2, 3)).astype(np.float32)
    for _ in range(20):
        if np.linalg.norm(colours[1] - colours[0]) >= min_contrast:
            break
        colours[1] = rng.uniform(0, 255, size=3)
    return colours[0] + (colours[1] - colours[0]) * weight[..., None]


def distinct_texture(
    rng: np.random.Generator, behind: np.ndarray, min_distance: float = 50.0, flat: bool = False
) -> np.ndarray:
    """A texture the size of `behind` whose mean colour differs from it: objects stand out as regions
    (though not by class)."""
    height, width = behind.shape[:2]
    reference = behind.reshape(-1, 3).mean(axis=0)
    candidate = texture(rng, height, width, flat)
    for _ in range(20):
        if np.linalg.norm(candidate.reshape(-1, 3).mean(axis=0) - reference) >= min_distance:
            break
        candidate = texture(rng, height, width, flat)
    return candidate


def scenery_texture(rng: np.random.Generator, height: int, width: int, style: str) -> np.ndarray:
    """A texture of the background or of an occluding stroke, of the `style` of SyntheticConfig.background."""
    kinds, min_contrast = BACKGROUNDS[style]
    return texture(rng, height, width, kinds=kinds, min_contrast=min_contrast)


def background(rng: np.random.Generator, size: int, style: str) -> np.ndarray:
    """A texture, and half the time a second one over irregular regions with smooth borders."""
    image = scenery_texture(rng, size, size, style)
    if rng.random() < 0.5:
        # Coarse noise thresholded at a random level: irregular blobs, not shapes.
        field = cv2.resize(rng.normal(size=(4, 4)).astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
        threshold = np.quantile(field, rng.uniform(0.3, 0.7))
        region = cv2.GaussianBlur((field > threshold).astype(np.float32), (0, 0), 0.8)[..., None]
        image = image * (1 - region) + scenery_texture(rng, size, size, style) * region
    return image


def stroke(rng: np.random.Generator, size: int) -> np.ndarray:
    """A thick smooth curve (quadratic Bezier) across the image, as (x, y) points."""
    ends = rng.uniform(-0.1 * size, 1.1 * size, size=(3, 2))
    t = np.linspace(0, 1, 48)[:, None]
    return (1 - t) ** 2 * ends[0] + 2 * t * (1 - t) * ends[1] + t**2 * ends[2]


# --- one image ------------------------------------------------------------------------------------


def render(config: SyntheticConfig, split: str, index: int) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Image (uint8 [S, S, 3]), label (uint8 [S, S]) and object records of one item."""
    rng = np.random.default_rng([config.seed, SPLITS.index(split), index])
    size = config.image_size
    image = background(rng, size, config.background)
    owner = np.full((size, size), -1, np.int16)  # which object each pixel shows, -1 = background
    count = int(rng.integers(config.min_objects, config.max_objects + 1))
    log_min, log_max = math.log(config.min_extent), math.log(config.max_extent)
    objects = [
        {"class": SHAPES[rng.integers(len(SHAPES))], "extent": math.exp(rng.uniform(log_min, log_max))}
        for _ in range(count)
    ]
    objects.sort(key=lambda obj: -obj["extent"])  # large first: small objects lie on top of large ones
    for number, obj in enumerate(objects):
        outline = place_outline(rng, obj["class"], obj["extent"], config)
        y0, y1, x0, x1 = _box(outline, size)
        local = outline - (x0, y0)
        inside = fill_polygon(local, (y1 - y0, x1 - x0)).astype(bool)
        alpha = fill_polygon(local, (y1 - y0, x1 - x0), antialiased=True)[..., None].astype(np.float32) / 255
        patch = image[y0:y1, x0:x1]
        image[y0:y1, x0:x1] = patch * (1 - alpha) + distinct_texture(rng, patch, flat=config.flat) * alpha
        owner[y0:y1, x0:x1][inside] = number
        obj["area"] = int(inside.sum())
    for _ in range(int(rng.integers(0, config.max_occluders + 1))):
        curve = stroke(rng, size)
        thickness = int(rng.integers(2, max(3, size // 16)))
        y0, y1, x0, x1 = _box(curve, size, pad=thickness)
        if y1 <= y0 or x1 <= x0:
            continue
        canvas = np.zeros((y1 - y0, x1 - x0), np.uint8)
        points = np.round((curve - (x0, y0)) * 16).astype(np.int32)
        cv2.polylines(canvas, [points], False, 255, thickness, cv2.LINE_AA, shift=4)
        coverage = canvas.astype(np.float32)[..., None] / 255
        patch = image[y0:y1, x0:x1]
        image[y0:y1, x0:x1] = (
            patch * (1 - coverage) + scenery_texture(rng, y1 - y0, x1 - x0, config.background) * coverage
        )
        owner[y0:y1, x0:x1][canvas > 127] = -1  # the stroke occludes: those pixels are background
    # Mild illumination gradient and noise over the whole image.
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    image *= (1 + rng.uniform(-0.15, 0.15) * (x - 0.5) + rng.uniform(-0.15, 0.15) * (y - 0.5))[..., None]
    image += rng.standard_normal(image.shape, dtype=np.float32) * 5  # sensor noise

    label = np.zeros((size, size), np.uint8)
    for number, obj in enumerate(objects):
        shown = owner == number
        obj["visible"] = int(shown.sum())
        obj["ignored"] = bool(obj["visible"] < max(4, config.min_visible * obj["area"]))
        label[shown] = SYNTHETIC_CLASSES.index(obj["class"]) if not obj["ignored"] else SYNTHETIC.ignore_index
        obj["size"] = math.sqrt(obj["area"])  # sqrt of the object's whole area inside the image
    return np.clip(image, 0, 255).astype(np.uint8), label, objects


@functools.cache
def _palette() -> list[int]:
    return flat_palette(SYNTHETIC.colors)


def _write_item(job: tuple[SyntheticConfig, Path, str, int]) -> list[dict]:
    config, base, split, index = job
    image, label, objects = render(config, split, index)
    name = image_id(split, index)
    Image.fromarray(image).save(base / "JPEGImages" / f"{name}.jpg", quality=config.jpeg_quality)
    write_label(base / "SegmentationClass" / f"{name}.png", label, _palette())
    return objects


# --- the data set ---------------------------------------------------------------------------------


def size_statistics(records: list[dict]) -> dict:
    """Per class: how many objects, their size (sqrt of area, px) quantiles and histogram."""
    per_class = {}
    for shape in SHAPES:
        sizes = np.array([r["size"] for r in records if r["class"] == shape and r["area"] > 0])
        if sizes.size == 0:
            per_class[shape] = {"count": 0}
            continue
        histogram, _ = np.histogram(sizes, bins=SIZE_BINS)
        per_class[shape] = {
            "count": int(sizes.size),
            "ignored": sum(1 for r in records if r["class"] == shape and r["ignored"]),
            "min": round(float(sizes.min()), 2),
            "median": round(float(np.median(sizes)), 2),
            "max": round(float(sizes.max()), 2),
            "histogram": [int(n) for n in histogram],
        }
    sizes = [r["size"] for r in records if r["area"] > 0]
    return {
        "definition": "size = sqrt(area in pixels of the whole object inside the image, occluded parts included)",
        "bins_px": list(SIZE_BINS),
        "per_class": per_class,
        "all": {
            "count": len(sizes),
            "min": round(min(sizes), 2) if sizes else None,
            "max": round(max(sizes), 2) if sizes else None,
            "max_over_min": round(max(sizes) / min(sizes), 1) if sizes else None,
        },
    }


def generate(
    out: str | Path, config: SyntheticConfig, workers: int | None = None, progress: bool = True, force: bool = False
) -> dict:
    """Writes the set under `out` in the VOC layout and returns the metadata (also in synthetic.json).
    When `out` already holds a complete set made with the same config, nothing is rewritten."""
    out = Path(out)
    base = out / VOC_BASE
    meta_path = out / METADATA
    config_dict = dataclasses.asdict(config)
    if not force and meta_path.is_file():
        existing = json.loads(meta_path.read_text())
        if existing.get("config") == config_dict and existing.get("format_version") == FORMAT_VERSION:
            ids = [image_id(s, i) for s in SPLITS for i in range(config.count(s))]
            if all((base / "SegmentationClass" / f"{i}.png").is_file() for i in ids):
                existing["up_to_date"] = True
                return existing
    for folder in ("JPEGImages", "SegmentationClass", SPLITS_DIR):
        (base / folder).mkdir(parents=True, exist_ok=True)
    meta_path.unlink(missing_ok=True)  # written last: its presence marks a complete set
    jobs = [(config, base, split, index) for split in SPLITS for index in range(config.count(split))]
    records: dict[str, list[dict]] = {split: [] for split in SPLITS}
    written = parallel_map(_write_item, jobs, workers, "synthetic", progress)
    for (_, _, split, index), objects in zip(jobs, written, strict=True):
        records[split] += [{**obj, "image": image_id(split, index)} for obj in objects]
    for split in SPLITS:
        ids = [image_id(split, i) for i in range(config.count(split))]
        (base / SPLITS_DIR / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    metadata = {
        "generator": "segdcn.data.synthetic",
        "format_version": FORMAT_VERSION,
        "config": config_dict,
        "classes": list(SYNTHETIC_CLASSES),
        "ignore_index": SYNTHETIC.ignore_index,
        "splits": {split: config.count(split) for split in SPLITS},
        "object_size": {split: size_statistics(records[split]) for split in SPLITS},
    }
    meta_path.write_text(json.dumps(metadata, indent=1))
    return metadata


def format_histogram(stats: dict) -> str:
    """A text table of the per-class size histogram in `stats` (one split's object_size)."""
    edges = stats["bins_px"]
    header = (
        "class      "
        + " ".join(f"{f'{a}-{b}':>8}" for a, b in zip(edges[:-1], edges[1:], strict=True))
        + "   count  min  median  max"
    )
    lines = [header]
    for shape, entry in stats["per_class"].items():
        if not entry["count"]:
            lines.append(f"{shape:<10} (none)")
            continue
        bars = " ".join(f"{n:>8}" for n in entry["histogram"])
        lines.append(
            f"{shape:<10} {bars}   {entry['count']:>5} {entry['min']:>4.0f} "
            f"{entry['median']:>7.1f} {entry['max']:>4.0f}"
        )
    return "\n".join(lines)
