"""Test-time inference: class logits of a batch of images at the size of their labels.

    logits = infer(model, images, label_size, mode="slide", window=(513, 513), stride=(341, 341),
                   scales=(0.75, 1.0, 1.25), flip=True, precision="bf16")

The evaluation transform resizes the image (dataset.eval.short_side) but keeps the label at its full
resolution, so the logits are resampled to the label's size here and scored there.

- whole: one forward pass over the image.
- slide: windows of `window` pixels every `stride` pixels, their logits averaged where they overlap.
  The last window of a row or column is moved back to end at the image's border rather than padded
  beyond it, so the model never sees padding and every window has the same size; an image smaller
  than the window in a dimension is covered by one window of the image's size in that dimension.
  A window at least as large as the image is therefore exactly whole-image inference. Sliding keeps
  the memory of one pass bounded (full-resolution Cityscapes through ResNet-101).
- scales: the image is resized by each factor, inferred (whole or slide), and the logits resampled to
  the label's size and averaged over scales; flip adds the horizontally flipped image of every scale
  (its logits flipped back). Logits, not probabilities, are averaged: one scale and no flip then
  returns the model's own logits, and the average of logits is what bilinear resampling of them
  already does within an image.
- precision: "bf16"/"fp16" run the model under torch.autocast; the logits come back as float32.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segdcn.engine.device import PRECISIONS

MODES = ("whole", "slide")


def autocast(device: torch.device, precision: str):
    """torch.autocast for "bf16"/"fp16" on `device`, a null context for "fp32"."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision is {precision!r}; expected one of {sorted(PRECISIONS)}")
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    values = (value, value) if isinstance(value, int) else tuple(int(v) for v in value)
    if len(values) != 2 or min(values) < 1:
        raise ValueError(f"{name} is {value!r}; expected a positive int or [height, width]")
    return values  # type: ignore[return-value]


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Start offsets of the windows along one dimension of `size` pixels: every `stride` pixels, the
    last one moved back so that it ends at the border; one window at 0 when the image is not larger."""
    if size <= window:
        return [0]
    starts = list(range(0, size - window, stride))
    return starts + [size - window]


def _forward(model: nn.Module, images: Tensor, precision: str) -> Tensor:
    with autocast(images.device, precision):
        logits = model(images)
    if logits.shape[-2:] != images.shape[-2:]:
        # a model whose logits are at its output stride: bring them to its input's grid
        logits = F.interpolate(logits.float(), size=images.shape[-2:], mode="bilinear", align_corners=False)
    return logits.float()


def slide_logits(
    model: nn.Module, images: Tensor, window: Sequence[int] | int, stride: Sequence[int] | int, precision: str = "fp32"
) -> Tensor:
    """Logits [N, C, H, W] of images [N, 3, H, W] from overlapping windows, averaged where they overlap."""
    win_h, win_w = _pair(window, "eval.window")
    stride_h, stride_w = _pair(stride, "eval.stride")
    if stride_h > win_h or stride_w > win_w:
        raise ValueError(
            f"eval.stride {[stride_h, stride_w]} is larger than eval.window {[win_h, win_w]}: "
            "the windows would leave pixels uncovered"
        )
    height, width = images.shape[-2:]
    total: Tensor | None = None
    count = images.new_zeros(1, 1, height, width)
    for top in window_starts(height, win_h, stride_h):
        for left in window_starts(width, win_w, stride_w):
            bottom, right = min(top + win_h, height), min(left + win_w, width)
            logits = _forward(model, images[..., top:bottom, left:right], precision)
            if total is None:
                total = logits.new_zeros(images.shape[0], logits.shape[1], height, width)
            total[..., top:bottom, left:right] += logits
            count[..., top:bottom, left:right] += 1
    assert total is not None
    return total / count


def infer(
    model: nn.Module,
    images: Tensor,
    label_size: Sequence[int] | None = None,
    *,
    mode: str = "whole",
    window: Sequence[int] | int = (513, 513),
    stride: Sequence[int] | int = (341, 341),
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    precision: str = "fp32",
) -> Tensor:
    """float32 logits [N, C, *label_size] of images [N, 3, h, w] (label_size defaults to (h, w)),
    averaged over `scales` and, with `flip`, over the mirrored image. Call it under torch.no_grad()
    with the model in eval mode (segdcn.engine.evaluate does both)."""
    if mode not in MODES:
        raise ValueError(f"eval.mode is {mode!r}; expected one of {MODES}")
    if images.dim() != 4:
        raise ValueError(f"images has shape {tuple(images.shape)}; expected [N, 3, H, W]")
    scales = [float(s) for s in scales]
    if not scales or min(scales) <= 0:
        raise ValueError(f"eval.scales is {scales}; expected positive factors, e.g. [0.75, 1.0, 1.25]")
    height, width = images.shape[-2:]
    out_size = (height, width) if label_size is None else tuple(int(v) for v in label_size)

    def run(x: Tensor) -> Tensor:
        if mode == "slide":
            return slide_logits(model, x, window, stride, precision)
        return _forward(model, x, precision)

    total: Tensor | None = None
    for scale in scales:
        if scale == 1.0:
            scaled = images
        else:
            size = (max(1, round(height * scale)), max(1, round(width * scale)))
            scaled = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
        views = [run(scaled)]
        if flip:
            views.append(run(scaled.flip(-1)).flip(-1))
        for logits in views:
            if tuple(logits.shape[-2:]) != out_size:
                logits = F.interpolate(logits, size=out_size, mode="bilinear", align_corners=False)
            total = logits if total is None else total + logits
    assert total is not None
    return total / (len(scales) * (2 if flip else 1))


def infer_with_config(
    model: nn.Module, images: Tensor, label_size: Sequence[int] | None, eval_cfg, precision: str = "fp32"
) -> Tensor:
    """infer() with mode, window, stride, scales and flip from an EvalConfig (conf: eval.*)."""
    return infer(
        model,
        images,
        label_size,
        mode=eval_cfg.mode,
        window=list(eval_cfg.window),
        stride=list(eval_cfg.stride),
        scales=list(eval_cfg.scales),
        flip=bool(eval_cfg.flip),
        precision=precision,
    )
