"""DeepLab models: backbone against torchvision, dilation, frozen BN, deformable layers, heads, weights."""

import logging

import pytest
import torch
import torchvision
from torch import nn

from segdcn.models import (
    FrozenBatchNorm2d,
    ResNet,
    build_model,
    deformable_layer_names,
    deformable_layers,
    make_deformable,
    upsample_logits,
)
from segdcn.ops import DeformConv2d
from tests.helpers import assert_close

# models with frozen BN and no pretrained weights warn (BN at identity); here that is intended
pytestmark = pytest.mark.filterwarnings("ignore:model.norm=frozen_bn without:UserWarning")


def cfg(depth=18, output_stride=32, layers=0, norm="bn", head="paper", **dcn):
    return {
        "backbone": {"name": f"resnet{depth}", "output_stride": output_stride, "pretrained": "none"},
        "norm": norm,
        "head": {"name": head, **({} if head == "aspp_v2" else {"channels": 64})},  # aspp_v2 has no channels
        "dcn": {"layers": layers, **dcn},
    }


def randomise_norms(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial BN statistics and affine, so that a wrong norm cannot pass unnoticed."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d | FrozenBatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)


def torchvision_features(tv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return nn.Sequential(*list(tv.children())[:-2])(x)  # all but avgpool and fc


def backbone_state(tv: nn.Module) -> dict:
    return {k: v for k, v in tv.state_dict().items() if not k.startswith("fc.")}


# ---------------------------------------------------------------- backbone


@pytest.mark.parametrize("depth", [18, 50])
def test_backbone_equals_torchvision_resnet_at_output_stride_32(depth):
    tv = getattr(torchvision.models, f"resnet{depth}")()
    randomise_norms(tv)
    tv.eval()
    x = torch.randn(2, 3, 61, 75)
    with torch.no_grad():
        expected = torchvision_features(tv, x)
    for norm in (nn.BatchNorm2d, FrozenBatchNorm2d):
        ours = ResNet(depth, 32, norm)
        ours.load_state_dict(backbone_state(tv))  # strict: same names and shapes
        with torch.no_grad():
            assert_close(ours.eval()(x), expected, 1e-5, f"resnet{depth} {norm.__name__}")


@pytest.mark.parametrize("output_stride, replace", [(16, [False, False, True]), (8, [False, True, True])])
def test_dilated_bottleneck_backbone_equals_torchvisions_dilated_resnet(output_stride, replace):
    tv = torchvision.models.resnet50(replace_stride_with_dilation=replace)
    randomise_norms(tv)
    ours = ResNet(50, output_stride)
    ours.load_state_dict(backbone_state(tv))
    x = torch.randn(1, 3, 49, 63)
    with torch.no_grad():
        assert_close(ours.eval()(x), torchvision_features(tv.eval(), x), 1e-5)


def test_dilation_is_a_trous_for_basic_blocks_too():
    """At output stride 16 (8) the features on every 2nd (4th) position are those at stride 32."""
    os32 = ResNet(18, 32)
    randomise_norms(os32)
    x = torch.randn(1, 3, 97, 83)
    with torch.no_grad():
        expected = os32.eval()(x)
        for output_stride, step in ((16, 2), (8, 4)):
            dense = ResNet(18, output_stride)
            dense.load_state_dict(os32.state_dict())
            out = dense.eval()(x)
            assert out.shape[-2:] == ((97 - 1) // output_stride + 1, (83 - 1) // output_stride + 1)
            assert_close(out[..., ::step, ::step], expected, 1e-5, f"OS{output_stride}")


def test_paper_geometry_of_res5_at_output_stride_16():
    backbone = ResNet(101, 16)
    # torchvision's v1.5 blocks stride in res5a's 3x3, which therefore keeps dilation 1 (a trous)
    convs = {n: m for n, m in backbone.named_modules() if isinstance(m, nn.Conv2d) and n.startswith("layer4")}
    assert (convs["layer4.0.conv2"].stride, convs["layer4.0.conv2"].dilation) == ((1, 1), (1, 1))
    for name in ("layer4.1.conv2", "layer4.2.conv2"):
        assert (convs[name].stride, convs[name].dilation, convs[name].padding) == ((1, 1), (2, 2), (2, 2))
    assert convs["layer4.0.downsample.0"].stride == (1, 1)
    assert backbone.layer3[0].conv2.stride == (2, 2)


def test_frozen_batch_norm_matches_torchvision_and_never_changes():
    n = 7
    ours, theirs = FrozenBatchNorm2d(n), torchvision.ops.FrozenBatchNorm2d(n)
    randomise_norms(ours)
    for key in ("weight", "bias", "running_mean", "running_var"):
        getattr(theirs, key).copy_(getattr(ours, key))
    x = torch.randn(3, n, 5, 4)
    assert_close(ours.train()(x), theirs(x), 1e-6)
    before = {k: v.clone() for k, v in ours.state_dict().items()}
    ours(x * 5 + 3)
    assert all(torch.equal(v, ours.state_dict()[k]) for k, v in before.items())
    assert list(ours.parameters()) == []
    bn = nn.BatchNorm2d(n)
    ours.load_state_dict(bn.state_dict())  # the same keys as BatchNorm2d


# ---------------------------------------------------------------- deformable layers


def plain_and_deformable(layers, output_stride=8, **dcn):
    plain = build_model(cfg(18, output_stride), num_classes=5)
    randomise_norms(plain)
    deform = build_model(cfg(18, output_stride, layers=layers, **dcn), num_classes=5)
    missing, unexpected = deform.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(".conv_offset." in k for k in missing) and len(missing) == 2 * layers
    return plain.eval(), deform.eval()


@pytest.mark.parametrize("offset_dilation", ["paper", "official"])
def test_zero_offsets_give_the_plain_model(offset_dilation):
    plain, deform = plain_and_deformable(16, offset_dilation=offset_dilation)  # every 3x3 conv of ResNet-18
    assert len(deformable_layers(deform)) == 16
    x = torch.randn(2, 3, 45, 37)
    with torch.no_grad():
        assert_close(deform(x), plain(x), 1e-5)


def test_modulated_with_masks_at_one_gives_the_plain_model_and_starts_at_half():
    plain, deform = plain_and_deformable(3, modulated=True)
    layer = deform.backbone.layer4[1].conv2
    x = torch.randn(1, 512, 9, 9)
    with torch.no_grad():
        # a fresh DCNv2 layer: masks sigmoid(0) = 0.5, half the plain conv's output
        plain_conv = plain.backbone.layer4[1].conv2
        assert_close(layer(x), 0.5 * plain_conv(x), 1e-5)
        for m in deformable_layers(deform).values():
            taps = m.conv_offset.out_channels // 3
            m.conv_offset.bias[2 * taps :] = 100.0  # sigmoid(100) == 1 in float32
        x = torch.randn(2, 3, 45, 37)
        assert_close(deform(x), plain(x), 1e-5)


def test_offset_conv_geometry_paper_vs_official():
    paper = build_model(cfg(101, 16, layers=3, norm="frozen_bn"), 3).backbone.layer4[2].conv2
    official = build_model(cfg(101, 16, layers=3, norm="frozen_bn", offset_dilation="official"), 3)
    official = official.backbone.layer4[2].conv2
    assert isinstance(paper, DeformConv2d) and isinstance(official, DeformConv2d)
    assert (paper.dilation, paper.padding) == ((2, 2), (2, 2))
    assert (paper.conv_offset.dilation, paper.conv_offset.padding, paper.conv_offset.out_channels) == (
        (2, 2),
        (2, 2),
        18,
    )
    oc = official.conv_offset
    assert (oc.kernel_size, oc.dilation, oc.padding, oc.out_channels) == ((3, 3), (1, 1), (1, 1), 18)
    assert not oc.weight.any() and not oc.bias.any()


def test_deformable_layers_carry_the_papers_names():
    model = build_model(cfg(101, 16, layers=6, norm="frozen_bn"), 3)
    assert deformable_layer_names(model, 101) == ["res4b20", "res4b21", "res4b22", "res5a", "res5b", "res5c"]
    assert set(deformable_layers(model)) == {f"backbone.layer3.{i}.conv2" for i in (20, 21, 22)} | {
        f"backbone.layer4.{i}.conv2" for i in range(3)
    }
    named = build_model(cfg(101, 16, at=["res5b", "res4b22"], norm="frozen_bn", deform_groups=4), 3)
    assert deformable_layer_names(named, 101) == ["res4b22", "res5b"]
    assert named.backbone.layer4[1].conv2.conv_offset.out_channels == 2 * 4 * 9


def test_gradients_reach_the_offset_convs():
    model = build_model(cfg(18, 16, layers=3, modulated=True), 4).train()
    with torch.no_grad():  # offsets away from the integer grid, so all bilinear terms are live
        for m in deformable_layers(model).values():
            m.conv_offset.bias.uniform_(-0.5, 0.5)
    x = torch.randn(2, 3, 40, 40)
    loss = nn.functional.cross_entropy(model(x), torch.randint(0, 4, (2, 40, 40)))
    loss.backward()
    for name, m in deformable_layers(model).items():
        for p in m.conv_offset.parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("impl", ["torchvision", "reference"])
def test_impls_compute_the_same_model(impl):
    native = build_model(cfg(18, 8, layers=3), 4).eval()
    other = build_model(cfg(18, 8, layers=3, impl=impl), 4).eval()
    with torch.no_grad():
        for m in deformable_layers(native).values():
            m.conv_offset.weight.normal_(std=0.01)
            m.conv_offset.bias.normal_(std=1.0)
    other.load_state_dict(native.state_dict())
    assert all(m.impl == impl for m in deformable_layers(other).values())
    x = torch.randn(1, 3, 33, 29)
    with torch.no_grad():
        assert_close(other(x), native(x), 1e-4)


def test_make_deformable_refuses_what_is_not_a_conv():
    backbone = ResNet(18)
    with pytest.raises(ValueError, match="layer4.1.bn1 must be an nn.Conv2d"):
        make_deformable(backbone, ["layer4.1.bn1"])
    with pytest.raises(ValueError, match="deform_groups must be a positive divisor of the 512"):
        make_deformable(backbone, ["layer4.1.conv2"], deform_groups=3)


# ---------------------------------------------------------------- shapes and heads


@pytest.mark.parametrize("output_stride, size", [(8, (129, 257)), (16, (513, 769)), (32, (513, 769))])
def test_output_shapes_for_odd_sizes(output_stride, size):
    model = build_model(cfg(18, output_stride, layers=1), num_classes=7).eval()
    with torch.no_grad():
        features = model.backbone(torch.randn(1, 3, *size))
        assert features.shape == (1, 512, (size[0] - 1) // output_stride + 1, (size[1] - 1) // output_stride + 1)
        assert model(torch.randn(1, 3, 65, 97)).shape == (1, 7, 65, 97)
        assert model(torch.randn(1, 3, 50, 37)).shape == (1, 7, 50, 37)


def test_logits_are_placed_on_the_backbone_grid():
    logits = torch.randn(1, 2, 5, 4)
    up = upsample_logits(logits, (70, 53), stride=16)  # rows 0, 16, .., 64 and cols 0, .., 48 are the logits
    assert up.shape == (1, 2, 70, 53)
    assert torch.allclose(up[..., ::16, ::16][..., :5, :4], logits, atol=1e-6)
    assert torch.equal(up[..., 65:, :], up[..., 64:65, :].expand(-1, -1, 5, -1))  # past the grid: the edge
    mid = up[..., 8, 0]
    assert torch.allclose(mid, (logits[..., 0, 0] + logits[..., 1, 0]) / 2, atol=1e-6)


def test_paper_head_initialisation():
    head = build_model(cfg(50, 16, norm="frozen_bn") | {"head": {"name": "paper", "channels": 1024}}, 21).head
    assert head.fc6.weight.shape == (1024, 2048, 1, 1) and head.score.weight.shape == (21, 1024, 1, 1)
    assert abs(head.fc6.weight.std().item() - 0.01) < 5e-4 and abs(head.fc6.weight.mean().item()) < 5e-4
    assert not head.fc6.bias.any() and not head.score.bias.any()


def test_aspp_v2_sums_four_branches():
    model = build_model(cfg(18, 8, head="aspp_v2"), 3).eval()
    head = model.head
    assert [b.dilation for b in head.branches] == [(r, r) for r in (6, 12, 18, 24)]
    x = torch.randn(1, 512, 11, 11)
    with torch.no_grad():
        expected = sum(b(x) for b in head.branches)
        assert_close(head(x), expected, 1e-6)
        assert model(torch.randn(1, 3, 81, 81)).shape == (1, 3, 81, 81)


@pytest.mark.parametrize("output_stride, rates", [(8, (12, 24, 36)), (16, (6, 12, 18)), (32, (3, 6, 9))])
def test_aspp_v3_rates_follow_the_output_stride(output_stride, rates):
    model = build_model(cfg(18, output_stride, head="aspp_v3"), 3)
    head = model.head
    assert head.rates == rates
    assert [b[0].dilation for b in head.branches[1:]] == [(r, r) for r in rates]
    assert isinstance(head.branches[0][1], nn.BatchNorm2d) and head.project[0].in_channels == 5 * 64
    out = model.train()(torch.randn(2, 3, 65, 65))  # batch-norm head trains
    assert out.shape == (2, 3, 65, 65)


def test_aspp_v3_with_frozen_bn_backbone_trains_its_own_bn():
    model = build_model(cfg(18, 16, head="aspp_v3", norm="frozen_bn"), 3)
    assert isinstance(model.backbone.bn1, FrozenBatchNorm2d)
    assert isinstance(model.head.project[1], nn.BatchNorm2d)


def test_frozen_bn_without_weights_warns():
    with pytest.warns(UserWarning, match="train from scratch with model.norm=bn"):
        build_model(cfg(18, norm="frozen_bn"), 3)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU error only")
def test_syncbn_on_cpu_says_what_to_use():
    with pytest.raises(ValueError, match="use model.norm=bn or model.norm=frozen_bn"):
        build_model(cfg(18, norm="syncbn"), 3)


# ---------------------------------------------------------------- pretrained weights


@pytest.fixture(scope="module")
def resnet101_file(tmp_path_factory):
    tv = torchvision.models.resnet101()
    path = tmp_path_factory.mktemp("weights") / "resnet101.pth"
    torch.save(tv.state_dict(), path)
    return path, tv.state_dict()


def test_torchvision_resnet101_state_dict_loads_into_a_dcn_model(resnet101_file, caplog):
    path, state = resnet101_file
    config = cfg(101, 16, layers=3, norm="frozen_bn")
    config["backbone"]["pretrained"] = str(path)
    with caplog.at_level(logging.INFO, logger="segdcn.models.pretrained"):
        model = build_model(config, 21)
    report = model.backbone.pretrained_report
    assert report.new_modules == [f"layer4.{i}.conv2.conv_offset" for i in range(3)]
    assert sorted(report.new_keys) == sorted(
        f"layer4.{i}.conv2.conv_offset.{p}" for i in range(3) for p in ("weight", "bias")
    )
    assert report.ignored_keys == ["fc.bias", "fc.weight"]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "\n" not in lines[0] and "layer4.2.conv2.conv_offset" in lines[0]
    ours = model.backbone.state_dict()
    for key in ("conv1.weight", "layer4.2.conv2.weight", "layer3.22.bn2.running_var", "layer4.0.downsample.1.bias"):
        assert torch.equal(ours[key], state[key]), key
    assert not ours["layer4.0.conv2.conv_offset.weight"].any()


def test_any_other_mismatch_is_an_error(resnet101_file, tmp_path):
    _, state = resnet101_file
    broken = dict(state)
    del broken["layer2.1.conv1.weight"]
    broken["layer5.0.conv1.weight"] = torch.zeros(1)
    path = tmp_path / "broken.pth"
    torch.save(broken, path)
    config = cfg(101, 16, layers=3, norm="frozen_bn")
    config["backbone"]["pretrained"] = str(path)
    with pytest.raises(ValueError, match=r"missing layer2\.1\.conv1\.weight; unexpected layer5\.0\.conv1\.weight"):
        build_model(config, 21)
    config["backbone"]["name"] = "resnet50"
    config["backbone"]["pretrained"] = str(resnet101_file[0])
    with pytest.raises(ValueError, match="do not fit resnet50: unexpected layer3.10"):
        build_model(config, 21)
    config["backbone"]["pretrained"] = str(tmp_path / "nowhere.pth")
    with pytest.raises(FileNotFoundError, match="model.backbone.pretrained: no such file"):
        build_model(config, 21)


def test_imagenet_resolves_to_torchvisions_weights_api():
    from segdcn.models.pretrained import imagenet_weights

    weights = imagenet_weights(101, "imagenet")
    assert weights is torchvision.models.ResNet101_Weights.IMAGENET1K_V1
    assert imagenet_weights(50, "imagenet1k_v2") is torchvision.models.ResNet50_Weights.IMAGENET1K_V2
    with pytest.raises(ValueError, match="no IMAGENET1K_V2 weights for resnet18"):
        imagenet_weights(18, "imagenet1k_v2")
