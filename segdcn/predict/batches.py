"""Images read, resized like evaluation and grouped into batches of one size.

The evaluation transform (segdcn.data.build_eval_transform) resizes the shorter side to the model's
short_side and normalises with its mean and std; images go into one batch only while they share both
their original and their resized size, since a batch is one tensor and the predictions go back to the
original size. Consecutive images are grouped, so a folder of one camera's frames fills every batch
and memory stays at one batch whatever the folder holds.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from segdcn.data.io import read_image
from segdcn.predict.inputs import InputImage


@dataclass
class Batch:
    items: list[InputImage]
    images: list[np.ndarray]  # the originals, uint8 [H, W, 3]
    tensor: torch.Tensor  # [N, 3, h, w], resized and normalised

    @property
    def original_size(self) -> tuple[int, int]:
        return self.images[0].shape[0], self.images[0].shape[1]


def batches(items: Iterable[InputImage], transform, batch_size: int) -> Iterator[Batch]:
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}; expected a positive number of images")
    pending: list[tuple[InputImage, np.ndarray, torch.Tensor]] = []

    def flush() -> Batch:
        batch = Batch([p[0] for p in pending], [p[1] for p in pending], torch.stack([p[2] for p in pending]))
        pending.clear()
        return batch

    for item in items:
        image = read_image(item.path)  # UnreadableFileError names the file
        tensor = transform.compose(image=image)["image"]  # the evaluation transform; no label to carry
        if pending and (_key(pending[-1]) != (image.shape, tuple(tensor.shape)) or len(pending) == batch_size):
            yield flush()
        pending.append((item, image, tensor))
    if pending:
        yield flush()


def _key(entry: Sequence) -> tuple:
    return entry[1].shape, tuple(entry[2].shape)
