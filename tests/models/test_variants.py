"""Backbone variants beyond torchvision's: res5 with a larger atrous dilation (the paper's Table 3) and a
narrower ResNet (the CPU demo), from config keys and with errors that name the key."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from segdcn.config import ModelConfig
from segdcn.models import ResNet, build_model


def res5_convs(backbone: ResNet) -> dict[str, nn.Conv2d]:
    return {
        n: m
        for n, m in backbone.named_modules()
        if n.startswith("layer4") and isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)
    }


@pytest.mark.parametrize("dilation", [4, 6, 8])
def test_res5_dilation_sets_every_res5_3x3_conv(dilation):
    backbone = ResNet(50, 16, res5_dilation=dilation)
    convs = res5_convs(backbone)
    assert sorted(convs) == ["layer4.0.conv2", "layer4.1.conv2", "layer4.2.conv2"]  # res5a,b,c
    for conv in convs.values():  # res5a's too, as in the paper's Caffe model
        assert (conv.stride, conv.dilation, conv.padding) == ((1, 1), (dilation, dilation), (dilation, dilation))
    # res4 is as at output stride 16 without the key; the output keeps its size
    plain = ResNet(50, 16)
    assert [m.dilation for m in backbone.layer3.modules() if isinstance(m, nn.Conv2d)] == [
        m.dilation for m in plain.layer3.modules() if isinstance(m, nn.Conv2d)
    ]
    x = torch.randn(1, 3, 65, 65)
    assert backbone.eval()(x).shape == plain.eval()(x).shape == (1, 2048, 5, 5)


def test_res5_dilation_from_config_with_a_basic_block_resnet():
    model = build_model({"backbone": {"name": "resnet18", "output_stride": 8, "res5_dilation": 6}, "norm": "bn"}, 3)
    assert model.spec.backbone.res5_dilation == 6
    assert {c.dilation for c in res5_convs(model.backbone).values()} == {(6, 6)}
    assert model(torch.randn(1, 3, 33, 33)).shape == (1, 3, 33, 33)


def test_width_scales_every_stage_and_keeps_names():
    narrow = ResNet(18, 8, width=16)
    assert narrow.conv1.out_channels == 16 and narrow.out_channels == 128
    assert [narrow.get_submodule(f"layer{i}")[0].conv1.out_channels for i in (1, 2, 3, 4)] == [16, 32, 64, 128]
    assert {n for n, _ in narrow.named_parameters()} == {n for n, _ in ResNet(18, 8).named_parameters()}
    model = build_model(
        {"backbone": {"name": "resnet18", "output_stride": 8, "pretrained": "none", "width": 16}, "norm": "bn",
         "head": {"channels": 32}, "dcn": {"layers": 3}},
        6,
    )  # fmt: skip
    assert model(torch.randn(2, 3, 48, 48)).shape == (2, 6, 48, 48)


@pytest.mark.parametrize(
    ("backbone", "message"),
    [
        ({"output_stride": 32, "res5_dilation": 4}, "model.backbone.res5_dilation=4 needs res5 at stride 1"),
        ({"res5_dilation": 0}, "model.backbone.res5_dilation=0: expected 1 or more"),
        ({"res5_dilation": "4"}, "model.backbone.res5_dilation='4': expected an integer or null"),
        ({"width": 0}, "model.backbone.width=0: expected 1 or more"),
        ({"width": 32, "pretrained": "imagenet"}, "model.backbone.width=32 has no pretrained weights"),
    ],
)
def test_bad_variant_values_name_the_key(backbone, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig.from_config({"backbone": backbone})
