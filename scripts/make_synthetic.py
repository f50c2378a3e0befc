#!/usr/bin/env python
"""Writes the synthetic shapes set (the demo's data) in the VOC 2012 layout, for dataset=synthetic.

Five shape classes (ellipse, rectangle, triangle, star, cross) + background, told apart only by
their outline. By default: 64 px images, 1-3 one-colour objects of 8-56 px at any rotation on fine
textures (the demo's set). Harder options: stretch, warp, occluding strokes, textured objects,
smooth backgrounds (segdcn/data/synthetic.py says what each does and what was measured).
Every image is a function of (seed, split, index). Run again with the same options, it does nothing.

    python scripts/make_synthetic.py --out data/synthetic --seed 0
    python scripts/make_synthetic.py --out /tmp/syn --num-train 200 --num-val 50 --image-size 96
    python scripts/make_synthetic.py --out data/synthetic-hard --image-size 112 --max-extent 100 \
        --min-extent 6 --min-objects 2 --max-objects 5 --max-aspect 1.5 --warp 0.06 --max-occluders 2 \
        --no-flat --background any

Layout: OUT/VOCdevkit/VOC2012/{JPEGImages,SegmentationClass,ImageSets/Segmentation/{train,val}.txt}
and OUT/synthetic.json (parameters, per-class object-size statistics). Then train with
dataset=synthetic dataset.root=OUT.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from segdcn.data.parallel import default_workers
from segdcn.data.synthetic import BACKGROUNDS, METADATA, SyntheticConfig, format_histogram, generate


def main(argv: list[str] | None = None) -> int:
    defaults = SyntheticConfig()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="dataset root to write (holds VOCdevkit/)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="base seed (default %(default)s)")
    options = {
        "image_size": (int, "image side in pixels"),
        "num_train": (int, "training images"),
        "num_val": (int, "validation images"),
        "min_objects": (int, "fewest objects per image"),
        "max_objects": (int, "most objects per image"),
        "min_extent": (float, "smallest object diameter in pixels"),
        "max_extent": (float, "largest object diameter in pixels"),
        "max_aspect": (float, "largest stretch of an object"),
        "max_rotation": (float, "largest rotation of an object either way, in degrees"),
        "warp": (float, "non-rigid displacement, as a fraction of the object's diameter"),
        "max_occluders": (int, "most occluding strokes per image"),
        "min_visible": (float, "objects less visible than this fraction are labelled 255"),
        "jpeg_quality": (int, "JPEG quality"),
    }
    for name, (kind, help_text) in options.items():
        default = getattr(defaults, name)
        parser.add_argument(
            "--" + name.replace("_", "-"), type=kind, default=default, help=f"{help_text} (default {default})"
        )
    parser.add_argument(
        "--flat",
        action=argparse.BooleanOptionalAction,
        default=defaults.flat,
        help="one colour per object (--flat) or a texture like the background's (--no-flat, a harder set) "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--background",
        choices=sorted(BACKGROUNDS),
        default=defaults.background,
        help="textures of the background and the occluding strokes: fine (stripes, checks, speckle: a "
        "one-colour object stands out locally) or any (also blotches and gradients, which look flat up "
        "close) (default %(default)s)",
    )
    parser.add_argument("--workers", type=int, default=default_workers(), help="processes (default: all cores)")
    parser.add_argument("--force", action="store_true", help="rewrite even when an identical set is there")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    try:
        config = SyntheticConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(SyntheticConfig)})
    except ValueError as error:
        parser.error(str(error))
    start = time.perf_counter()
    metadata = generate(args.out, config, args.workers, progress=not args.no_progress, force=args.force)
    elapsed = time.perf_counter() - start
    if metadata.get("up_to_date"):
        print(f"{args.out} already holds this set (seed {config.seed}); --force rewrites it")
    else:
        print(
            f"wrote {config.num_train:,} train + {config.num_val:,} val images of {config.image_size} px "
            f"to {args.out} in {elapsed:.1f} s"
        )
    for split in ("train", "val"):
        stats = metadata["object_size"][split]
        print(
            f"\n{split}: object size (sqrt of area, px), {stats['all']['count']:,} objects, "
            f"max/min {stats['all']['max_over_min']}"
        )
        print(format_histogram(stats))
    print(f"\nparameters and statistics: {args.out / METADATA}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
