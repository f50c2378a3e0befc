"""ConfusionMatrix against an independent numpy computation, and its all_reduce over 2 gloo processes."""

from __future__ import annotations

import math
import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from segdcn.engine.metrics import ConfusionMatrix

IGNORE = 255


def numpy_metrics(preds: list[np.ndarray], targets: list[np.ndarray], num_classes: int) -> dict:
    """IoU per class by set counting over all images together (no confusion matrix)."""
    pred = np.concatenate([p.ravel() for p in preds])
    target = np.concatenate([t.ravel() for t in targets])
    keep = target != IGNORE
    pred, target = pred[keep], target[keep]
    ious, accs = [], []
    for cls in range(num_classes):
        intersection = np.sum((pred == cls) & (target == cls))
        union = np.sum((pred == cls) | (target == cls))
        ious.append(intersection / union if union else None)
        labelled = np.sum(target == cls)
        accs.append(intersection / labelled if labelled else None)
    present = [v for v in ious if v is not None]
    present_acc = [v for v in accs if v is not None]
    return {
        "per_class_iou": ious,
        "miou": float(np.mean(present)),
        "pixel_acc": float(np.mean(pred == target)),
        "per_class_acc": accs,
        "mean_acc": float(np.mean(present_acc)),
        "num_pixels": int(keep.sum()),
    }


def random_batches(seed: int, num_classes: int = 7, count: int = 5):
    """Images of varying size with 255 pixels; class 5 appears only in labels, class 6 only in predictions,
    class 4 in neither."""
    rng = np.random.default_rng(seed)
    preds, targets = [], []
    for _ in range(count):
        h, w = int(rng.integers(5, 30)), int(rng.integers(5, 30))
        target = rng.choice([0, 1, 2, 3, 5], size=(h, w)).astype(np.int64)
        pred = np.where(rng.random((h, w)) < 0.6, target, rng.choice([0, 1, 2, 3, 6], size=(h, w)))
        pred = np.where(pred == 5, 1, pred)  # 5 never predicted
        target[rng.random((h, w)) < 0.15] = IGNORE
        preds.append(pred.astype(np.int64))
        targets.append(target)
    return preds, targets


def test_matches_numpy_with_ignore_and_absent_classes():
    preds, targets = random_batches(0)
    matrix = ConfusionMatrix(7)
    for pred, target in zip(preds, targets, strict=True):
        matrix.update(torch.from_numpy(pred), torch.from_numpy(target))
    got = matrix.compute()
    want = numpy_metrics(preds, targets, 7)

    assert got["per_class_iou"][4] is None  # in neither: no IoU, not in the mean
    assert got["per_class_iou"][5] == 0.0  # only in labels
    assert got["per_class_iou"][6] == 0.0  # only in predictions
    assert got["per_class_acc"][6] is None and got["per_class_acc"][5] == 0.0
    for key in ("per_class_iou", "per_class_acc"):
        for g, w in zip(got[key], want[key], strict=True):
            assert (g is None and w is None) or g == pytest.approx(w, abs=1e-12)
    for key in ("miou", "pixel_acc", "mean_acc"):
        assert got[key] == pytest.approx(want[key], abs=1e-12)
    assert got["num_pixels"] == want["num_pixels"]
    counts = np.array(got["confusion_matrix"])
    assert counts.shape == (7, 7) and counts.sum() == want["num_pixels"]


def test_batched_update_equals_per_image():
    preds, targets = random_batches(1, count=3)
    crop = min(min(p.shape) for p in preds)
    preds = [p[:crop, :crop] for p in preds]
    targets = [t[:crop, :crop] for t in targets]
    one, batched = ConfusionMatrix(7), ConfusionMatrix(7)
    for pred, target in zip(preds, targets, strict=True):
        one.update(torch.from_numpy(pred), torch.from_numpy(target))
    batched.update(torch.from_numpy(np.stack(preds)), torch.from_numpy(np.stack(targets)))
    assert torch.equal(one.counts, batched.counts)


def test_empty_and_bad_inputs():
    matrix = ConfusionMatrix(3)
    empty = matrix.compute()
    assert math.isnan(empty["miou"]) and empty["per_class_iou"] == [None, None, None] and empty["num_pixels"] == 0
    matrix.update(torch.zeros(2, 2, dtype=torch.long), torch.full((2, 2), IGNORE))  # all ignored: nothing counted
    assert matrix.counts.sum() == 0
    with pytest.raises(ValueError, match="shape"):
        matrix.update(torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"outside 0\.\.2.*target values \[7\]"):
        matrix.update(torch.zeros(2, 2, dtype=torch.long), torch.tensor([[0, 7], [1, IGNORE]]))
    with pytest.raises(TypeError, match="argmax"):
        matrix.update(torch.zeros(2, 2), torch.zeros(2, 2, dtype=torch.long))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _all_reduce_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        preds, targets = random_batches(2)
        matrix = ConfusionMatrix(7)
        for pred, target in list(zip(preds, targets, strict=True))[rank::world]:  # each rank its own images
            matrix.update(torch.from_numpy(pred), torch.from_numpy(target))
        matrix.all_reduce()
        torch.save(matrix.counts, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_all_reduce_over_two_gloo_processes_equals_one_process(tmp_path):
    out = str(tmp_path / "counts")
    mp.spawn(_all_reduce_worker, args=(2, _free_port(), out), nprocs=2, join=True)
    single = ConfusionMatrix(7)
    for pred, target in zip(*random_batches(2), strict=True):
        single.update(torch.from_numpy(pred), torch.from_numpy(target))
    for rank in range(2):
        assert torch.equal(torch.load(f"{out}.{rank}"), single.counts)
    single.all_reduce()  # not initialised: a no-op
    assert single.compute()["num_pixels"] == int(torch.load(f"{out}.0").sum())
