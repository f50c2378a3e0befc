#!/usr/bin/env python
"""Images per second of the training data pipeline: read + augment + collate through a DataLoader.

Without --root it times a fresh synthetic set (written to a temporary folder); with --root, the
dataset there, configured by conf/dataset/<--dataset>.yaml. It also times, in the main process,
reading alone and reading + augmenting, to show where the time goes.

    python scripts/bench_data.py                                  # synthetic, 2 workers
    python scripts/bench_data.py --workers 0,1,2 --batches 50
    python scripts/bench_data.py --dataset voc_aug --root data/voc --batch-size 8
    python scripts/bench_data.py --dataset folder --root data/own             # your own images and masks
    python scripts/bench_data.py --dataset ade20k --root data/ade20k
    python scripts/bench_data.py --results docs/results/bench_data.md   # make bench: with its provenance
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from segdcn.config import compose
from segdcn.data.builder import build_dataset
from segdcn.data.loader import build_loader
from segdcn.data.synthetic import SyntheticConfig, generate
from segdcn.provenance import Transcript, add_results_argument, provenance, tool_argv, write_results


def time_loader(dataset, batch_size: int, workers: int, batches: int, warmup: int) -> float:
    """Images per second over `batches` batches after `warmup` batches (worker start-up excluded)."""
    loader = build_loader(dataset, batch_size, train=True, num_workers=workers, seed=0)
    iterator = iter(loader)
    for _ in range(warmup):
        next(iterator)
    start = time.perf_counter()
    images = 0
    for _ in range(batches):
        try:
            image, _ = next(iterator)
        except StopIteration:  # a small set: start another epoch
            iterator = iter(loader)
            image, _ = next(iterator)
        images += image.shape[0]
    return images / (time.perf_counter() - start)


def time_items(dataset, count: int, augment: bool) -> float:
    start = time.perf_counter()
    for index in range(count):
        image, label = dataset.load(index % len(dataset))
        if augment:
            dataset.transforms(image, label)
    return count / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="synthetic", help="config in conf/dataset/ (default synthetic)")
    parser.add_argument("--root", type=Path, default=None, help="dataset root (default: a temporary synthetic set)")
    parser.add_argument("--num-images", type=int, default=256, help="size of the temporary synthetic set")
    parser.add_argument("--image-size", type=int, default=SyntheticConfig.image_size, help="its image side")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", default="2", help="comma-separated worker counts to time (default 2)")
    parser.add_argument("--batches", type=int, default=40, help="timed batches per worker count")
    parser.add_argument("--warmup", type=int, default=3, help="untimed batches first")
    add_results_argument(parser, "the rates")
    args = parser.parse_args(argv)
    workers = [int(w) for w in args.workers.split(",")]

    cfg = compose("train", [f"dataset={args.dataset}"]).dataset
    with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
        if args.root is None:
            if cfg.name != "synthetic":
                parser.error("without --root only --dataset synthetic can be timed")
            config = SyntheticConfig(
                image_size=args.image_size,
                num_train=args.num_images,
                num_val=0,
                max_extent=min(SyntheticConfig.max_extent, 0.9 * args.image_size),
            )
            generate(tmp, config, progress=False)
            cfg.root = tmp
            if args.image_size != SyntheticConfig.image_size:
                cfg.train.crop_size = [args.image_size, args.image_size]
        else:
            cfg.root = str(args.root)
        dataset = build_dataset(cfg, "train")
        crop = cfg.train.crop_size
        transcript = Transcript()  # what --results writes
        emit = transcript.emit
        emit(f"{cfg.name} train: {len(dataset):,} images at {cfg.root}, crop {list(crop)}, batch {args.batch_size}")
        count = min(len(dataset), args.batch_size * 4)
        emit(f"main process, read only:        {time_items(dataset, count, augment=False):8.1f} images/s")
        emit(f"main process, read + augment:   {time_items(dataset, count, augment=True):8.1f} images/s")
        for n in workers:
            rate = time_loader(dataset, args.batch_size, n, args.batches, args.warmup)
            emit(f"DataLoader, {n} worker{'s' if n != 1 else ' '}:          {rate:8.1f} images/s")
    if args.results:
        body = "```text\n" + "\n".join(transcript.blocks) + "\n```\n"  # aligned columns, as printed
        write_results(args.results, "Data pipeline benchmark", body, provenance(tool_argv(__file__, argv)))
        print(f"wrote {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
