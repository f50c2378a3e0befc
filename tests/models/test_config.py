"""Building models from config keys: conf/model/*.yaml, validation errors, parameter groups."""

import pytest
import torch
from omegaconf import OmegaConf

from segdcn.config import ConfigError, ModelConfig, compose
from segdcn.models import FrozenBatchNorm2d, build_model, deformable_layer_names, param_groups

pytestmark = pytest.mark.filterwarnings("ignore:model.norm=frozen_bn without:UserWarning")


def compose_model(name: str, *overrides: str):
    return compose("train", [f"model={name}", *overrides]).model


@pytest.mark.parametrize("name", ["deeplab_r101", "deeplab_r50", "deeplab_r18"])
def test_config_files_parse(name):
    spec = ModelConfig.from_config(compose_model(name))
    assert spec.dcn.layers == 0 and spec.head.name == "paper"
    if name != "deeplab_r18":  # the paper's setting
        assert (spec.backbone.output_stride, spec.backbone.pretrained, spec.norm) == (16, "imagenet", "frozen_bn")
        assert spec.head.channels == 1024 and spec.dcn.offset_dilation == "paper"


def test_the_paper_model_from_config_keys():
    model_cfg = compose_model("deeplab_r101", "model.dcn.layers=3", "model.backbone.pretrained=none")
    model = build_model(model_cfg, num_classes=21)
    assert deformable_layer_names(model, 101) == ["res5a", "res5b", "res5c"]
    assert isinstance(model.backbone.layer4[2].bn2, FrozenBatchNorm2d)
    named = compose_model(
        "deeplab_r18",
        "model.dcn.at=[res5b]",
        "model.dcn.modulated=true",
        "model.dcn.impl=torchvision",
        "model.dcn.offset_lr_mult=0.1",
    )
    model = build_model(named, num_classes=3)
    assert deformable_layer_names(model, 18) == ["res5b_branch2a", "res5b_branch2b"]
    layer = model.backbone.layer4[1].conv1
    assert layer.modulated and layer.impl == "torchvision" and layer.offset_lr_mult == 0.1
    assert model(torch.randn(1, 3, 33, 33)).shape == (1, 3, 33, 33)


def test_plain_dicts_and_defaults_work():
    spec = ModelConfig.from_config({})
    assert (spec.backbone.name, spec.backbone.output_stride, spec.norm, spec.head.name) == (
        "resnet101",
        16,
        "frozen_bn",
        "paper",
    )
    assert ModelConfig.from_config(OmegaConf.create({"dcn": {"at": "res5a,res5c"}})).dcn.at == ["res5a", "res5c"]
    assert ModelConfig.from_config(ModelConfig()) == ModelConfig.from_config(OmegaConf.structured(ModelConfig))


@pytest.mark.parametrize(
    "config, message",
    [
        ({"dcn": {"layers": 34}}, "model.dcn.layers=34: expected 0..33 for resnet101 "),
        ({"dcn": {"layers": -1}}, "model.dcn.layers=-1: expected 0 or more"),
        ({"backbone": {"name": "resnet18"}, "dcn": {"layers": 17}}, "0..16 for resnet18"),
        ({"dcn": {"layers": "3"}}, "model.dcn.layers='3': expected an integer"),
        ({"dcn": {"layers": 1, "at": ["res5c"]}}, "either model.dcn.layers .* or model.dcn.at"),
        ({"dcn": {"at": ["res5d"]}}, "model.dcn.at: resnet101 has no block 'res5d'"),
        ({"dcn": {"impl": "cuda"}}, "model.dcn.impl='cuda': expected one of native, torchvision, reference"),
        ({"dcn": {"offset_dilation": "2"}}, "model.dcn.offset_dilation='2': expected one of paper, official"),
        ({"dcn": {"modulated": "yes"}}, "model.dcn.modulated='yes': expected true or false"),
        ({"dcn": {"deform_groups": 0}}, "model.dcn.deform_groups=0: expected 1 or more"),
        ({"dcn": {"offset_lr_mult": -1}}, "model.dcn.offset_lr_mult=-1.0: expected 0 or more"),
        ({"dcn": {"layer": 3}}, "unknown key model.dcn.layer; model.dcn has the keys layers, at"),
        ({"backbone": {"name": "resnet102"}}, "model.backbone.name='resnet102': expected one of resnet18, .*resnet152"),
        ({"backbone": {"output_stride": 4}}, "model.backbone.output_stride=4: expected one of 8, 16, 32"),
        ({"norm": "gn"}, "model.norm='gn': expected one of frozen_bn, bn, syncbn"),
        ({"head": {"name": "fcn"}}, "model.head.name='fcn': expected one of paper, aspp_v2, aspp_v3"),
        ({"head": {"name": "aspp_v2", "rates": [6, 0]}}, r"model.head.rates=\[6, 0\]: expected null or a list of pos"),
        ({"head": {"rates": [6, 12]}}, r"model.head.rates=\[6, 12\]: expected null with model.head.name=paper"),
        ({"heads": {}}, "unknown key model.heads"),
    ],
)
def test_bad_values_name_the_key_and_the_allowed_values(config, message):
    with pytest.raises(ConfigError, match=message):
        ModelConfig.from_config(config)


