"""Inference (whole, sliding window, scales, flip, autocast) and evaluate() (metrics, sharding, hooks)."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from segdcn.config import EvalConfig
from segdcn.engine.evaluate import evaluate
from segdcn.engine.inference import infer, window_starts
from segdcn.engine.metrics import ConfusionMatrix

NUM_CLASSES = 4


def conv_net(seed: int = 0) -> nn.Module:
    """3x3 convs with zero padding: not translation-equivariant at the borders, so padding or a shifted
    window would change its logits."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, NUM_CLASSES, 3, padding=1)).eval()


def pointwise_net(seed: int = 0) -> nn.Module:
    """A 1x1 conv: every output pixel depends on its input pixel only (translation- and flip-equivariant)."""
    torch.manual_seed(seed)
    return nn.Conv2d(3, NUM_CLASSES, 1).eval()


def test_window_starts_cover_the_image_and_end_at_the_border():
    assert window_starts(10, 16, 8) == [0]
    assert window_starts(16, 16, 8) == [0]
    assert window_starts(20, 8, 5) == [0, 5, 10, 12]
    assert window_starts(21, 8, 8) == [0, 8, 13]


@torch.no_grad()
def test_slide_with_window_at_least_the_image_equals_whole():
    model = conv_net()
    image = torch.randn(2, 3, 19, 26)
    whole = infer(model, image, mode="whole")
    for window in ((19, 26), (32, 32), (19, 40)):
        slide = infer(model, image, mode="slide", window=window, stride=(8, 8))
        torch.testing.assert_close(slide, whole, rtol=0, atol=0)


@torch.no_grad()
def test_overlapping_windows_on_a_pointwise_model_equal_whole():
    model = pointwise_net()
    image = torch.randn(1, 3, 20, 23)
    whole = infer(model, image, mode="whole")
    slide = infer(model, image, mode="slide", window=(7, 9), stride=(4, 5))
    torch.testing.assert_close(slide, whole, rtol=1e-6, atol=1e-6)
    # and on a model with borders the overlaps are really averaged: differs from whole, equals a manual average
    model = conv_net()
    slide = infer(model, image, mode="slide", window=(12, 23), stride=(8, 23))  # rows 0-11 and 8-19
    top, bottom = model(image[..., 0:12, :]), model(image[..., 8:20, :])
    manual = torch.cat([top[..., :8, :], (top[..., 8:, :] + bottom[..., :4, :]) / 2, bottom[..., 4:, :]], dim=-2)
    torch.testing.assert_close(slide, manual)
    assert not torch.allclose(slide, model(image))


def test_stride_larger_than_window_is_an_error():
    with pytest.raises(ValueError, match=r"eval.stride .* larger than eval.window"):
        infer(pointwise_net(), torch.randn(1, 3, 20, 20), mode="slide", window=(8, 8), stride=(9, 4))


@torch.no_grad()
def test_flip():
    image = torch.randn(1, 3, 12, 17)
    symmetric = pointwise_net()  # flip-equivariant: flip testing changes nothing
    torch.testing.assert_close(infer(symmetric, image, flip=True), infer(symmetric, image), rtol=1e-6, atol=1e-6)
    model = conv_net()
    with torch.no_grad():
        model[0].weight[..., 0] += 0.5  # left-right asymmetric kernels
    manual = (model(image) + model(image.flip(-1)).flip(-1)) / 2
    torch.testing.assert_close(infer(model, image, flip=True), manual)
    assert not torch.allclose(infer(model, image, flip=True), model(image))


@torch.no_grad()
def test_multi_scale_and_flip_average_at_the_label_size():
    model = conv_net()
    image = torch.randn(1, 3, 16, 20)
    label_size = (32, 40)
    scales = (0.5, 1.0, 1.5)
    views = []
    for scale in scales:
        x = F.interpolate(image, size=(round(16 * scale), round(20 * scale)), mode="bilinear", align_corners=False)
        for logits in (model(x), model(x.flip(-1)).flip(-1)):
            views.append(F.interpolate(logits, size=label_size, mode="bilinear", align_corners=False))
    manual = torch.stack(views).mean(0)
    got = infer(model, image, label_size, scales=scales, flip=True)
    assert got.shape == (1, NUM_CLASSES, *label_size) and got.dtype == torch.float32
    torch.testing.assert_close(got, manual)
    slide = infer(model, image, label_size, mode="slide", window=(64, 64), stride=(32, 32), scales=scales, flip=True)
    torch.testing.assert_close(slide, manual)


@torch.no_grad()
def test_bf16_autocast_returns_float32_close_to_fp32():
    model = conv_net()
    image = torch.randn(1, 3, 16, 16)
    low = infer(model, image, precision="bf16")
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, infer(model, image), rtol=0.05, atol=0.05)
    with pytest.raises(ValueError, match="precision"):
        infer(model, image, precision="fp8")


