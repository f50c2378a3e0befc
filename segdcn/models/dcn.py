"""Turning chosen 3x3 convs of a backbone into deformable ones, in place and under the same name.

A plain conv is replaced by a `segdcn.ops.DeformConv2d` with the same geometry and weight,
so `backbone.layer4.2.conv2` stays the name of res5c, and pretrained weights load into it;
only its new offset (and mask) conv, `conv_offset`, is new and starts at zero.

Offset conv geometry (`offset_dilation`):
- "paper": the offset conv has the deformable conv's own kernel, padding and dilation
  (the paper's text: "the same spatial resolution and dilation"). This is DeformConv2d's own.
- "official": 3x3, padding 1, dilation 1 whatever the layer's dilation, as in the official
  MXNet code (deeplab/symbols/resnet_v1_101_deeplab_dcn.py). DeformConv2d has no such
  option, so its `conv_offset` is replaced by a zero-initialised conv of the same output
  channels and stride; the output size equals the layer's whenever padding == dilation,
  which holds for every 3x3 conv of the ResNets here.
"""

from __future__ import annotations

from torch import nn

from segdcn.ops import DeformConv2d

from .naming import paper_name

OFFSET_DILATIONS = ("paper", "official")


def official_offset_conv(layer: DeformConv2d) -> nn.Conv2d:
    """The official code's offset (and mask) conv: 3x3, pad 1, no dilation, zero-initialised."""
    conv = nn.Conv2d(layer.in_channels, layer.conv_offset.out_channels, 3, stride=layer.stride, padding=1, bias=True)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


def deformable_from(
    conv: nn.Conv2d,
    *,
    modulated: bool = False,
    deform_groups: int = 1,
    offset_dilation: str = "paper",
    offset_lr_mult: float = 1.0,
    impl: str = "native",
) -> DeformConv2d:
    """A DeformConv2d with `conv`'s geometry and (copied) weight; offsets start at zero."""
    if offset_dilation not in OFFSET_DILATIONS:
        raise ValueError(f"model.dcn.offset_dilation must be one of paper, official, got {offset_dilation!r}")
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        raise ValueError(f"only zero-padded convs with numeric padding can become deformable, got {conv}")
    layer = DeformConv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=conv.bias is not None,
        deform_groups=deform_groups,
        modulated=modulated,
        offset_lr_mult=offset_lr_mult,
        impl=impl,
    ).to(device=conv.weight.device, dtype=conv.weight.dtype)
    layer.weight.data.copy_(conv.weight.data)
    if conv.bias is not None:
        layer.bias.data.copy_(conv.bias.data)
    if offset_dilation == "official":
        layer.conv_offset = official_offset_conv(layer).to(device=conv.weight.device, dtype=conv.weight.dtype)
    layer.offset_dilation = offset_dilation
    return layer


def make_deformable(root: nn.Module, paths: list[str], **options) -> list[DeformConv2d]:
    """Replace the convs at `paths` (relative to `root`) by deformable ones; options as `deformable_from`."""
    layers = []
    for path in paths:
        parent_path, _, child = path.rpartition(".")
        parent = root.get_submodule(parent_path) if parent_path else root
        conv = getattr(parent, child, None)
        if type(conv) is not nn.Conv2d:
            raise ValueError(f"{path} must be an nn.Conv2d to become deformable, found {type(conv).__name__}")
        in_channels, groups = conv.in_channels, options.get("deform_groups", 1)
        if not isinstance(groups, int) or groups < 1 or in_channels % groups:
            raise ValueError(
                f"model.dcn.deform_groups must be a positive divisor of the {in_channels} input channels of "
                f"{path}, got {groups!r}"
            )
        layer = deformable_from(conv, **options)
        setattr(parent, child, layer)
        layers.append(layer)
    return layers


def deformable_layers(model: nn.Module) -> dict[str, DeformConv2d]:
    """Module name -> DeformConv2d for every deformable layer of `model`, in registration order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, DeformConv2d)}


def deformable_layer_names(model: nn.Module, depth: int) -> list[str]:
    """The paper's names of the deformable layers of a ResNet (or DeepLab on one): e.g. [res5a, res5b, res5c]."""
    return [paper_name(depth, name.removeprefix("backbone.")) for name in deformable_layers(model)]
