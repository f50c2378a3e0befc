"""The training data order: a function of (seed, iteration), so a resumed run sees the same samples
with the same augmentation as an uninterrupted one, whatever the worker count.

Epoch e is a permutation of the dataset drawn from (seed, e); its first `steps_per_epoch * batch_size`
items form the optimizer steps' global batches (the remainder is dropped, as with drop_last).
Global batch k of an epoch is split into `accumulate` micro-batches, each split over the processes:
micro-batch a of process r holds positions [(a * world + r) * b, (a * world + r + 1) * b) of the
batch, with b = batch_size / (world * accumulate).

Each item is paired with its augmentation seed, drawn from (seed, epoch, position in the epoch);
`SeededSamples` reseeds the dataset's transforms with it before transforming the item, so the crop,
scale and flip of a sample do not depend on which worker loads it or where the run was resumed.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from segdcn.data.loader import seed_transforms


def _stream_seed(*keys: int) -> int:
    """A 63-bit seed from integer keys (numpy's SeedSequence mixes them well)."""
    state = np.random.SeedSequence([int(k) for k in keys]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 | int(state[1]) >> 1


ORDER_STREAM = 0  # distinct streams for the permutation and the augmentation seeds
AUGMENT_STREAM = 1


class TrainOrder(Sampler):
    """Yields (dataset index, augmentation seed) for one process, micro-batch after micro-batch,
    from optimizer step `start_iteration` on, without end (the trainer counts the steps)."""

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        *,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        accumulate: int = 1,
        start_iteration: int = 0,
    ):
        if batch_size % (world_size * accumulate):
            raise ValueError(
                f"trainer.batch_size={batch_size} is not divisible by the {world_size} processes times "
                f"trainer.accumulate={accumulate}; expected a multiple of {world_size * accumulate}"
            )
        if num_samples < batch_size:
            raise ValueError(
                f"the training set has {num_samples} images, fewer than trainer.batch_size={batch_size}; "
                f"expected trainer.batch_size <= {num_samples}"
            )
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.accumulate = accumulate
        self.micro_batch = batch_size // (world_size * accumulate)
        self.steps_per_epoch = num_samples // batch_size
        self.start_iteration = start_iteration
        self._permutation_epoch = -1
        self._permutation: list[int] = []

    def permutation(self, epoch: int) -> list[int]:
        if epoch != self._permutation_epoch:
            generator = torch.Generator().manual_seed(_stream_seed(self.seed, ORDER_STREAM, epoch))
            self._permutation = torch.randperm(self.num_samples, generator=generator).tolist()
            self._permutation_epoch = epoch
        return self._permutation

    def augment_seed(self, epoch: int, position: int) -> int:
        return _stream_seed(self.seed, AUGMENT_STREAM, epoch, position) % 2**32

    def micro_batches(self, iteration: int) -> list[list[tuple[int, int]]]:
        """This process's `accumulate` micro-batches of optimizer step `iteration`."""
        epoch, step = divmod(iteration, self.steps_per_epoch)
        order = self.permutation(epoch)
        batches = []
        for micro in range(self.accumulate):
            first = step * self.batch_size + (micro * self.world_size + self.rank) * self.micro_batch
            positions = range(first, first + self.micro_batch)
            batches.append([(order[p], self.augment_seed(epoch, p)) for p in positions])
        return batches

    def __iter__(self) -> Iterator[tuple[int, int]]:
        iteration = self.start_iteration
        while True:
            for batch in self.micro_batches(iteration):
                yield from batch
            iteration += 1

    def state_dict(self, iteration: int) -> dict:
        epoch, step = divmod(iteration, self.steps_per_epoch)
        return {
            "seed": self.seed,
            "iteration": iteration,
            "epoch": epoch,
            "step_in_epoch": step,
            "num_samples": self.num_samples,
            "batch_size": self.batch_size,
        }


class SeededSamples(Dataset):
    """dataset[(index, seed)]: the item with the transforms reseeded by `seed` first."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        index, seed = key
        seed_transforms(self.dataset, seed)
        return self.dataset[index]