class PairDataset(torch.utils.data.Dataset):
    """Normalised images at half the size of their full-resolution labels, sizes varying."""

    def __init__(self, count: int = 5, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        self.items = []
        for i in range(count):
            h, w = 8 + 2 * i, 10 + i
            image = torch.randn(3, h, w, generator=generator)
            label = torch.randint(0, NUM_CLASSES, (2 * h, 2 * w), generator=generator)
            label[torch.rand(2 * h, 2 * w, generator=generator) < 0.1] = 255
            self.items.append((image, label))

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return self.items[index]


def eval_cfg(**overrides):
    return OmegaConf.merge(OmegaConf.structured(EvalConfig), {"num_workers": 0, **overrides})


def manual_metrics(model, dataset, count=None):
    matrix = ConfusionMatrix(NUM_CLASSES)
    with torch.no_grad():
        for image, label in list(dataset)[:count]:
            logits = F.interpolate(model(image[None]), size=label.shape, mode="bilinear", align_corners=False)
            matrix.update(logits.argmax(1)[0], label)
    return matrix.compute()


def test_evaluate_scores_every_image_once_and_restores_the_mode():
    model = conv_net().train()
    dataset = PairDataset()
    seen = []
    names = ["a", "b", "c", "d"]
    result = evaluate(
        model,
        dataset,
        eval_cfg(),
        device="cpu",
        num_classes=NUM_CLASSES,
        class_names=names,
        progress=False,
        num_samples=2,
        on_prediction=lambda index, pred, label: seen.append((index, pred.shape, label.shape)),
    )
    assert model.training
    want = manual_metrics(model.eval(), dataset)
    assert result.metrics["miou"] == pytest.approx(want["miou"], abs=1e-12)
    assert list(result.metrics["per_class_iou"]) == names
    assert list(result.metrics["per_class_iou"].values()) == pytest.approx(want["per_class_iou"])
    assert result.metrics["num_images"] == result.num_images == 5
    assert [s[0] for s in seen] == list(range(5)) and all(p == lb for _, p, lb in seen)
    assert len(result.samples) == 2
    image, pred, target = result.samples[1]
    assert image.shape == (*target.shape, 3) and image.dtype.name == "uint8" and pred.shape == target.shape

    few = evaluate(model, dataset, eval_cfg(max_images=2), device="cpu", num_classes=NUM_CLASSES, progress=False)
    assert few.num_images == 2
    assert few.metrics["miou"] == pytest.approx(manual_metrics(model.eval(), dataset, 2)["miou"], abs=1e-12)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ddp_eval_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        seen: list[int] = []
        model = nn.parallel.DistributedDataParallel(conv_net())  # evaluate unwraps it (uneven shards)
        result = evaluate(
            model,
            PairDataset(),
            eval_cfg(),
            device="cpu",
            num_classes=NUM_CLASSES,
            progress=False,
            on_prediction=lambda index, pred, label: seen.append(index),
        )
        torch.save({"metrics": result.metrics, "seen": seen}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_distributed_evaluation_equals_single_process(tmp_path):
    out = str(tmp_path / "result")
    mp.spawn(_ddp_eval_worker, args=(2, _free_port(), out), nprocs=2, join=True)
    single = evaluate(conv_net(), PairDataset(), eval_cfg(), device="cpu", num_classes=NUM_CLASSES, progress=False)
    results = [torch.load(f"{out}.{rank}", weights_only=False) for rank in range(2)]
    assert sorted(results[0]["seen"] + results[1]["seen"]) == list(range(5))  # every image exactly once
    for result in results:
        assert result["metrics"]["confusion_matrix"] == single.metrics["confusion_matrix"]
        assert result["metrics"]["miou"] == single.metrics["miou"]


def test_a_dataset_with_training_augmentation_is_refused(synthetic_set):
    from segdcn.data import build_dataset, build_transforms

    root = synthetic_set(image_size=24, num_train=2, num_val=0)
    cfg = {"name": "synthetic", "root": str(root), "layout": "voc", "num_classes": 6, "ignore_index": 255,
           "splits": {"train": "train"}, "image_dir": "JPEGImages",
           "mask_dir": "SegmentationClass", "train": {"crop_size": [16, 16]}}  # fmt: skip
    with pytest.raises(ValueError, match="training augmentation"):
        evaluate(conv_net(), build_dataset(cfg, "train"), eval_cfg(), device="cpu", num_classes=6, progress=False)
    plain = build_dataset(cfg, "train", transforms=build_transforms(cfg, train=False))
    assert evaluate(conv_net(), plain, eval_cfg(), device="cpu", num_classes=6, progress=False).num_images == 2
