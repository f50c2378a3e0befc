"""The training data order: epochs are permutations, processes and accumulation steps split each global
batch without overlap, a resumed order continues the uninterrupted one, and augmentation follows the sample."""

from __future__ import annotations

import itertools

import pytest
import torch

from segdcn.engine.data_order import SeededSamples, TrainOrder


def global_batches(order_of_rank, world_size: int, iterations: int) -> list[list[tuple[int, int]]]:
    """The (index, seed) pairs of every optimizer step, gathered over the processes."""
    return [
        sorted(pair for rank in range(world_size) for micro in order_of_rank(rank).micro_batches(i) for pair in micro)
        for i in range(iterations)
    ]


@pytest.mark.parametrize(("world_size", "accumulate"), [(1, 1), (2, 1), (1, 2), (2, 2)])
def test_batches_split_over_processes_and_accumulation_without_overlap(world_size, accumulate):
    num_samples, batch_size = 22, 8  # 2 steps per epoch, 6 images dropped each epoch

    def order(rank: int) -> TrainOrder:
        return TrainOrder(num_samples, batch_size, seed=3, rank=rank, world_size=world_size, accumulate=accumulate)

    single = global_batches(lambda rank: TrainOrder(num_samples, batch_size, seed=3), 1, 6)
    split = global_batches(order, world_size, 6)
    assert split == single  # the same global batches and seeds, however they are split
    for epoch in range(3):
        indices = [index for batch in single[2 * epoch : 2 * epoch + 2] for index, _ in batch]
        assert len(set(indices)) == 16  # no repeats within an epoch
    assert single[0] != single[2]  # each epoch draws its own permutation


def test_a_resumed_order_continues_the_stream():
    whole = list(itertools.islice(iter(TrainOrder(10, 4, seed=0, accumulate=2)), 4 * 7))
    resumed = list(itertools.islice(iter(TrainOrder(10, 4, seed=0, accumulate=2, start_iteration=3)), 4 * 4))
    assert resumed == whole[4 * 3 :]


def test_the_seed_changes_the_order():
    a = TrainOrder(10, 2, seed=0).micro_batches(0)
    b = TrainOrder(10, 2, seed=1).micro_batches(0)
    assert a != b


def test_divisibility_and_size_errors_name_the_keys():
    with pytest.raises(
        ValueError, match=r"trainer\.batch_size=6 is not divisible by the 2 processes times trainer\.accumulate=2"
    ):
        TrainOrder(10, 6, seed=0, world_size=2, accumulate=2)
    with pytest.raises(ValueError, match=r"fewer than trainer\.batch_size=16"):
        TrainOrder(10, 16, seed=0)


class RandomTransform:
    """Stands in for the albumentations pipeline: its output is a draw from its generator."""

    def __init__(self):
        self.generator = torch.Generator()

    def seed(self, seed: int) -> None:
        self.generator.manual_seed(seed)

    def __call__(self, index: int) -> float:
        return index + torch.rand(1, generator=self.generator).item()


class Items(torch.utils.data.Dataset):
    def __init__(self):
        self.transforms = RandomTransform()

    def __len__(self) -> int:
        return 10

    def __getitem__(self, index: int) -> float:
        return self.transforms(index)


def test_augmentation_depends_on_the_sample_not_the_call_order():
    samples = SeededSamples(Items())
    keys = TrainOrder(10, 4, seed=0).micro_batches(5)[0]
    forward = [samples[key] for key in keys]
    backward = [samples[key] for key in reversed(keys)][::-1]
    assert forward == backward
    assert len(set(forward)) == len(forward)
