"""DataLoader: per-worker seeding (workers draw different augmentations, runs repeat), collation."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from segdcn.data.loader import build_loader
from segdcn.data.transforms import build_train_transform


class SameImage(Dataset):
    """Every item is the same image, so items differ only by their augmentation."""

    def __init__(self, length: int = 8):
        rng = np.random.default_rng(0)
        self.image = rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)
        self.label = rng.integers(0, 5, (40, 40), dtype=np.uint8)
        self.length = length
        self.transforms = build_train_transform(crop_size=24, scale_range=(0.5, 2.0))

    def __len__(self):
        return self.length

    def __getitem__(self, index):
        return self.transforms(self.image, self.label)


def batches(loader, count):
    iterator = iter(loader)
    return [next(iterator) for _ in range(count)]


@pytest.fixture(scope="module")
def two_worker_runs():
    runs = []
    for _ in range(2):
        loader = build_loader(SameImage(), batch_size=2, train=True, num_workers=2, seed=5)
        assert loader.persistent_workers and loader.drop_last
        runs.append(batches(loader, 4))
        del loader
    return runs


def test_workers_draw_different_augmentations(two_worker_runs):
    first, second = two_worker_runs[0][0], two_worker_runs[0][1]  # batch 0 from worker 0, batch 1 from worker 1
    assert not torch.equal(first[0], second[0])


def test_same_seed_repeats(two_worker_runs):
    for (image_a, label_a), (image_b, label_b) in zip(*two_worker_runs, strict=True):
        assert torch.equal(image_a, image_b) and torch.equal(label_a, label_b)
    image, label = two_worker_runs[0][0]
    assert image.shape == (2, 3, 24, 24) and image.dtype == torch.float32 and label.dtype == torch.int64


def test_no_workers_is_seeded_too():
    runs = [batches(build_loader(SameImage(), 2, train=True, num_workers=0, seed=1), 2) for _ in range(2)]
    assert all(torch.equal(a[0], b[0]) for a, b in zip(*runs, strict=True))
    eval_loader = build_loader(SameImage(3), 2, train=False, num_workers=0)
    assert [len(b[0]) for b in eval_loader] == [2, 1]  # in order, nothing dropped


FORK_AFTER_OPENCV = """
import subprocess
import sys

import numpy as np
from segdcn.data.loader import build_loader
from segdcn.data.transforms import build_train_transform

class Images:
    transforms = build_train_transform(crop_size=320, scale_range=(0.5, 2.0))
    image = np.random.default_rng(0).integers(0, 255, (360, 480, 3), dtype=np.uint8)
    label = np.zeros((360, 480), np.uint8)
    def __len__(self):
        return 64
    def __getitem__(self, index):
        return self.transforms(self.image, self.label)

for index in range(8):  # the parent resizes large images first, as an evaluation loop without workers does
    Images()[index]
for _ in range(4):  # each round forks two workers; the deadlock struck about one fork in three
    loader = build_loader(Images(), 4, train=True, num_workers=2, seed=0)
    iterator = iter(loader)
    for _ in range(4):
        next(iterator)
    del iterator, loader
print("done")
"""


def test_workers_forked_after_opencv_use_do_not_hang():
    """OpenCV's thread pool does not survive fork; segdcn.data keeps OpenCV sequential so that a
    worker forked after the parent resized images cannot deadlock (it did, intermittently)."""
    import cv2

    import segdcn.data  # noqa: F401

    assert cv2.getNumThreads() == 1
    result = subprocess.run([sys.executable, "-c", FORK_AFTER_OPENCV], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "done" in result.stdout, result.stderr
