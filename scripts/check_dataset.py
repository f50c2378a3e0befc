#!/usr/bin/env python
"""Scans a whole dataset and reports every problem with a count: missing or unreadable images and
labels, image/label size mismatches, label values that are neither a class nor 255, unusable splits,
and in a folder dataset files of unknown type, images without masks and masks without images.
Exit status 1 when there is any problem.

The dataset is chosen with Hydra overrides on conf/check_dataset.yaml, as in training:

    python scripts/check_dataset.py                                   # dataset=synthetic
    python scripts/check_dataset.py dataset=voc_aug dataset.root=data/voc
    python scripts/check_dataset.py dataset=cityscapes dataset.root=data/cityscapes 'splits=[val]'
    python scripts/check_dataset.py dataset=folder dataset.root=data/own
    python scripts/check_dataset.py dataset=ade20k dataset.root=data/ade20k
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from omegaconf import OmegaConf

from segdcn.config import CONF_DIR, compose
from segdcn.data.check import scan
from segdcn.data.errors import DatasetError
from segdcn.data.labels import label_set
from segdcn.data.parallel import default_workers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. dataset=voc_aug dataset.root=data/voc")
    parser.add_argument("--workers", type=int, default=default_workers(), help="processes (default: all cores)")
    parser.add_argument("--max-listed", type=int, default=20, help="files listed per kind of problem")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--config-dir", type=Path, default=CONF_DIR, help="Hydra config folder (default: conf/)")
    args = parser.parse_args(argv)

    cfg = compose("check_dataset", args.overrides, config_dir=args.config_dir)
    try:
        report = scan(cfg.dataset, list(OmegaConf.to_container(cfg.splits)), args.workers, not args.no_progress)
    except DatasetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(report.format(label_set(cfg.dataset.name, cfg.dataset.root).names, args.max_listed))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
