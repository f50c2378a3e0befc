"""The paper's (Caffe ResNet) names of ResNet layers, and back to torchvision's module paths.

The paper and the official code name blocks the way the original Caffe ResNets did:
stage k of the network is `res{k+1}` (torchvision's `layer{k}`), and its blocks get letters,
except in res3/res4 of ResNet-101/152, whose many blocks are `a, b1, b2, ...`. So
res5c = layer4.2 and res4b22 = layer3.22 in ResNet-101, res4f = layer3.5 in ResNet-50.

Inside a block, the Caffe branch names are kept: `branch2a/2b/2c` are conv1/conv2/conv3 and
`branch1` is the projection shortcut (downsample.0). The paper calls a deformable layer by its
block alone ("res5c") because a bottleneck block has a single 3x3 conv (branch2b); a basic
block has two 3x3 convs, so there a 3x3 layer needs the branch: "res5b_branch2a".
"""

from __future__ import annotations

import re
import string

# blocks per stage (res2..res5) for each depth, as in torchvision and the Caffe models
STAGE_BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
BOTTLENECK_DEPTHS = (50, 101, 152)
BRANCHES = {"conv1": "branch2a", "conv2": "branch2b", "conv3": "branch2c", "downsample.0": "branch1"}

_PATH = re.compile(r"^(?:backbone\.)?layer([1-4])\.(\d+)(?:\.(conv[123]|downsample\.0))?$")
_NAME = re.compile(r"^res([2-5])([a-z])(\d*)(?:_(branch2[abc]|branch1))?$")


def _check_depth(depth: int) -> None:
    if depth not in STAGE_BLOCKS:
        raise ValueError(f"ResNet depth must be one of {', '.join(map(str, STAGE_BLOCKS))}, got {depth!r}")


def _numbered(depth: int, stage: int) -> bool:
    """Caffe's ResNet-101/152 name the blocks of res3 and res4 a, b1, b2, ...; all else gets letters."""
    return depth in (101, 152) and stage in (3, 4)


def block_name(depth: int, stage: int, index: int) -> str:
    """Name of block `index` (0-based) of stage `stage` (2..5, i.e. layer1..layer4): e.g. res4b20."""
    _check_depth(depth)
    blocks = STAGE_BLOCKS[depth][stage - 2]
    if not 0 <= index < blocks:
        raise ValueError(f"res{stage} of resnet{depth} has blocks 0..{blocks - 1}, got {index}")
    if _numbered(depth, stage):
        return f"res{stage}a" if index == 0 else f"res{stage}b{index}"
    return f"res{stage}{string.ascii_lowercase[index]}"


def paper_name(depth: int, path: str) -> str:
    """torchvision module path -> the paper's name: layer4.2.conv2 -> res5c (ResNet-101).

    A block path names the block; a conv path adds the Caffe branch, except for the 3x3 conv of
    a bottleneck (conv2), which the paper calls by its block's name.
    """
    match = _PATH.match(path)
    if match is None:
        raise ValueError(f"not a ResNet block or conv path: {path!r} (expected e.g. 'layer4.2' or 'layer4.2.conv2')")
    layer, index, conv = int(match[1]), int(match[2]), match[3]
    name = block_name(depth, layer + 1, index)
    if conv is None:
        return name
    if conv == "conv3" and depth not in BOTTLENECK_DEPTHS:
        raise ValueError(f"resnet{depth} has basic blocks without conv3: {path!r}")
    if conv == "conv2" and depth in BOTTLENECK_DEPTHS:
        return name
    return f"{name}_{BRANCHES[conv]}"


def module_path(depth: int, name: str) -> str:
    """The paper's name -> torchvision module path: res5c -> layer4.2.conv2 (ResNet-101).

    A bare block name means the block's 3x3 conv for bottleneck blocks and the block itself
    (both 3x3 convs) for basic blocks; see `conv3x3_paths_of`.
    """
    _check_depth(depth)
    match = _NAME.match(name)
    if match is None:
        raise ValueError(f"not a ResNet layer name: {name!r} (expected e.g. 'res5c', 'res4b22' or 'res5a_branch2b')")
    stage, letter, number, branch = int(match[1]), match[2], match[3], match[4]
    blocks = STAGE_BLOCKS[depth][stage - 2]
    if _numbered(depth, stage):
        valid = (letter == "a" and not number) or (letter == "b" and number and 1 <= int(number) < blocks)
        index = 0 if letter == "a" else int(number or 0)
        expected = f"res{stage}a, res{stage}b1..b{blocks - 1}"
    else:
        valid = not number and string.ascii_lowercase.index(letter) < blocks
        index = string.ascii_lowercase.index(letter)
        expected = f"res{stage}a..{string.ascii_lowercase[blocks - 1]}"
    if not valid:
        raise ValueError(f"resnet{depth} has no block {name.split('_')[0]!r} (its res{stage} blocks are {expected})")
    block = f"layer{stage - 1}.{index}"
    if branch is None:
        return f"{block}.conv2" if depth in BOTTLENECK_DEPTHS else block
    conv = {v: k for k, v in BRANCHES.items()}[branch]
    if conv == "conv3" and depth not in BOTTLENECK_DEPTHS:
        raise ValueError(f"resnet{depth} has basic blocks without branch2c: {name!r}")
    return f"{block}.{conv}"


def conv3x3_paths(depth: int) -> list[str]:
    """Module paths of all 3x3 convs of the residual stages, in forward order (the stem's 7x7 excluded)."""
    _check_depth(depth)
    convs = ("conv2",) if depth in BOTTLENECK_DEPTHS else ("conv1", "conv2")
    return [
        f"layer{layer}.{index}.{conv}"
        for layer, blocks in enumerate(STAGE_BLOCKS[depth], start=1)
        for index in range(blocks)
        for conv in convs
    ]


def conv3x3_paths_of(depth: int, name: str) -> list[str]:
    """The 3x3 conv paths a name stands for: one for a bottleneck block or a branch, two for a basic block."""
    path = module_path(depth, name)
    if path.count(".") == 1:  # a basic block: both its 3x3 convs
        return [f"{path}.conv1", f"{path}.conv2"]
    if path not in conv3x3_paths(depth):
        raise ValueError(f"{name!r} is {path}, not a 3x3 conv of resnet{depth}")
    return [path]


def last_conv3x3_paths(depth: int, count: int) -> list[str]:
    """The last `count` 3x3 convs, in forward order: count=3 gives res5a,b,c of ResNet-101."""
    paths = conv3x3_paths(depth)
    if not 0 <= count <= len(paths):
        raise ValueError(f"resnet{depth} has {len(paths)} 3x3 convs, cannot take the last {count}")
    return paths[len(paths) - count :]
