#!/usr/bin/env python
"""Fetches and checks ADE20K SceneParsing (ADEChallengeData2016) for segdcn (dataset=ade20k).

    python scripts/prepare_ade20k.py --root data/ade20k --download     # with internet
    python scripts/prepare_ade20k.py --root data/ade20k                # unpacked already: check it

--download fetches the official ADEChallengeData2016.zip (torchvision's download code), checks its SHA-1
and unpacks it into ROOT (into a temporary folder first, so an interrupted run leaves no partial
dataset), unless ROOT already holds it. Either way it then checks the layout: every image has its
annotation and the reverse, objectInfo150.csv names the 150 classes, and the splits have the release's
20,210 training and 2,000 validation images (a warning otherwise). Then train with
dataset=ade20k dataset.root=ROOT (experiment=ade20k_deeplab for the common DeepLab settings).

Layout (ROOT is where the zip is unpacked):
    ROOT/ADEChallengeData2016/{images,annotations}/{training,validation}/ADE_*_<8 digits>.{jpg,png}
    ROOT/ADEChallengeData2016/objectInfo150.csv
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import zipfile
from pathlib import Path

from segdcn.data.ade20k import ADE20K_SHA1, ADE20K_URL, PUBLISHED, count_warnings, release_counts, split_files
from segdcn.data.classes import ADE20K_BASE, ade20k_labels, object_info_path
from segdcn.data.errors import DatasetError, DatasetLayoutError


class DownloadError(DatasetError):
    """The download or its archive is not the release: the message names the file and what differs."""


def sha1_of(path: Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(url: str, archive: Path, sha1: str) -> None:
    """The zip at `archive`, downloaded unless a file with the right SHA-1 is already there."""
    from torchvision.datasets.utils import download_url

    if archive.is_file() and sha1_of(archive) == sha1:
        print(f"{archive} already downloaded")
        return
    archive.unlink(missing_ok=True)
    download_url(url, str(archive.parent), archive.name)
    found = sha1_of(archive)
    if found != sha1:
        raise DownloadError(
            f"{archive} (from {url}) has SHA-1 {found}, not the release's {sha1}: the download is truncated or "
            "not ADEChallengeData2016.zip; delete it and run again"
        )


def unpack(archive: Path, root: Path) -> None:
    """Extracts the zip's ADEChallengeData2016/ into ROOT, through a temporary folder renamed at the end."""
    partial = root / f".{ADE20K_BASE}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    with zipfile.ZipFile(archive) as bundle:
        names = [n for n in bundle.namelist() if n.startswith(f"{ADE20K_BASE}/")]  # not e.g. __MACOSX/
        unsafe = [n for n in names if ".." in Path(n).parts]
        if not names or unsafe:
            what = f"a path {unsafe[0]} that leaves ROOT" if unsafe else f"no {ADE20K_BASE}/ folder"
            raise DownloadError(f"{archive} holds {what}: it is not the ADE20K release")
        print(f"unpacking {len(names):,} files from {archive}")
        bundle.extractall(partial, members=names)
    (partial / ADE20K_BASE).rename(root / ADE20K_BASE)
    partial.rmdir()


def download(root: Path, url: str, sha1: str) -> None:
    if (root / ADE20K_BASE / "images").is_dir():
        print(f"{root / ADE20K_BASE} already there")
        return
    root.mkdir(parents=True, exist_ok=True)
    archive = root / "ADEChallengeData2016.zip"
    fetch(url, archive, sha1)
    unpack(archive, root)


def check(root: Path) -> dict[str, dict[str, int]]:
    """The counts of the unpacked release; DatasetLayoutError names what is missing."""
    for split in PUBLISHED:
        images, annotations = split_files(root, split)
        absent = [path for path in annotations if not path.is_file()]
        if absent:
            raise DatasetLayoutError(f"{len(absent):,} {split} images have no annotation, e.g. {absent[0]}")
        extra = sorted({p.stem for p in annotations[0].parent.glob("ADE_*.png")} - {p.stem for p in images})
        if extra:
            raise DatasetLayoutError(f"{len(extra):,} {split} annotations have no image, e.g. {extra[0]}.png")
    ade20k_labels(root)  # the release's objectInfo150.csv, when there, must hold Idx 1..150 with names
    return release_counts(root)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--root", type=Path, required=True, help="folder that holds (or will hold) ADEChallengeData2016"
    )
    parser.add_argument("--download", action="store_true", help="fetch and unpack the release first (needs internet)")
    parser.add_argument("--url", default=ADE20K_URL, help="where to fetch the zip (default: the official release)")
    parser.add_argument("--sha1", default=ADE20K_SHA1, help="the zip's SHA-1 (default: the official release's)")
    args = parser.parse_args(argv)
    root = args.root.expanduser()

    try:
        if args.download:
            download(root, args.url, args.sha1)
        counts = check(root)
    except DatasetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for split, found in counts.items():
        print(f"{split}: {found['images']:,} images with annotations (the release: {PUBLISHED[split]:,})")
    table = object_info_path(root)
    print(f"150 classes named by {table if table.is_file() else 'segdcn/data/ade20k150.csv (no ' + table.name + ')'}")
    for warning in count_warnings(counts):
        print(f"WARNING: {warning}", file=sys.stderr)
    print(f"train with: segdcn-train dataset=ade20k dataset.root={root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
