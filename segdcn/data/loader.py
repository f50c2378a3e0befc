"""DataLoaders with reproducible, per-worker augmentation.

albumentations keeps its own random generators inside each Compose, and a forked worker inherits a
copy of them: without reseeding, every worker would draw the same crops and flips. Each worker
therefore reseeds numpy, `random` and the dataset's transforms from its torch worker seed, which the
loader's generator makes distinct per worker and reproducible for a given `seed`.
"""

from __future__ import annotations

import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info


def _transforms_of(dataset: Dataset):
    """The transforms of a dataset, looking through Subset/ConcatDataset-style wrappers."""
    while dataset is not None:
        transforms = getattr(dataset, "transforms", None)
        if transforms is not None:
            return transforms
        dataset = getattr(dataset, "dataset", None)
    return None


def seed_transforms(dataset: Dataset, seed: int) -> None:
    transforms = _transforms_of(dataset)
    if hasattr(transforms, "seed"):
        transforms.seed(seed)


def seed_worker(worker_id: int) -> None:
    """worker_init_fn: seeds numpy, random and the transforms from the worker's torch seed, and
    keeps torch to one thread per worker (the workers are the parallelism; OpenCV is already
    sequential, see segdcn/data/__init__.py)."""
    info = get_worker_info()
    seed = info.seed % 2**32 if info is not None else torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
    torch.set_num_threads(1)
    if info is not None:
        seed_transforms(info.dataset, seed)


def build_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    train: bool,
    num_workers: int = 2,
    seed: int = 0,
    pin_memory: bool | None = None,
    prefetch_factor: int | None = None,
) -> DataLoader:
    """Shuffled, full batches for training (train=True); in order, all items otherwise. Workers are
    persistent (no re-fork per epoch); memory is pinned when a GPU is there."""
    generator = torch.Generator().manual_seed(seed)
    if num_workers == 0:
        seed_transforms(dataset, seed)
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train,
        drop_last=train,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
        worker_init_fn=seed_worker if num_workers > 0 else None,
        generator=generator,
        prefetch_factor=prefetch_factor if num_workers > 0 else None,
    )
