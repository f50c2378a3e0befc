"""The paper's (Caffe) layer names <-> torchvision module paths."""

import pytest

from segdcn.models import naming
from segdcn.models.naming import conv3x3_paths, last_conv3x3_paths, module_path, paper_name


@pytest.mark.parametrize(
    "depth, path, name",
    [
        (101, "layer1.0.conv2", "res2a"),
        (101, "layer1.2.conv2", "res2c"),
        (101, "layer2.0.conv2", "res3a"),
        (101, "layer2.3.conv2", "res3b3"),
        (101, "layer3.0.conv2", "res4a"),
        (101, "layer3.22.conv2", "res4b22"),
        (101, "layer4.2.conv2", "res5c"),
        (101, "layer4.0.conv1", "res5a_branch2a"),
        (101, "layer4.0.conv3", "res5a_branch2c"),
        (101, "layer4.0.downsample.0", "res5a_branch1"),
        (50, "layer2.3.conv2", "res3d"),
        (50, "layer3.5.conv2", "res4f"),
        (152, "layer2.7.conv2", "res3b7"),
        (152, "layer3.35.conv2", "res4b35"),
        (18, "layer4.1.conv1", "res5b_branch2a"),
        (18, "layer4.1.conv2", "res5b_branch2b"),
        (34, "layer3.5", "res4f"),
    ],
)
def test_paper_names_and_back(depth, path, name):
    assert paper_name(depth, path) == name
    assert paper_name(depth, "backbone." + path) == name
    assert module_path(depth, name) == path


@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
def test_every_block_and_conv_round_trips_and_names_are_unique(depth):
    blocks = naming.STAGE_BLOCKS[depth]
    paths = [f"layer{s}.{i}" for s, n in enumerate(blocks, start=1) for i in range(n)]
    names = [paper_name(depth, p) for p in paths]
    assert len(set(names)) == len(names) == sum(blocks)
    convs = conv3x3_paths(depth)
    conv_names = [paper_name(depth, p) for p in convs]
    assert len(set(conv_names)) == len(conv_names)
    assert [module_path(depth, n) for n in conv_names] == convs


def test_resnet101_stage_names_follow_caffe():
    assert [naming.block_name(101, 3, i) for i in range(4)] == ["res3a", "res3b1", "res3b2", "res3b3"]
    assert naming.block_name(101, 4, 22) == "res4b22"
    assert paper_name(101, "layer1.2") == "res2c"  # a block path names the block
    assert module_path(101, "res2c") == "layer1.2.conv2"  # and a bottleneck block name means its 3x3
    assert [naming.block_name(101, 5, i) for i in range(3)] == ["res5a", "res5b", "res5c"]
    assert [naming.block_name(50, 4, i) for i in range(6)] == ["res4a", "res4b", "res4c", "res4d", "res4e", "res4f"]


@pytest.mark.parametrize(
    "count, names",
    [
        (1, ["res5c"]),
        (2, ["res5b", "res5c"]),
        (3, ["res5a", "res5b", "res5c"]),
        (6, ["res4b20", "res4b21", "res4b22", "res5a", "res5b", "res5c"]),
    ],
)
def test_last_n_3x3_convs_of_resnet101_are_the_papers_rows(count, names):
    assert [paper_name(101, p) for p in last_conv3x3_paths(101, count)] == names


def test_basic_block_nets_count_3x3_convs_backwards():
    assert last_conv3x3_paths(18, 3) == ["layer4.0.conv2", "layer4.1.conv1", "layer4.1.conv2"]
    assert naming.conv3x3_paths_of(18, "res5b") == ["layer4.1.conv1", "layer4.1.conv2"]
    assert len(conv3x3_paths(18)) == 16 and len(conv3x3_paths(34)) == 32
    assert len(conv3x3_paths(50)) == 16 and len(conv3x3_paths(101)) == 33 and len(conv3x3_paths(152)) == 50


@pytest.mark.parametrize(
    "depth, name, message",
    [
        (101, "res5d", "res5a..c"),
        (101, "res4b23", "res4b1..b22"),
        (101, "res4f", "res4a, res4b1..b22"),
        (50, "res4b1", "res4a..f"),
        (18, "res5a_branch2c", "without branch2c"),
        (101, "conv5", "expected e.g."),
    ],
)
def test_bad_names_say_what_exists(depth, name, message):
    with pytest.raises(ValueError, match=message):
        module_path(depth, name)


def test_non_3x3_names_are_refused_as_3x3_layers():
    with pytest.raises(ValueError, match="not a 3x3 conv"):
        naming.conv3x3_paths_of(101, "res5a_branch2a")
    with pytest.raises(ValueError, match="not a ResNet block or conv path"):
        paper_name(101, "head.fc6")
