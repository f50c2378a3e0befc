#!/usr/bin/env python
"""Writes Cityscapes' *_gtFine_labelTrainIds.png from the polygon files, for dataset=cityscapes.

Each gtFine/<split>/<city>/*_gtFine_polygons.json is drawn by cityscapesscripts' json2labelImg
with the trainId encoding (19 classes, 255 = ignore), in parallel. Up-to-date files are kept.

    python scripts/prepare_cityscapes.py --root data/cityscapes
    python scripts/prepare_cityscapes.py --root data/cityscapes --splits train val --workers 8

Layout: ROOT/leftImg8bit/<split>/<city>/*_leftImg8bit.png and ROOT/gtFine/<split>/<city>/*_polygons.json,
from leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip (cityscapes-dataset.com, login needed;
cityscapesscripts' csDownload can fetch them). Then train with dataset=cityscapes dataset.root=ROOT.
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

from segdcn.data.cityscapes import TrainIdJob, polygon_files, run_train_id_job
from segdcn.data.errors import DatasetError
from segdcn.data.parallel import default_workers, parallel_map


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, required=True, help="folder holding leftImg8bit/ and gtFine/")
    parser.add_argument("--splits", nargs="+", default=None, help="splits to convert (default: every gtFine split)")
    parser.add_argument("--workers", type=int, default=default_workers(), help="processes (default: all cores)")
    parser.add_argument("--force", action="store_true", help="rewrite label images that are up to date")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    try:
        jobs = [TrainIdJob(path, args.force) for path in polygon_files(args.root, args.splits)]
        outcomes = collections.Counter(
            parallel_map(run_train_id_job, jobs, args.workers, "labelTrainIds", not args.no_progress)
        )
    except DatasetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    per_split = collections.Counter(job.polygons.parent.parent.name for job in jobs)
    print(
        f"labelTrainIds in {args.root / 'gtFine'}: "
        + ", ".join(f"{n:,} {k}" for k, n in outcomes.items())
        + " ("
        + ", ".join(f"{split} {n:,}" for split, n in sorted(per_split.items()))
        + ")"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
