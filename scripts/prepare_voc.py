#!/usr/bin/env python
"""Builds PASCAL VOC 2012 + SBD "trainaug" for segdcn (dataset=voc_aug).

Converts SBD's cls/*.mat (GTcls.Segmentation) into VOC2012/SegmentationClassAug/*.png (VOC's own
SegmentationClass PNG where one exists) and writes ImageSets/Segmentation/trainaug.txt =
(VOC train + SBD train + SBD val) - VOC val: 10,582 images, and val 1,449, for the full data.
Run again, it only rewrites what changed.

    python scripts/prepare_voc.py --voc-root data/voc --sbd-root data/sbd --download
    python scripts/prepare_voc.py --voc-root data/voc --sbd-root data/sbd --workers 8

Layouts (torchvision's roots):
    VOC_ROOT/VOCdevkit/VOC2012/{JPEGImages,SegmentationClass,ImageSets/Segmentation}
    SBD_ROOT/{img,cls,train.txt,val.txt}      (benchmark_RELEASE/dataset of SBD's benchmark.tgz)
Then train with dataset=voc_aug dataset.root=VOC_ROOT.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import sys
from pathlib import Path

from segdcn.data.errors import DatasetError
from segdcn.data.parallel import default_workers, parallel_map
from segdcn.data.voc import VOC_BASE
from segdcn.data.voc_aug import count_warnings, plan_trainaug, run_mask_job, write_trainaug_list


def download(voc_root: Path, sbd_root: Path) -> None:
    """Fetches VOC 2012 trainval (2 GB) and SBD (1.4 GB) with torchvision's download code
    (URLs and MD5 sums are torchvision's), unless they are already there."""
    from torchvision.datasets import SBDataset, VOCSegmentation

    if (voc_root / VOC_BASE / "ImageSets" / "Segmentation" / "train.txt").is_file():
        print(f"VOC 2012 already in {voc_root}")
    else:
        voc_root.mkdir(parents=True, exist_ok=True)
        VOCSegmentation(str(voc_root), year="2012", image_set="train", download=True)
    if (sbd_root / "cls").is_dir() and (sbd_root / "train.txt").is_file():
        print(f"SBD already in {sbd_root}")
    else:
        sbd_root.mkdir(parents=True, exist_ok=True)
        # Extracts benchmark.tgz and moves benchmark_RELEASE/dataset/{cls,img,inst,train.txt,val.txt} to sbd_root.
        SBDataset(str(sbd_root), image_set="train", mode="segmentation", download=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--voc-root", type=Path, required=True, help="folder holding VOCdevkit/VOC2012")
    parser.add_argument("--sbd-root", type=Path, required=True, help="SBD's dataset folder (img/, cls/, train.txt)")
    parser.add_argument("--download", action="store_true", help="fetch VOC 2012 and SBD first (needs internet)")
    parser.add_argument("--workers", type=int, default=default_workers(), help="processes (default: all cores)")
    parser.add_argument("--force", action="store_true", help="rewrite masks that are up to date")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    try:
        if args.download:
            download(args.voc_root, args.sbd_root)
        plan = plan_trainaug(args.voc_root, args.sbd_root, force=args.force)
    except DatasetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    counts = plan.counts
    print(
        f"VOC 2012 train {counts['voc_train']:,}, val {counts['voc_val']:,}; "
        f"SBD train {counts['sbd_train']:,}, val {counts['sbd_val']:,}"
    )
    (plan.voc_base / "SegmentationClassAug").mkdir(exist_ok=True)
    for source, target in plan.image_copies:
        shutil.copyfile(source, target)
    try:
        outcomes = collections.Counter(
            parallel_map(run_mask_job, plan.jobs, args.workers, "SegmentationClassAug", not args.no_progress)
        )
    except DatasetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    trainaug_path = write_trainaug_list(plan)

    print(f"masks in {plan.voc_base / 'SegmentationClassAug'}: " + ", ".join(f"{n:,} {k}" for k, n in outcomes.items()))
    if plan.image_copies:
        print(f"images copied from SBD into JPEGImages: {len(plan.image_copies):,}")
    print(f"trainaug = (VOC train + SBD train + SBD val) - VOC val: {counts['trainaug']:,} images -> {trainaug_path}")
    print(f"val: {counts['val']:,} images")
    for warning in count_warnings(counts):
        print(f"WARNING: {warning}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
