"""The offsets of every deformable layer of a model for a batch of images, recorded with forward hooks.

    records = capture_offsets(model, images)      # one OffsetRecord per deformable layer, in forward order
    records[-1].paper_name, records[-1].offset.shape   # 'res5c', [N, 2*G*kh*kw, out_h, out_w]

Each record also keeps the layer's geometry (kernel, stride, padding, dilation, offset groups) and where
its input and output maps sit on the image: every stride-2 layer of the ResNets here is centred, so
position j of a map of stride s lies on image pixel s * j (the grid segdcn.models.upsample_logits puts
the logits on). That is what lets segdcn.analysis.sampling carry locations from layer to layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from segdcn.models import deformable_layers, paper_name
from segdcn.ops import DeformConv2d

MAX_STRIDE = 64  # ResNets reach 32; anything beyond is not a map of this image


@dataclass
class OffsetRecord:
    """One deformable layer's offsets over a batch, in torchvision's layout, with its geometry.

    offset: [N, 2*G*kh*kw, out_h, out_w], (dy, dx) per tap, taps row-major per offset group.
    mask: [N, G*kh*kw, out_h, out_w] for modulated (DCNv2) layers, else None.
    input_stride / output_stride: image pixels between adjacent positions of the input / output map.
    """

    name: str
    paper_name: str
    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    deform_groups: int
    input_size: tuple[int, int]
    output_size: tuple[int, int]
    input_stride: int
    output_stride: int
    offset: Tensor
    mask: Tensor | None = None

    @property
    def taps(self) -> int:
        return self.kernel_size[0] * self.kernel_size[1]

    def offset_pairs(self) -> Tensor:
        """The offsets as [N, G, kh, kw, 2, out_h, out_w], last-but-two axis (dy, dx)."""
        n, _, h, w = self.offset.shape
        return self.offset.reshape(n, self.deform_groups, *self.kernel_size, 2, h, w)


def map_stride(image_size: tuple[int, int], map_size: tuple[int, int], what: str) -> int:
    """The power-of-two stride s with ceil(H / s) x ceil(W / s) == map_size.

    Every stride-2 layer here (7x7/pad 3, 3x3/pad 1, 1x1) turns n pixels into ceil(n / 2), so a map of
    stride s over an H x W image has exactly that size; a size that fits no stride, or several (an
    image smaller than twice the stride), cannot be placed on the image.
    """
    height, width = image_size
    fits = [
        s
        for s in (2**k for k in range(MAX_STRIDE.bit_length()))
        if (-(-height // s), -(-width // s)) == tuple(map_size)
    ]
    if len(fits) != 1:
        found = "fits no power-of-two stride" if not fits else f"fits strides {fits} alike"
        raise ValueError(
            f"{what}: a {map_size[0]}x{map_size[1]} map of a {height}x{width} image {found}; expected a ResNet "
            "map (ceil(H / s) x ceil(W / s)) of an image at least twice the output stride on each side"
        )
    return fits[0]


def _paper_name(model: nn.Module, name: str) -> str:
    """res5c etc. for a DeepLab/ResNet layer (segdcn.models.naming), the module path for anything else."""
    backbone = getattr(model, "backbone", model)
    depth = getattr(backbone, "depth", None)
    try:
        return paper_name(depth, name.removeprefix("backbone.")) if depth is not None else name
    except ValueError:
        return name


def paper_names(model: nn.Module) -> dict[str, str]:
    """Module name -> the paper's name (res5c, ...) of every deformable layer of `model`, in forward order."""
    return {name: _paper_name(model, name) for name in deformable_layers(model)}


class OffsetRecorder:
    """Forward hooks on every DeformConv2d of `model` that keep its offsets (and masks) of the last call.

    The hook asks the layer for its offsets again (`offset_and_mask`, one small conv) rather than
    reaching into the op, so it sees exactly what the layer uses, whatever its offset conv.
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self.layers: dict[str, DeformConv2d] = deformable_layers(model)
        self.paper_names = paper_names(model)
        if not self.layers:
            raise ValueError(
                "the model has no deformable layers (segdcn.ops.DeformConv2d); train it with model.dcn.layers=N > 0"
            )
        self._seen: dict[str, tuple[Tensor, Tensor | None, tuple[int, int], tuple[int, int]]] = {}
        self._handles: list = []

    def __enter__(self) -> OffsetRecorder:
        self._seen.clear()  # a recorder entered again (once per image) never returns an older pass's offsets
        for name, layer in self.layers.items():
            self._handles.append(layer.register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, name: str):
        def hook(module: DeformConv2d, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            with torch.no_grad():
                offset, mask = module.offset_and_mask(inputs[0])
            self._seen[name] = (
                offset.detach().float().cpu(),
                None if mask is None else mask.detach().float().cpu(),
                tuple(inputs[0].shape[-2:]),
                tuple(output.shape[-2:]),
            )

        return hook

    def records(self, image_size: tuple[int, int]) -> list[OffsetRecord]:
        """The records of the last forward pass over images of `image_size`, in forward order."""
        missing = [name for name in self.layers if name not in self._seen]
        if missing:
            raise RuntimeError(f"deformable layers {missing} did not run in the forward pass")
        out = []
        for name, layer in self.layers.items():
            offset, mask, in_size, out_size = self._seen[name]
            out.append(
                OffsetRecord(
                    name=name,
                    paper_name=self.paper_names[name],
                    kernel_size=tuple(layer.kernel_size),
                    stride=tuple(layer.stride),
                    padding=tuple(layer.padding),
                    dilation=tuple(layer.dilation),
                    deform_groups=layer.deform_groups,
                    input_size=in_size,
                    output_size=out_size,
                    input_stride=map_stride(image_size, in_size, f"input of {name}"),
                    output_stride=map_stride(image_size, out_size, f"output of {name}"),
                    offset=offset,
                    mask=mask,
                )
            )
        return out


def capture_offsets(model: nn.Module, images: Tensor) -> tuple[Tensor, list[OffsetRecord]]:
    """(logits, records): one forward pass of `model` (in eval mode, no gradients) over images [N, 3, H, W]."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [N, 3, H, W], got shape {tuple(images.shape)}")
    model.eval()
    with OffsetRecorder(model) as recorder, torch.no_grad():
        logits = model(images)
    return logits, recorder.records(tuple(images.shape[-2:]))
