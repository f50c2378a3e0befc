"""segdcn.ops.DeformConv2d: initialisation, implementations, torch.compile and torch.export."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from segdcn.ops import DeformConv2d
from tests.helpers import assert_close


def plain_conv(layer: DeformConv2d, x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    out = F.conv2d(x, layer.weight * scale, None, layer.stride, layer.padding, layer.dilation, layer.groups)
    return out + layer.bias.view(1, -1, 1, 1) if layer.bias is not None else out


@pytest.mark.parametrize("stride,dilation,groups,deform_groups", [(1, 1, 1, 1), (2, 2, 2, 4)])
def test_fresh_layer_is_a_plain_conv(stride, dilation, groups, deform_groups):
    layer = DeformConv2d(8, 6, 3, stride=stride, padding=dilation, dilation=dilation, groups=groups,
                         deform_groups=deform_groups)  # fmt: skip
    x = torch.randn(2, 8, 11, 10)
    assert_close(layer(x), plain_conv(layer, x), 1e-5)
    assert layer.conv_offset.out_channels == 2 * deform_groups * 9


def test_fresh_modulated_layer_halves_the_samples():
    layer = DeformConv2d(4, 4, 3, padding=1, modulated=True, deform_groups=2)
    assert layer.conv_offset.out_channels == 3 * 2 * 9
    x = torch.randn(1, 4, 6, 6)
    # masks start at sigmoid(0) = 0.5: the samples are halved, the bias is not
    assert_close(layer(x), plain_conv(layer, x, scale=0.5), 1e-5)


def test_offsets_learn():
    layer = DeformConv2d(4, 4, 3, padding=1, modulated=True)
    x = torch.randn(2, 4, 8, 8)
    layer(x).square().sum().backward()
    assert layer.conv_offset.weight.grad.abs().sum() > 0
    assert layer.conv_offset.bias.grad.abs().sum() > 0


@pytest.mark.parametrize("impl", ["torchvision", "reference"])
def test_implementations_agree(impl):
    torch.manual_seed(0)
    native = DeformConv2d(4, 6, 3, padding=2, dilation=2, modulated=True)
    nn.init.normal_(native.conv_offset.weight, std=0.3)
    other = DeformConv2d(4, 6, 3, padding=2, dilation=2, modulated=True, impl=impl)
    other.load_state_dict(native.state_dict())
    x = torch.randn(2, 4, 9, 9)
    assert_close(other(x), native(x), 1e-5)


def test_unknown_impl_is_named():
    with pytest.raises(ValueError, match="impl must be one of native, torchvision, reference"):
        DeformConv2d(4, 4, 3, impl="cuda")


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = DeformConv2d(8, 8, 3, padding=2, dilation=2, modulated=True)
        nn.init.normal_(self.conv2.conv_offset.weight, std=0.1)

    def forward(self, x):
        return self.conv2(torch.relu(self.conv1(x)))


def test_torch_compile_fullgraph():
    model = Block()
    x = torch.randn(2, 3, 12, 12)
    expected = model(x)
    compiled = torch.compile(model, fullgraph=True, backend="inductor")
    out = compiled(x)
    assert_close(out, expected, 1e-5)
    out.sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    expected.sum().backward()
    for name, p in model.named_parameters():
        assert_close(grads[name], p.grad, 1e-4, name)


def test_torch_export_dynamic_shapes(tmp_path):
    model = Block().eval()
    x = torch.randn(2, 3, 12, 12)
    batch, height = torch.export.Dim("batch", max=64), torch.export.Dim("height", min=4, max=512)
    program = torch.export.export(model, (x,), dynamic_shapes=({0: batch, 2: height, 3: height},))
    assert any("segdcn.deform_conv2d" in str(node.target) for node in program.graph.nodes)
    path = tmp_path / "block.pt2"
    torch.export.save(program, path)
    loaded = torch.export.load(path).module()
    for shape in [(2, 3, 12, 12), (1, 3, 20, 20)]:
        x = torch.randn(shape)
        assert_close(loaded(x), model(x), 1e-5)