def test_bad_num_classes():
    with pytest.raises(ValueError, match="num_classes must be a positive integer"):
        build_model({"backbone": {"name": "resnet18"}, "norm": "bn"}, 0)


def test_frozen_stages_stop_gradients():
    model = build_model({"backbone": {"name": "resnet18", "frozen_stages": 2}, "norm": "bn"}, 3)
    assert not model.backbone.conv1.weight.requires_grad and not model.backbone.layer1[1].bn2.weight.requires_grad
    assert model.backbone.layer2[0].conv1.weight.requires_grad


# ---------------------------------------------------------------- parameter groups


def test_param_groups_cover_every_trainable_parameter_once():
    model = build_model(
        {
            "backbone": {"name": "resnet18", "output_stride": 16},
            "norm": "bn",
            "head": {"name": "aspp_v3", "channels": 32, "lr_mult": 10.0},
            "dcn": {"layers": 2, "offset_lr_mult": 0.1, "modulated": True},
        },
        4,
    )
    groups = param_groups(model, lr=0.01, weight_decay=5e-4, no_decay_norm_bias=True)
    by_name = {g["name"]: g for g in groups}
    assert set(by_name) == {"backbone", "backbone_no_decay", "head", "head_no_decay", "offset", "offset_no_decay"}
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len([p for p in model.parameters() if p.requires_grad])
    assert by_name["head"]["lr"] == pytest.approx(0.1) and by_name["head"]["lr_mult"] == 10.0
    assert by_name["offset"]["lr"] == pytest.approx(0.001) and by_name["offset"]["lr_mult"] == 0.1
    offset_params = {id(m.conv_offset.weight) for m in (model.backbone.layer4[1].conv1, model.backbone.layer4[1].conv2)}
    assert {id(p) for p in by_name["offset"]["params"]} == offset_params
    assert all(g["weight_decay"] == 0.0 for n, g in by_name.items() if n.endswith("_no_decay"))
    assert by_name["backbone"]["weight_decay"] == 5e-4
    decayed = {id(p) for n, g in by_name.items() if not n.endswith("_no_decay") for p in g["params"]}
    assert id(model.backbone.bn1.weight) not in decayed and id(model.head.classifier.bias) not in decayed
    assert all(p.dim() > 1 for g in groups if not g["name"].endswith("_no_decay") for p in g["params"])

    optimizer = torch.optim.SGD(groups, lr=0.01, momentum=0.9)  # the groups are what torch.optim takes
    model(torch.randn(2, 3, 33, 33)).mean().backward()
    optimizer.step()


def test_param_groups_without_no_decay_and_with_frozen_bn():
    model = build_model({"backbone": {"name": "resnet18"}, "norm": "frozen_bn", "dcn": {"layers": 1}}, 3)
    groups = param_groups(model, lr=1.0, weight_decay=1e-4, head_lr_mult=3.0)
    assert [(g["name"], g["lr"], g["weight_decay"]) for g in groups] == [
        ("backbone", 1.0, 1e-4),
        ("offset", 1.0, 1e-4),
        ("head", 3.0, 1e-4),
    ]
    # frozen BN has no parameters: the backbone group holds the convs only
    assert len(groups[0]["params"]) == sum(1 for n, _ in model.backbone.named_parameters() if "conv_offset" not in n)
    assert all(p.dim() == 4 for p in groups[0]["params"])
